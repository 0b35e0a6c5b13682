"""Deployment across machines: ``caelum up cluster.yaml`` / ``caelum down cluster.yaml``.

A cluster file (:mod:`.schema`) says which host runs the scheduler and which run workers; a
preflight over SSH (:mod:`.preflight`) checks every host before anything starts; the launcher
(:mod:`.launcher`, on Dask's SSH deployment classes) starts ``caelum scheduler``/``caelum
worker`` detached over SSH and waits until every worker joined. See docs/deploy.md.

Python API::

    from caelum_dask.deploy import load, up, down
    spec = load("cluster.yaml")
    result = up(spec, progress=lambda event: print(event.text()))  # UpResult: scheduler, started, …
    down(spec)
"""

from __future__ import annotations

from caelum_dask.deploy.launcher import LaunchFailed, UpResult, down, preflight, up
from caelum_dask.deploy.preflight import PreflightFailed
from caelum_dask.deploy.schema import ClusterSpec, HostProcess, load, validate

__all__ = [
    "ClusterSpec",
    "HostProcess",
    "LaunchFailed",
    "PreflightFailed",
    "UpResult",
    "down",
    "load",
    "preflight",
    "up",
    "validate",
]

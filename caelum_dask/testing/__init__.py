"""Test sharding: a pytest suite split over the cluster's machines, balanced by history.

``run_tests(path, TestOptions(...))`` is the Python API behind ``caelum test``; see
docs/testing.md. The modules, one job each: :mod:`.snapshot` (content-addressed project
archive, unpacked once per machine), :mod:`.collect` (``pytest --collect-only``),
:mod:`.durations` (recorded durations), :mod:`.partition` (units by ``--dist``),
:mod:`.dispatch` (the queue: chunks, stealing, retries), :mod:`.engine` (the client side of a
run), :mod:`.session` (the worker side: one long-lived pytest per slot) and
:mod:`.session_plugin` (inside that pytest), :mod:`.merge` (JUnit), :mod:`.report` (terminal
summary), :mod:`.runner` (the pipeline), :mod:`.steps` (the workflow step) and
:mod:`.pytest_caelum` (``pytest --caelum``).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``TestOptions`` and ``run_tests`` on first use: the pytest plugin imports this package
    in every pytest process, where importing Dask would cost half a second for nothing."""
    if name in ("TestOptions", "run_tests"):
        from caelum_dask.testing import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'caelum_dask.testing' has no attribute {name!r}")


__all__ = ["TestOptions", "run_tests"]

"""Shared fixtures: real Dask clusters (in-process LocalCluster and CLI subprocesses).

The fixtures of single capabilities live in ``*_fixtures.py`` modules registered below as
pytest plugins, so pytest finds them for every test module by name: a test module never
imports a fixture (an imported fixture shadows itself, needs ``# noqa: F811`` on every test
that takes it, and a module imported twice under two names holds two copies). Helpers that
are not fixtures (``wait_for``, ``run_caelum``, ``ProcessCluster``, ``REPO``) live in
:mod:`harness`; test modules import them from there, never from this file.

Everything binds to 127.0.0.1 on free ports (port 0) and every process a fixture starts is
killed with its whole process group at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask.config
import pytest
from distributed import Client
from harness import ProcessCluster

from caelum_dask.cluster import connect

#: fixture modules (tests/ is on sys.path: pytest inserts this rootdir-less conftest's folder)
pytest_plugins = ["cluster_fixtures", "deploy_fixtures", "llm_fixtures", "testshard_fixtures"]


@pytest.fixture(autouse=True)
def _caelum_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own ~/.caelum so run stores and caches never leak between tests."""
    home = tmp_path_factory.mktemp("caelum-home")
    monkeypatch.setenv("DASK_CAELUM__HOME", str(home))
    monkeypatch.delenv("CAELUM_SCHEDULER", raising=False)
    with dask.config.set({"caelum.home": str(home), "caelum.scheduler-address": None}):
        yield home


@pytest.fixture
def client() -> Iterator[Client]:
    """An embedded caelum cluster (2 worker processes, 1 thread each) through connect()."""
    with dask.config.set({"caelum.embedded.n-workers": 2}):
        c = connect()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def process_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """Factory for real scheduler/worker subprocesses; everything is killed at teardown."""
    cluster = ProcessCluster(logdir=tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()

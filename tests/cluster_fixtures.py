"""Cluster fixtures shared by several capabilities' tests (registered in conftest's pytest_plugins).

``wf_client``: the embedded cluster with 2 worker processes, as ``caelum run`` gets it;
``thread_client``: a one-worker in-process cluster, cheap, for engine code paths that do not
depend on processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import dask.config
import pytest
from distributed import Client, LocalCluster

from caelum_dask.cluster import connect


@pytest.fixture(scope="module")
def wf_client() -> Iterator[Client]:
    with dask.config.set({"caelum.embedded.n-workers": 2}):
        client = connect()
    try:
        client.wait_for_workers(2)
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def thread_client() -> Iterator[Client]:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client

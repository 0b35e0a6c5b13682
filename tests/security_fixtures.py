"""Helpers for the security tests: certificate folders and `caelum scheduler/worker --tls` processes."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import ProcessCluster

from caelum_dask import certs


def make_cluster_certs(folder: Path, names: list[str], hosts: tuple[str, ...] = ("127.0.0.1",)) -> Path:
    """A CA plus one certificate per name, as `caelum certs` makes them."""
    certs.init_ca(folder)
    for name in names:
        certs.issue(name, folder, hosts=hosts)
    return folder


def caelum_argv(*args: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "caelum_dask", *args]


def start_tls_scheduler(cluster: ProcessCluster, tls: Path, name: str, host: str = "127.0.0.1",
                        prefix: tuple[str, ...] = (), timeout: float = 60) -> str:
    """`caelum scheduler --tls` as a subprocess; returns its tls:// address."""
    argv = caelum_argv("scheduler", "--tls", str(tls), "--tls-name", name, "--host", host, "--port", "0",
                       "--dashboard-address", "127.0.0.1:0", prefix=prefix)
    proc = cluster._spawn("scheduler", argv)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"Scheduler at:\s+(\S+)", cluster.log("scheduler"))
        if match:
            cluster.address = match.group(1)
            return cluster.address
        if proc.poll() is not None:
            raise RuntimeError(f"scheduler exited:\n{cluster.log('scheduler')}")
        time.sleep(0.1)
    raise RuntimeError(f"scheduler did not start:\n{cluster.log('scheduler')}")


def start_tls_worker(cluster: ProcessCluster, name: str, tls: Path, cert_name: str, host: str = "127.0.0.1",
                     prefix: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """`caelum worker ADDR --tls DIR --tls-name NAME` (no nanny, one thread) as a subprocess."""
    argv = caelum_argv("worker", cluster.address, "--tls", str(tls), "--tls-name", cert_name, "--name", name,
                       "--nthreads", "1", "--", "--no-nanny", "--host", host,
                       "--dashboard-address", f"{host}:0", *extra, prefix=prefix)
    proc = cluster._spawn(f"worker-{name}", argv)
    cluster.workers[name] = proc
    return proc


@contextlib.contextmanager
def running_tls_cluster(root: Path, names: list[str], revoked: Sequence[str] = ()) -> Iterator[tuple[ProcessCluster, Path]]:
    """`caelum scheduler --tls` as "sched" with worker "w1" joined (certificates for ``names``,
    those in ``revoked`` revoked before anything starts); the client certificate is "laptop"."""
    import caelum_dask

    tls = make_cluster_certs(root / "tls", names)
    for name in revoked:
        certs.revoke(name, tls)
    cluster = ProcessCluster(logdir=root)
    try:
        start_tls_scheduler(cluster, tls, "sched")
        start_tls_worker(cluster, "w1", tls, "w1")
        with caelum_dask.connect(cluster.address, tls=tls, tls_name="laptop") as client:
            client.wait_for_workers(1, timeout=60)
        yield cluster, tls
    finally:
        cluster.stop()

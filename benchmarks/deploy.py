"""How long bringing a cluster up takes: `caelum up` against Dask's own SSHCluster.

    PYTHONPATH=$PWD python benchmarks/deploy.py [--rounds 3]

Starts a real sshd on 127.0.0.1 (tests/deploy_fixtures.py; needs /usr/sbin/sshd), then per
round, for one scheduler + 2 workers (1 thread each, caelum preloads) on this machine:

* baseline: ``SSHCluster`` start until 2 workers joined, then close;
* ``caelum up`` cold (preflight + detached start + join wait), ``caelum up`` again (idempotent:
  preflight + nothing to start), ``caelum down``.

Prints median seconds and the ratio to the SSHCluster start. The preflight (one Python probe
per host, importing dask) is the main extra cost; it is also what the warm `up` costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from deploy_fixtures import cluster_file, running_sshd  # noqa: E402
from distributed import Client, SSHCluster  # noqa: E402

from caelum_dask.deploy import down, load, up  # noqa: E402


def sshcluster_start(server) -> float:
    start = time.perf_counter()
    cluster = SSHCluster(
        ["127.0.0.1"] * 3,
        connect_options=server.ssh_options(),
        remote_python=sys.executable,
        scheduler_options={"host": "127.0.0.1", "port": 0, "dashboard_address": "127.0.0.1:0",
                           "preload": ["caelum_dask.scheduler"]},
        worker_options={"host": "127.0.0.1", "nthreads": 1, "preload": ["caelum_dask.worker"]},
    )
    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
    elapsed = time.perf_counter() - start
    cluster.close()
    return elapsed


def caelum_round(server, folder: Path) -> tuple[float, float, float]:
    run_dir = folder / "run"
    run_dir.mkdir(exist_ok=True)
    path = cluster_file(folder / "cluster.yaml", server, run_dir, workers=[
        {"host": "127.0.0.1", "name": "a", "nthreads": 1}, {"host": "127.0.0.1", "name": "b", "nthreads": 1}])
    spec = load(path)
    t0 = time.perf_counter()
    up(spec)
    t1 = time.perf_counter()
    again = up(spec)
    t2 = time.perf_counter()
    assert not again.started
    down(spec)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_sshd(Path(tmp)) as server:
        base, cold, warm, stop = [], [], [], []
        for i in range(args.rounds):
            base.append(sshcluster_start(server))
            folder = Path(tmp) / f"round{i}"
            folder.mkdir()
            c, w, s = caelum_round(server, folder)
            cold.append(c), warm.append(w), stop.append(s)
        b = statistics.median(base)
        print(f"rounds: {args.rounds}; scheduler + 2 workers on 127.0.0.1 over sshd")
        print(f"SSHCluster start (baseline)   {b:6.2f} s   1.00x")
        for label, values in (("caelum up (cold)", cold), ("caelum up (idempotent)", warm),
                              ("caelum down", stop)):
            m = statistics.median(values)
            print(f"{label:29} {m:6.2f} s   {m / b:.2f}x")


if __name__ == "__main__":
    main()

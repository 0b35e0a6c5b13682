"""Adaptive host groups: a burst of queued work on a cluster at its minimum.

    PYTHONPATH=$PWD python benchmarks/adaptive.py [--tasks 120] [--seconds 0.5] [--maximum 3]

Starts a real sshd on 127.0.0.1 (tests/deploy_fixtures.py; needs /usr/sbin/sshd), then:

* adaptive: ``caelum up`` of one adaptive group (``minimum: 1``, ``maximum: N``, 1 thread per
  worker, ``idle_after: 2s``, ``interval: 500ms``, Dask's default target duration); a burst of
  ``--tasks`` sleeps of ``--seconds`` each is submitted; measured: time to the first extra
  worker (joined the scheduler), total time of the burst, then the workers retired after it
  (``retired`` events) and the time until the group is back at its minimum;
* fixed: ``caelum up`` of N fixed workers (1 thread each), the same burst, total time.

Prints the figures and the ratio adaptive/fixed (goal ≤ 1.2). The worker start over SSH (a
Python that imports Dask and the caelum preloads) is what the adaptive run pays on top.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from deploy_fixtures import cluster_file, running_sshd  # noqa: E402
from distributed import Client  # noqa: E402

from caelum_dask.deploy import down, load, up  # noqa: E402
from caelum_dask.events import SCALING  # noqa: E402


def _names(client: Client) -> set[str]:
    return {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}


def burst(client: Client, tasks: int, seconds: float, baseline: set[str]) -> dict[str, Any]:
    """Submit the burst; time to the first worker beyond ``baseline`` and to the last result."""
    start = time.perf_counter()
    futures = client.map(time.sleep, [seconds] * tasks, pure=False)
    first_extra = None
    while not all(f.done() for f in futures):
        if first_extra is None and _names(client) - baseline:
            first_extra = time.perf_counter() - start
        time.sleep(0.05)
    client.gather(futures)
    return {"total_s": time.perf_counter() - start, "first_extra_worker_s": first_extra,
            "peak_workers": len(_names(client))}


def adaptive_run(server: Any, folder: Path, tasks: int, seconds: float, maximum: int) -> dict[str, Any]:
    run_dir = folder / "run-adaptive"
    run_dir.mkdir()
    path = cluster_file(folder / "adaptive.yaml", server, run_dir, workers=[
        {"host": "127.0.0.1", "name": "burst", "nthreads": 1,
         "adaptive": {"minimum": 1, "maximum": maximum, "idle_after": "2s", "interval": "500ms"}}])
    spec = load(path)
    report = up(spec)
    try:
        with Client(report.scheduler) as client:
            figures = burst(client, tasks, seconds, {"burst-0"})
            done = time.perf_counter()
            while _names(client) != {"burst-0"}:
                time.sleep(0.1)
            figures["back_to_minimum_s"] = time.perf_counter() - done
            deadline = time.monotonic() + 60  # "retired" follows the SSH stop of each process
            while True:
                scaling = [m for _, m in client.get_events(SCALING)]
                kinds = [m["event"] for m in scaling]
                if kinds.count("retired") + kinds.count("stop-failed") >= kinds.count("started") or \
                        time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            figures["started"] = sorted(m["worker"] for m in scaling if m["event"] == "started")
            figures["retired"] = sorted(m["worker"] for m in scaling if m["event"] == "retired")
            figures["start_seconds"] = [m["seconds"] for m in scaling if m["event"] == "started"]
    finally:
        down(spec)
    return figures


def fixed_run(server: Any, folder: Path, tasks: int, seconds: float, maximum: int) -> dict[str, Any]:
    run_dir = folder / "run-fixed"
    run_dir.mkdir()
    path = cluster_file(folder / "fixed.yaml", server, run_dir, workers=[
        {"host": "127.0.0.1", "name": f"w{i}", "nthreads": 1} for i in range(maximum)])
    spec = load(path)
    report = up(spec)
    try:
        with Client(report.scheduler) as client:
            return burst(client, tasks, seconds, set(report.workers))
    finally:
        down(spec)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--maximum", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_sshd(Path(tmp)) as server:
        adaptive = adaptive_run(server, Path(tmp), args.tasks, args.seconds, args.maximum)
        fixed = fixed_run(server, Path(tmp), args.tasks, args.seconds, args.maximum)
    print(f"burst: {args.tasks} tasks x {args.seconds:g} s, maximum {args.maximum} workers of 1 thread")
    print(f"adaptive (minimum 1): first extra worker after {adaptive['first_extra_worker_s']:.2f} s, "
          f"total {adaptive['total_s']:.2f} s, peak {adaptive['peak_workers']} workers, "
          f"worker start over SSH {', '.join(f'{s:.2f}' for s in adaptive['start_seconds'])} s")
    print(f"  after: retired {adaptive['retired']} (started {adaptive['started']}), back at the minimum "
          f"{adaptive['back_to_minimum_s']:.2f} s after the burst (idle_after 2 s)")
    print(f"fixed ({args.maximum} workers): total {fixed['total_s']:.2f} s")
    print(f"ratio adaptive / fixed: {adaptive['total_s'] / fixed['total_s']:.2f} (goal <= 1.2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Learned durations: a skewed workload right after a scheduler restart, with and without the
persisted estimates (wall-time ratio).

The workload: ``--slow`` tasks of one prefix (``bench_slow``, ``--slow-seconds`` each) and
``--fast`` tasks of another (``bench_fast``, ``--fast-seconds`` each), interleaved, all asked
to prefer the first worker (``workers=[w0], allow_other_workers=True``, as a job that prefers
one machine would): every task starts queued on one worker and only Dask's work stealing
spreads them. Stealing decides what to move, and how much, from the per-prefix durations —
blind (``unknown-task-duration``, 0.5 s for both prefixes) on a fresh scheduler, unless
:mod:`caelum_dask.learned` loaded them from the caelum home.

Each repetition: (1) a learning cluster runs the workload once and its scheduler saves
``task-durations.json`` when it closes; (2) a fresh cluster (a restarted scheduler) with that
file present runs it, timed; (3) a fresh cluster with the file removed runs it, timed. Tasks
sleep (no CPU), so the box's other load barely matters.

    .venv/bin/python benchmarks/learned_durations.py --repetitions 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask.config
from distributed import Client, LocalCluster, wait

from caelum_dask.learned import LearnedDurations, load


def bench_slow(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def bench_fast(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


def workload(client: Client, args: argparse.Namespace, run: str) -> float:
    """Submit the interleaved workload preferring the first worker; seconds until all done."""
    first = sorted(client.scheduler_info()["workers"])[0]
    per_slow = max(1, args.fast // max(1, args.slow))
    futures = []
    started = time.perf_counter()
    fast = 0
    for i in range(args.slow):
        futures.append(client.submit(bench_slow, i, args.slow_seconds, key=f"bench_slow-{run}.{i}",
                                     workers=[first], allow_other_workers=True, pure=False))
        for _ in range(per_slow):
            if fast < args.fast:
                futures.append(client.submit(bench_fast, fast, args.fast_seconds, key=f"bench_fast-{run}.{fast}",
                                             workers=[first], allow_other_workers=True, pure=False))
                fast += 1
    for j in range(fast, args.fast):
        futures.append(client.submit(bench_fast, j, args.fast_seconds, key=f"bench_fast-{run}.{j}",
                                     workers=[first], allow_other_workers=True, pure=False))
    wait(futures)
    took = time.perf_counter() - started
    client.gather(futures)
    return took


def one_cluster(path: Path, args: argparse.Namespace, run: str) -> tuple[float, dict[str, float]]:
    """A fresh scheduler with the learning plugin reading/writing ``path``; the workload, timed."""
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.register_plugin(LearnedDurations(path))  # loads the file into Dask's defaults now
        known = {k: v for k, v in client.sync(client.scheduler.caelum_learned_durations).items()
                 if k.startswith("bench_")}
        took = workload(client, args, run)
    return took, known


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow", type=int, default=40)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--fast", type=int, default=200)
    parser.add_argument("--fast-seconds", type=float, default=0.01)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="caelum-learned-bench-"))
    path = home / "learned" / "task-durations.json"
    rows: list[dict[str, Any]] = []
    try:
        with dask.config.set({"caelum.home": str(home)}):
            for rep in range(args.repetitions):
                path.unlink(missing_ok=True)
                learn, _ = one_cluster(path, args, f"learn{rep}")
                saved = {k: v for k, v in load(path).items() if k.startswith("bench_")}
                kept = path.read_bytes()
                with_file, known = one_cluster(path, args, f"with{rep}")
                path.write_bytes(kept)  # the timed run above saved too; keep the learning run's
                path.unlink()
                without_file, blind = one_cluster(path, args, f"without{rep}")
                rows.append({"repetition": rep + 1, "learning_run_s": round(learn, 2), "saved": saved,
                             "known_at_start_with_file": known, "known_at_start_without_file": blind,
                             "with_file_s": round(with_file, 2), "without_file_s": round(without_file, 2),
                             "ratio_without_over_with": round(without_file / with_file, 3)})
                print(f"rep {rep + 1}: with file {with_file:.2f}s, without {without_file:.2f}s, "
                      f"ratio {without_file / with_file:.3f} (saved {saved})", file=sys.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    ideal = (args.slow * args.slow_seconds + args.fast * args.fast_seconds) / args.workers
    summary = {"workload": vars(args), "ideal_s": round(ideal, 2), "rows": rows,
               "median_ratio": round(statistics.median(r["ratio_without_over_with"] for r in rows), 3)}
    print(json.dumps(summary, indent=1) if args.json else
          f"median wall-time ratio without/with the persisted file: {summary['median_ratio']} "
          f"(ideal {ideal:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

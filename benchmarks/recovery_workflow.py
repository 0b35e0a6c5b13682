"""Recovery and scale of a caelum *workflow* run: worker loss, and scheduler memory.

The workflow variant of ``benchmarks/recovery.py`` (same cluster: a real `caelum scheduler`
and `caelum worker` subprocesses on 127.0.0.1, worker-ttl 2 s). Run from the repository root
(a few minutes on 2 cores)::

    PYTHONPATH=$PWD python benchmarks/recovery_workflow.py                    # defaults below
    PYTHONPATH=$PWD python benchmarks/recovery_workflow.py --tasks 20000 --repeats 1

1. Recovery: a workflow ``long(D) -> report`` runs through :func:`caelum_dask.workflow.run`
   on 2 workers; the long task records which worker started it, and that worker gets
   ``kill -9``. ``overhead = (kill -> run() returned) - D`` (the lost task starts over on the
   survivor, so D is the lost work's own run time). Baseline: the same run with no fault,
   timed from the task's start to run() returning, minus D (dispatch + events + run store).
2. Scheduler peak memory (RSS sampled every 50 ms) for a workflow of N trivial tasks (N
   leaves + a fan-in-100 tree of sums) on 2 workers, against the idle scheduler and against a
   workflow of N/10 tasks (how memory scales). The whole workflow is one graph submission, so
   the scheduler holds every task at once: this is the workflow engine's worst case.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DASK_CAELUM__HOME", tempfile.mkdtemp(prefix="caelum-bench-home-"))

import psutil  # noqa: E402

import caelum_dask  # noqa: E402
from caelum_dask.workflow import Workflow, run, task  # noqa: E402
from recovery import Cluster, PeakRSS  # noqa: E402

MARKS = Path(tempfile.mkdtemp(prefix="caelum-bench-marks-"))


@task(cache=False)
def long(seconds: float, tag: str) -> float:
    """The work that gets lost: records which worker started it, then runs ``seconds``."""
    from distributed import get_worker

    (MARKS / f"{tag}~{get_worker().name}~{uuid.uuid4().hex}").touch()
    time.sleep(seconds)
    return seconds


@task(cache=False)
def report(value: float) -> float:
    return value * 2


@task
def leaf(i: int) -> int:
    return i + 1


@task
def add_all(values: list[int]) -> int:
    return sum(values)


def _started(tag: str) -> list[str]:
    return [p.name.split("~")[1] for p in MARKS.iterdir() if p.name.startswith(tag + "~")]


def recovery(duration: float, repeats: int) -> dict[str, list[float]]:
    """Overheads (s) per fault kind; the worker running the long task is the victim."""
    cluster = Cluster()
    figures: dict[str, list[float]] = {"none": [], "kill -9": []}
    names = iter(f"w{i}" for i in range(1000))
    try:
        cluster.start([next(names), next(names)])
        with caelum_dask.connect(cluster.address) as client:
            for n, fault in enumerate(["none", "kill -9"] * repeats):
                client.wait_for_workers(2, timeout=90)
                tag = f"run{n}"
                with Workflow(f"recovery-{n}") as wf:
                    report(long(duration, tag))
                box: dict = {}
                runner = threading.Thread(target=lambda: box.setdefault("result", run(wf, client=client)))
                runner.start()
                deadline = time.monotonic() + 60
                while not _started(tag) and time.monotonic() < deadline:
                    time.sleep(0.005)
                victim = _started(tag)[0]
                start = time.monotonic()
                if fault == "kill -9":
                    cluster.signal(victim, signal.SIGKILL)
                runner.join(180)
                elapsed = time.monotonic() - start
                result = box["result"]
                assert result.ok and result["report"] == duration * 2, result.errors
                figures[fault].append(elapsed - duration)
                if fault == "kill -9":
                    assert len(_started(tag)) == 2, "the lost task should have started again"
                    cluster.procs[victim].wait()
                    deadline = time.monotonic() + 60
                    while len(client.scheduler_info()["workers"]) > 1 and time.monotonic() < deadline:
                        time.sleep(0.1)
                    cluster.add_worker(next(names))
                print(f"  {fault:8} run {n}: overhead {figures[fault][-1]:.2f} s", file=sys.stderr)
    finally:
        cluster.stop()
    return figures


def build(tasks: int) -> Workflow:
    """``tasks`` leaves and a fan-in-100 tree of sums (about tasks/99 more nodes)."""
    with Workflow(f"big-{tasks}") as wf:
        level = leaf.map(list(range(tasks)))
        depth = 0
        while len(level) > 1:
            depth += 1
            level = [add_all.with_options(name=f"sum{depth}-{i}")(level[i:i + 100]) for i in range(0, len(level), 100)]
    return wf


def scheduler_memory(tasks: int) -> tuple[int, int, float, int]:
    """(idle RSS, peak RSS, seconds, nodes) of a fresh scheduler running a ``tasks``-leaf workflow."""
    wf = build(tasks)
    nodes = wf.graph.number_of_nodes()
    cluster = Cluster()
    try:
        cluster.start(["m1", "m2"])
        with caelum_dask.connect(cluster.address) as client:
            client.wait_for_workers(2, timeout=90)
            with PeakRSS(cluster.procs["scheduler"].pid) as rss:
                start = time.monotonic()
                result = run(wf, client=client, cache=False)
                elapsed = time.monotonic() - start
            assert result.ok and result.computed == nodes, (result.state, result.computed, nodes)
            assert list(result.results.values()) == [sum(range(1, tasks + 1))], result.results
            return rss.idle, rss.peak, elapsed, nodes
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="run time of the lost task (s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, nargs="+", default=[100_000],
                        help="leaves of the big workflow(s); a baseline of the first / 10 runs too")
    args = parser.parse_args()

    print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"# recovery: workflow long({args.duration:g} s) -> report, the worker running `long` killed; "
          f"{args.repeats} runs each")
    figures = recovery(args.duration, args.repeats)
    base = statistics.median(figures["none"])
    for fault, values in figures.items():
        med = statistics.median(values)
        print(f"{fault:9} overhead median {med:5.2f} s  (min {min(values):.2f}, max {max(values):.2f}); "
              f"kill->done / lost work = {(med + args.duration) / args.duration:.2f}x; vs no fault +{med - base:.2f} s")

    mib = 1024**2
    sizes = [args.tasks[0] // 10, *args.tasks]
    print(f"# scheduler memory: workflow of N leaves + fan-in-100 sums on 2 workers (no reuse; results written to the cache), baseline N={sizes[0]}")
    rows = []
    for n in sizes:
        idle, peak, elapsed, nodes = scheduler_memory(n)
        rows.append((n, idle, peak))
        print(f"{n:>7} leaves ({nodes} tasks): idle {idle / mib:.0f} MiB, peak {peak / mib:.0f} MiB, {elapsed:.1f} s, "
              f"{(peak - idle) / nodes / 1024:.1f} KiB/task above idle, {nodes / elapsed:.0f} tasks/s, "
              f"peak/idle {peak / idle:.2f}x", flush=True)
    small = rows[0]
    for n, idle, peak in rows[1:]:
        print(f"{n // small[0]}x the tasks -> {(peak - idle) / max(1, small[2] - small[1]):.1f}x the memory above idle")


if __name__ == "__main__":
    main()

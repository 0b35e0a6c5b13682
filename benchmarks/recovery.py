"""Recovery and scale of a caelum cluster: worker loss, and scheduler memory for a big graph.

Run (from the repository root; a few minutes on 2 cores)::

    python benchmarks/recovery.py                      # all figures, defaults below
    python benchmarks/recovery.py --tasks 20000 --repeats 1    # quicker

Everything is a real `caelum scheduler` + 2 `caelum worker` subprocesses on 127.0.0.1,
driven through caelum_dask.connect().

1. Recovery after losing a worker. One task of D seconds runs on the victim; we lose the
   victim and time kill -> result. The lost work's own run time is D (the task starts over
   on the survivor), so ``overhead = (kill -> result) - D`` is what the loss cost:
   * ``kill -9``: the process dies, its sockets close, the scheduler notices at once;
   * ``SIGSTOP``: a hung machine or a cut cable: nothing closes, only missed heartbeats tell.
     The heartbeat is configured: worker-ttl 2 s, which Dask floors at 10 heartbeats
     (10 x 0.5 s = 5 s for clusters of <= 10 workers).
   Baseline: the same task with no fault (its overhead is the dispatch cost alone).
2. Scheduler peak memory (RSS, sampled every 50 ms) for a plain Dask graph of N tasks
   (N delayed leaves + a fan-in-100 tree sum) on 2 workers, against the idle scheduler
   and against a graph of N/10 tasks (the ratio shows how memory scales).
"""

from __future__ import annotations

import argparse
import operator
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import psutil

import caelum_dask

ENV = {
    "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "2s",
    "DASK_CAELUM__REGISTRY__OFFLINE_AFTER": "2s",
    "PYTHONUNBUFFERED": "1",
}


class Cluster:
    """A caelum scheduler and named workers as subprocesses (own process groups)."""

    def __init__(self) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="caelum-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", *args], stdout=open(self.logs / f"{name}.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **ENV})
        self.procs[name] = proc
        return proc

    def start(self, workers: list[str]) -> None:
        self._spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0")
        deadline = time.monotonic() + 90
        while not self.address and time.monotonic() < deadline:
            found = re.search(r"Scheduler at:\s+(\S+)", (self.logs / "scheduler.log").read_text())
            self.address = found.group(1) if found else ""
            time.sleep(0.1)
        for name in workers:
            self.add_worker(name)

    def add_worker(self, name: str) -> None:
        self._spawn(name, "worker", self.address, "--name", name, "--nthreads", "1", "--", "--no-nanny",
                    "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0")

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_processing(client, key: str, worker: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if key in client.processing().get(worker, ()):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{key} never started on {worker}")


def recovery(duration: float, repeats: int) -> dict[str, list[float]]:
    """Overheads (s) per fault kind; a fresh victim for every run."""
    cluster = Cluster()
    figures: dict[str, list[float]] = {"none": [], "kill -9": [], "SIGSTOP": []}
    try:
        cluster.start(["survivor"])
        with caelum_dask.connect(cluster.address) as client:
            run = 0
            for fault in ["none", "kill -9", "SIGSTOP"] * repeats:
                run += 1
                victim = f"victim{run}"
                cluster.add_worker(victim)
                client.wait_for_workers(2, timeout=90)
                address = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == victim)
                future = client.submit(time.sleep, duration, key=f"lost-work-{run}", workers=[address],
                                       allow_other_workers=True)
                _wait_processing(client, future.key, address)
                start = time.monotonic()
                if fault == "kill -9":
                    cluster.signal(victim, signal.SIGKILL)
                elif fault == "SIGSTOP":
                    cluster.signal(victim, signal.SIGSTOP)
                future.result(timeout=120)
                figures[fault].append(time.monotonic() - start - duration)
                cluster.signal(victim, signal.SIGKILL)  # the fault-free victim leaves too
                deadline = time.monotonic() + 60
                while len(client.scheduler_info()["workers"]) > 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                print(f"  {fault:8} run {run}: overhead {figures[fault][-1]:.2f} s", file=sys.stderr)
    finally:
        cluster.stop()
    return figures


class PeakRSS:
    """Sample a process's RSS every 50 ms while the ``with`` block runs: ``idle`` at entry, ``peak``.

    Shared by the recovery benchmarks (plain graph, workflow, analysis).
    """

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.idle = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scheduler_memory(tasks: int) -> tuple[int, int, float]:
    """(idle RSS, peak RSS, seconds) of a fresh scheduler running a ``tasks``-task graph on 2 workers."""
    cluster = Cluster()
    try:
        cluster.start(["w1", "w2"])
        with caelum_dask.connect(cluster.address) as client:
            client.wait_for_workers(2, timeout=90)
            inc = dask.delayed(operator.add, pure=True)  # by reference: no pickled closure per task
            level = [inc(i, 1, dask_key_name=f"leaf-{i}") for i in range(tasks)]
            depth = 0
            while len(level) > 1:  # fan-in-100 tree sum: about tasks/99 more tasks
                depth += 1
                level = [dask.delayed(sum)(level[i:i + 100], dask_key_name=f"sum-{depth}-{i}")
                         for i in range(0, len(level), 100)]
            with PeakRSS(cluster.procs["scheduler"].pid) as rss:
                start = time.monotonic()
                total = client.compute(level[0]).result()
                elapsed = time.monotonic() - start
            assert total == sum(range(1, tasks + 1)), total
            return rss.idle, rss.peak, elapsed
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="run time of the lost task (s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks of the big graph")
    args = parser.parse_args()

    print(f"# scheduler at {time.strftime('%Y-%m-%d %H:%M')} UTC, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"# recovery: one {args.duration:g} s task lost with its worker, {args.repeats} runs each")
    figures = recovery(args.duration, args.repeats)
    base = statistics.median(figures["none"])
    for fault, values in figures.items():
        med = statistics.median(values)
        print(f"{fault:9} overhead median {med:5.2f} s  (min {min(values):.2f}, max {max(values):.2f}); "
              f"kill->done / lost work = {(med + args.duration) / args.duration:.2f}x; vs no fault +{med - base:.2f} s")

    print(f"# scheduler memory: {args.tasks} leaves + tree sum on 2 workers, baseline {args.tasks // 10}")
    small_idle, small_peak, small_time = scheduler_memory(args.tasks // 10)
    idle, peak, elapsed = scheduler_memory(args.tasks)
    mib = 1024**2
    print(f"{args.tasks // 10:>7} tasks: idle {small_idle / mib:.0f} MiB, peak {small_peak / mib:.0f} MiB, {small_time:.1f} s")
    print(f"{args.tasks:>7} tasks: idle {idle / mib:.0f} MiB, peak {peak / mib:.0f} MiB, {elapsed:.1f} s, "
          f"{(peak - idle) / args.tasks / 1024:.1f} KiB/task above idle")
    print(f"ratio peak/idle {peak / idle:.2f}x; growth 10x tasks -> {(peak - idle) / max(1, small_peak - small_idle):.1f}x memory; "
          f"{args.tasks / elapsed:.0f} tasks/s")


if __name__ == "__main__":
    main()

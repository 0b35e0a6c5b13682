"""BI benchmark: our aggregation vs single-process pandas, and git collection speed.

Run:  PYTHONPATH=. python benchmarks/bi.py [--rows 1000000] [--commits 3000]

1. ``--rows`` synthetic commit-file rows from 4 sources (4 collector partitions generated ON
   the workers, 10 % of the rows duplicated across two sources as a clone would be): the same
   file-change aggregation (``caelum_dask.bi.large``: dedup, churn per file, weekly activity)
   three ways, timed from "the collectors' results are on the workers" to "the tables are on
   the client":
   - plain pandas on the concatenated rows in a fresh process (the baseline);
   - ours: ``large.aggregate``, the engine picked by bytes against the workers' memory
     (``caelum.bi.dask-above-fraction``) — what a report does with that much data;
   - the cluster map-reduce forced (``fraction=0``), whatever the size.
   Prints wall times, ratios to pandas, the results' equality, the peak RSS of each process
   (client, workers, the pandas process) sampled with psutil every 5 ms while it aggregates,
   and each process's RSS ``--settle`` seconds after the last round (what the allocator kept
   rather than returned to the OS), with the workers' glibc mmap threshold
   (``caelum.worker.malloc-mmap-threshold``; compare runs with
   ``DASK_CAELUM__WORKER__MALLOC_MMAP_THRESHOLD=None``).
2. A repository with ``--commits`` generated commits (git fast-import) is read by the collector
   (one ``git log --numstat -z``): rows/s, and the share of time spent in git itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import psutil

from caelum_dask.bi import gitlog, large


def make_source(index: int, rows: int, overlap: float = 0.1) -> pd.DataFrame:
    """One collector's file rows; the first ``overlap`` share is shared with source index-1."""
    rng = np.random.default_rng(index)
    shared = int(rows * overlap)
    own = rows - shared
    base = index * own
    ids = np.concatenate([np.arange(base - shared, base) % (4 * own), np.arange(base, base + own)])
    commit_no = ids // 4
    frame = pd.DataFrame({
        "commit": pd.Series(commit_no).map("{:040x}".format),
        "path": pd.Series(ids % 5000).map(lambda x: f"src/pkg{x % 50:02d}/mod{x:04d}.py").to_numpy(),
        "old_path": None,
        "added": rng.integers(0, 50, rows), "deleted": rng.integers(0, 20, rows),
        "binary": False,
        "author": pd.Series(commit_no % 40).map("dev{:02d}".format).to_numpy(),
        "author_time": pd.to_datetime(1_600_000_000 + commit_no * 600, unit="s", utc=True),
        "repo_id": pd.Series(commit_no % 2).map("r{}".format).to_numpy(),
        "repo": pd.Series(commit_no % 2).map("repo{}".format).to_numpy(),
    })
    # identical values for shared rows: they come from the same commits
    frame.loc[: shared - 1, ["added", "deleted"]] = (ids[:shared, None] % np.array([50, 20]))
    frame.loc[shared:, ["added", "deleted"]] = (ids[shared:, None] % np.array([50, 20]))
    return frame


class Watch:
    """Peak resident memory and CPU seconds of some processes while blocks run.

    RSS is sampled with psutil every 5 ms inside :meth:`counting` blocks: ``ru_maxrss`` is a lifetime peak (it would include
    building the data), this is the peak during the aggregation only; ``before`` is each
    process's RSS when watching started. CPU seconds (user + system, all processes together)
    are less disturbed than wall time by other work on a shared box.
    """

    def __init__(self, pids: dict[str, int], every: float = 0.005) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.before = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.before)
        self.cpu = 0.0
        self.every, self._stop, self._active = every, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            if not self._active.wait(self.every):
                continue
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            self._stop.wait(self.every)

    def _cpu_now(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.procs.values())

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        """Sample RSS and add the processes' CPU seconds while inside the block."""
        start = self._cpu_now()
        self._active.set()
        try:
            yield
        finally:
            self._active.clear()
            self.cpu += self._cpu_now() - start

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def line(self) -> str:
        return ", ".join(f"{name} {self.peak[name] / 2**20:.0f} (+{(self.peak[name] - self.before[name]) / 2**20:.0f})"
                         for name in self.procs) + " MiB"


_LOCAL: dict[str, pd.DataFrame] = {}


def _build(per: int) -> int:
    """In the pandas process: the 4 sources concatenated, as a user would load them."""
    _LOCAL["files"] = pd.concat([make_source(i, per) for i in range(4)], ignore_index=True)
    return os.getpid()


def _pandas_baseline() -> tuple[float, dict[str, pd.DataFrame]]:
    start = time.perf_counter()
    result = large.aggregate_in_pandas(_LOCAL["files"])
    return time.perf_counter() - start, result


class Contender:
    """One way of aggregating: best wall time, CPU seconds per run, peak RSS, last result."""

    def __init__(self, name: str, run: Callable[[], tuple[float, dict[str, pd.DataFrame]]],
                 pids: dict[str, int]) -> None:
        self.name, self.run, self.watch = name, run, Watch(pids)
        self.best, self.runs, self.result = float("inf"), 0, {}

    def once(self) -> None:
        with self.watch.counting():
            took, self.result = self.run()
        self.best, self.runs = min(self.best, took), self.runs + 1

    def line(self, baseline: Contender) -> str:
        return (f"  {self.name:26s}: {self.best:6.2f} s  {self.best / baseline.best:5.2f}x   "
                f"cpu {self.watch.cpu / self.runs:5.2f} s/run   peak RSS {self.watch.line()}")


def _cluster_run(client: Any, futures: list[Any], fraction: float | None,
                 plans: list[large.Plan]) -> Callable[[], tuple[float, dict[str, pd.DataFrame]]]:
    def run() -> tuple[float, dict[str, pd.DataFrame]]:
        start = time.perf_counter()
        got, plan = large.aggregate(client, futures, fraction, run_id=f"bench{fraction}.{len(plans)}")
        plans.append(plan)
        return time.perf_counter() - start, got
    return run


def _settled(pids: dict[str, int], before: dict[str, int], settle: float) -> str:
    """RSS of each process ``settle`` s after the last run, and its growth over ``before``."""
    time.sleep(settle)
    now = {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}
    return ", ".join(f"{name} {now[name] / 2**20:.0f} (+{(now[name] - before[name]) / 2**20:.0f})" for name in pids) + " MiB"


def bench_aggregation(rows: int, repeats: int, settle: float = 5.0) -> None:
    """Rounds of (pandas, ours, map-reduce forced), so each ratio compares the same moments."""
    import multiprocessing

    from distributed import wait

    from caelum_dask import connect
    from caelum_dask.bi.options import BIOptions

    per = rows // 4
    fraction = BIOptions.from_config().dask_above_fraction
    plans: list[large.Plan] = []
    with multiprocessing.get_context("spawn").Pool(1) as pool, connect() as client:
        pandas_pid = pool.apply(_build, (per,))
        workers = list(client.scheduler_info()["workers"])
        futures = [client.submit(lambda i, n: {"files": make_source(i, n)}, i, per, workers=[workers[i % len(workers)]],
                                 key=f"caelum-bi-bench-source-{i}") for i in range(4)]
        wait(futures)
        pids = {"client": os.getpid(), **{f"worker{n}": p for n, p in enumerate(client.run(os.getpid).values())}}
        baseline = Contender("pandas single process", lambda: pool.apply(_pandas_baseline), {"pandas": pandas_pid})
        ours = Contender("ours (engine by bytes)", _cluster_run(client, futures, fraction, plans), pids)
        forced = Contender("cluster map-reduce forced", _cluster_run(client, futures, 0.0, []), pids)
        contenders = [baseline, ours, forced]
        with baseline.watch, ours.watch, forced.watch:
            for _ in range(repeats):
                for contender in contenders:
                    contender.once()
        all_pids = {**pids, "pandas": pandas_pid}
        settled = _settled(all_pids, {**ours.watch.before, **baseline.watch.before}, settle)
        from caelum_dask.worker import allocator_setting

        thresholds = sorted({str(a["mmap_threshold"] or a["reason"]) for a in client.run(allocator_setting).values()})
    for name in baseline.result:
        pd.testing.assert_frame_equal(baseline.result[name], ours.result[name])
        pd.testing.assert_frame_equal(baseline.result[name], forced.result[name])
    expected = baseline.result
    print(f"aggregation of {rows} file-change rows from 4 sources ({len(expected['churn'])} files, "
          f"{int(expected['activity']['file_changes'].sum())} rows after dedup); best of {repeats} rounds, "
          f"load average {os.getloadavg()[0]:.1f}:")
    print(f"  ours chose: {plans[-1].describe()}")
    for contender in contenders:
        print(contender.line(baseline))
    print("  results identical (tables and dtypes)")
    print(f"  workers' glibc mmap threshold: {', '.join(thresholds)}")
    print(f"  RSS {settle:g} s after the last round (growth over before the rounds): {settled}")


def make_history(repo: Path, commits: int) -> None:
    """A repository with ``commits`` commits touching 1–6 of 400 files each (git fast-import):
    each touch appends 1–20 lines and edits one existing line, like ordinary development."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    rng = np.random.default_rng(0)
    contents: dict[int, list[str]] = {}
    chunks = []
    for n in range(commits):
        when = 1_600_000_000 + n * 3600
        msg = f"change {n}".encode()
        chunks.append(f"commit refs/heads/main\nauthor Dev{n % 7} <d{n % 7}@x> {when} +0000\n"
                      f"committer Dev{n % 7} <d{n % 7}@x> {when} +0000\ndata {len(msg)}\n".encode() + msg + b"\n")
        for f in rng.choice(400, size=rng.integers(1, 7), replace=False):
            lines = contents.setdefault(int(f), [])
            if lines:
                lines[int(rng.integers(0, len(lines)))] = f"edited in {n}"
            lines += [f"line {len(lines) + i} of {n}" for i in range(int(rng.integers(1, 20)))]
            body = ("\n".join(lines) + "\n").encode()
            chunks.append(f"M 100644 inline src/d{f % 20}/f{f}.py\ndata {len(body)}\n".encode() + body + b"\n")
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=b"".join(chunks), check=True)


def bench_collection(commits: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "big"
        make_history(repo, commits)
        start = time.perf_counter()
        raw = subprocess.run(["git", "-C", str(repo), "log", *gitlog.DEFAULT_REVS.split(), "-z", "--numstat", "-M",
                              f"--format={gitlog._FORMAT}"], capture_output=True, check=True).stdout
        git_s = time.perf_counter() - start
        start = time.perf_counter()
        history = gitlog.read_repository(repo)
        total_s = time.perf_counter() - start
        del raw
    rows = len(history.commits) + len(history.files)
    print(f"collection of a generated repository: {len(history.commits)} commits, {len(history.files)} file rows")
    print(f"  {rows / total_s:,.0f} rows/s ({total_s:.2f} s; git log alone {git_s:.2f} s = "
          f"{git_s / total_s:.0%} of it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3, help="aggregation runs per engine (best time shown)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after the last round before the RSS 'after' is read")
    parser.add_argument("--no-collection", action="store_true", help="only the aggregation")
    args = parser.parse_args()
    if not args.no_collection:
        bench_collection(args.commits)
    bench_aggregation(args.rows, args.repeats, args.settle)


if __name__ == "__main__":
    main()

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
   Prints wall times, ratios to pandas, the results' equality, and the peak RSS of each process
   (client, workers, the pandas process) sampled with psutil every 5 ms while it aggregates.
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


class PeakRSS:
    """Peak resident memory of some processes while a block runs (psutil, sampled every 5 ms).

    ``ru_maxrss`` is a lifetime peak (it would include building the data); this is the peak
    during the aggregation only, and ``before`` is each process's RSS when the block started.
    """

    def __init__(self, pids: dict[str, int], every: float = 0.005) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.before = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.before)
        self.every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
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


def _timed(client: Any, futures: list[Any], pids: dict[str, int], fraction: float | None,
           repeats: int) -> tuple[float, PeakRSS, dict[str, pd.DataFrame], large.Plan]:
    """The best of ``repeats`` runs of ``large.aggregate`` (peak RSS over all of them)."""
    best = float("inf")
    with PeakRSS(pids) as peaks:
        for n in range(repeats):
            start = time.perf_counter()
            got, plan = large.aggregate(client, futures, fraction, run_id=f"bench{fraction}.{n}")
            best = min(best, time.perf_counter() - start)
    return best, peaks, got, plan


def bench_aggregation(rows: int, repeats: int) -> None:
    import multiprocessing

    from distributed import wait

    from caelum_dask import connect
    from caelum_dask.bi.options import BIOptions

    per = rows // 4
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pid = pool.apply(_build, (per,))
        pandas_s = float("inf")
        with PeakRSS({"pandas": pid}) as pandas_peak:
            for _ in range(repeats):
                took, expected = pool.apply(_pandas_baseline)
                pandas_s = min(pandas_s, took)
    fraction = BIOptions.from_config().dask_above_fraction
    with connect() as client:
        workers = list(client.scheduler_info()["workers"])
        futures = [client.submit(lambda i, n: {"files": make_source(i, n)}, i, per, workers=[workers[i % len(workers)]],
                                 key=f"caelum-bi-bench-source-{i}") for i in range(4)]
        wait(futures)
        pids = {"client": os.getpid(), **{f"worker{n}": p for n, p in enumerate(client.run(os.getpid).values())}}
        ours_s, ours_peak, ours, plan = _timed(client, futures, pids, fraction, repeats)
        forced_s, forced_peak, forced, _ = _timed(client, futures, pids, 0.0, repeats)
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], ours[name])
        pd.testing.assert_frame_equal(expected[name], forced[name])
    print(f"aggregation of {rows} file-change rows from 4 sources ({len(expected['churn'])} files, "
          f"{int(expected['activity']['file_changes'].sum())} rows after dedup); best of {repeats}, "
          f"load average {os.getloadavg()[0]:.1f}:")
    print(f"  plan: {plan.describe()}")
    print(f"  pandas single process    : {pandas_s:6.2f} s   peak RSS {pandas_peak.line()}")
    print(f"  ours ({plan.engine:6s})           : {ours_s:6.2f} s   {ours_s / pandas_s:.2f}x   peak RSS {ours_peak.line()}")
    print(f"  cluster map-reduce forced: {forced_s:6.2f} s   {forced_s / pandas_s:.2f}x   peak RSS {forced_peak.line()}")
    print("  results identical (tables and dtypes)")


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
    args = parser.parse_args()
    bench_collection(args.commits)
    bench_aggregation(args.rows, args.repeats)


if __name__ == "__main__":
    main()

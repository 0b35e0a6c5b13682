"""BI benchmark: cluster aggregation vs single-process pandas, and git collection speed.

Run:  PYTHONPATH=. python benchmarks/bi.py [--rows 1000000] [--commits 3000]

1. ``--rows`` synthetic commit-file rows from 4 sources (4 collector partitions generated ON
   the workers, 10 % of the rows duplicated across two sources as a clone would be): the same
   file-change aggregation (``caelum_dask.bi.large``: dedup, churn per file, weekly activity)
   through the cluster (dask.dataframe partitions = the collectors' results) vs plain pandas
   on the concatenated data in a fresh process. Prints wall time, the ratio and peak RSS
   (``ru_maxrss``) of the pandas process and of each worker.
2. A repository with ``--commits`` generated commits (git fast-import) is read by the collector
   (one ``git log --numstat -z``): rows/s, and the share of time spent in git itself.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

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


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pandas_baseline(per: int) -> tuple[float, float, dict[str, pd.DataFrame]]:
    """In a fresh process: build the 4 sources, aggregate, report time and peak RSS."""
    local = pd.concat([make_source(i, per) for i in range(4)], ignore_index=True)
    start = time.perf_counter()
    result = large.aggregate_in_pandas(local)
    return time.perf_counter() - start, _peak_rss_mib(), result


def bench_aggregation(rows: int) -> None:
    import multiprocessing

    from distributed import wait

    from caelum_dask import connect

    per = rows // 4
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pandas_s, pandas_peak, expected = pool.apply(_pandas_baseline, (per,))
    with connect() as client:
        workers = list(client.scheduler_info()["workers"])
        futures = [client.submit(lambda i, n: {"files": make_source(i, n)}, i, per, workers=[workers[i % len(workers)]],
                                 key=f"caelum-bi-bench-source-{i}") for i in range(4)]
        wait(futures)
        meta = make_source(0, 4).iloc[:0]
        before = client.run(_peak_rss_mib)
        start = time.perf_counter()
        got = large.aggregate_on_cluster(client, large.files_from_futures(futures, meta=meta))
        cluster_s = time.perf_counter() - start
        peaks = client.run(_peak_rss_mib)
        client_peak = _peak_rss_mib()
    for name in expected:
        pd.testing.assert_frame_equal(expected[name], got[name], check_dtype=False)
    print(f"aggregation of {rows} file-change rows from 4 sources ({len(expected['churn'])} files, "
          f"{int(expected['activity']['file_changes'].sum())} rows after dedup):")
    print(f"  pandas single process : {pandas_s:7.2f} s   peak RSS {pandas_peak:6.0f} MiB (data + aggregation)")
    print(f"  cluster dask.dataframe: {cluster_s:7.2f} s   peak RSS per worker "
          f"{', '.join(f'{peaks[w]:.0f} (was {before[w]:.0f})' for w in peaks)} MiB; client {client_peak:.0f} MiB")
    print(f"  ratio cluster/pandas  : {cluster_s / pandas_s:.2f}x time, results identical")


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
    args = parser.parse_args()
    bench_collection(args.commits)
    bench_aggregation(args.rows)


if __name__ == "__main__":
    main()

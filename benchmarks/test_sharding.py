"""Benchmark: `caelum test` on 2 workers vs serial pytest vs `pytest -n 2` (pytest-xdist).

Run (from the repository root; a few minutes on a small box):

    PYTHONPATH=$PWD python benchmarks/test_sharding.py [--click] [--repeat 1]

Suites:
* synthetic: 40 tests with skewed durations (a few long, many short; sleep-based so the
  figure measures balancing, not CPU contention), in 4 files;
* --click: click 8.1.7's own test suite from its sdist (``pip download --no-binary :all:
  click==8.1.7``; skipped with a message when that does not work offline).

For each suite: serial ``python -m pytest``, ``pytest -n 2``, and ``caelum test`` on a
2-worker cluster (already running, as on a real cluster) twice: run 1 without recorded
durations, run 2 balanced by the durations run 1 recorded. Prints wall times, ratios against
serial and xdist, and shard imbalance (max/mean shard time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import dask.config
from distributed import Client, LocalCluster

from caelum_dask.cluster import embedded_cluster_kwargs
from caelum_dask.testing import TestOptions, run_tests
from caelum_dask.testing.partition import imbalance

DURATIONS = [3.0, 2.0, 1.2, 0.8] + [0.25] * 12 + [0.05] * 24  # ~11.6 s serial, skewed


def synthetic(root: Path) -> Path:
    (root / "tests").mkdir(parents=True)
    for f in range(4):
        lines = ["import time", ""]
        for i, seconds in enumerate(DURATIONS[f::4]):
            lines += [f"def test_{f}_{i}():", f"    time.sleep({seconds})", ""]
        (root / "tests" / f"test_file{f}.py").write_text("\n".join(lines))
    return root


def click_suite(root: Path) -> Path | None:
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "click==8.1.7", "-d", str(root)], check=True, capture_output=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"click sdist not available ({exc}); benchmarking the synthetic suite only")
        return None
    with tarfile.open(root / "click-8.1.7.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root / "click-8.1.7"


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return time.perf_counter() - start


def bench(name: str, project: Path, pytest_args: list[str], env_extra: dict[str, str], client: Client) -> dict:
    env = {**os.environ, **env_extra}
    env.pop("OMP_NUM_THREADS", None)
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    serial = timed(base, project, env)
    xdist = timed([*base, "-n", "2"], project, env)
    results = {"suite": name, "serial_s": round(serial, 2), "xdist2_s": round(xdist, 2)}
    shutil.rmtree(project / ".caelum", ignore_errors=True)
    for run in (1, 2):
        start = time.perf_counter()
        summary = run_tests(project, TestOptions(pytest_args=pytest_args, env=env_extra, retry_failed=0),
                            client=client)
        wall = time.perf_counter() - start
        shards = summary["platforms"][0]["shards"]
        results[f"caelum_run{run}_s"] = round(wall, 2)
        results[f"caelum_run{run}_shards"] = len(shards)
        results[f"caelum_run{run}_imbalance"] = round(imbalance([s["duration"] for s in shards]), 2)
        results[f"caelum_run{run}_counts"] = {k: v for k, v in summary["counts"].items() if v}
    results["run2_vs_serial"] = round(results["caelum_run2_s"] / serial, 2)
    results["run2_vs_xdist"] = round(results["caelum_run2_s"] / xdist, 2)
    results["xdist_vs_serial"] = round(xdist / serial, 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--click", action="store_true", help="also benchmark click's own test suite")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="caelum-bench-"))
    kwargs = embedded_cluster_kwargs()
    kwargs.update(n_workers=2, threads_per_worker=1)
    kwargs["env"] = {**kwargs["env"], "DASK_CAELUM__HOME": str(work / "home"), "CAELUM_WORKER_SLOTS": "2"}
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(**kwargs)
    client = Client(cluster)
    try:
        rows = [bench("synthetic-skewed-40", synthetic(work / "synthetic"), [], {}, client)]
        if args.click:
            project = click_suite(work)
            if project is not None:
                rows.append(bench("click-8.1.7", project,
                                  ["tests", "-W", "ignore::pytest.PytestRemovedIn10Warning"],
                                  {"PYTHONPATH": "src"}, client))
    finally:
        client.close()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

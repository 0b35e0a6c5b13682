"""Benchmark: `caelum test` on 2 workers vs serial pytest vs `pytest -n 2` (pytest-xdist).

Run from the repository root, with the test extra installed (it brings pytest-xdist):

    PYTHONPATH=$PWD python benchmarks/test_sharding.py [--click] [--large] [--all] [--repeat N]

Suites (the synthetic one always runs):
* synthetic: 40 tests with skewed durations (a few long, many short; sleep-based so the
  figure measures balancing, not CPU contention), in 4 files, ~11.6 s serially;
* --click (small suite): click 8.1.7's own tests (~1,000, a few seconds serially) from its
  sdist, ``pip download --no-deps --no-binary :all: click==8.1.7``;
* --large: networkx's own tests (~6,500, about 1.5 min serially on 2 cores) from the sdist of
  the networkx version installed here (so the test dependencies match); the tests import the
  sdist's copy (networkx/conftest.py puts the sdist root first on sys.path). Optional
  dependencies that are not installed (scipy, matplotlib, ...) make their tests skip, in every
  run alike;
* --all: both.
A sdist that cannot be downloaded (offline) is reported and its suite left out.

For each suite, in this order and on this machine: one untimed collection per contender
(``pytest --collect-only`` in the project; a caelum run that selects nothing, which collects in
the workers' unpacked snapshot), so every timed run finds bytecode and page cache warm — as on
a developer's machine, where ``PYTHONDONTWRITEBYTECODE`` is dropped for the whole benchmark
unless ``--keep-bytecode-env`` — then serial ``python -m pytest``,
``pytest -n 2``, ``pytest -n 2 --dist loadfile``, and ``caelum test`` on a 2-worker
LocalCluster started before the timings (as a real cluster would be) twice: run 1 with no
recorded durations (PROJECT/.caelum deleted first) and run 2 balanced by run 1's durations.
``--repeat N`` repeats that sequence N times and reports the median of each wall time.

Prints, per suite, one JSON line (wall times, counts, shard imbalance, ratios, goals) and a
table, plus the box's load average before and after (overall, per suite, and the 1-minute
figure after each run of the last repetition: the box must be otherwise idle for fair figures)
and its CPU count. Goals (from the issue):
run 1 <= 1.0x xdist, run 2 <= 0.85x xdist, both caelum runs' counts equal serial pytest's
(passed/failed/error/skipped/xfailed/xpassed/deselected, zeros ignored), and for the small
suite (click) both caelum runs <= 1.1x serial.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dask.config
from distributed import Client, LocalCluster

from caelum_dask.cluster import embedded_cluster_kwargs
from caelum_dask.testing import TestOptions, run_tests

DURATIONS = [3.0, 2.0, 1.2, 0.8] + [0.25] * 12 + [0.05] * 24  # ~11.6 s serial, skewed
COUNT_KEYS = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "deselected")
PYTEST_RUNS = {"serial": [], "xdist2": ["-n", "2"], "loadfile2": ["-n", "2", "--dist", "loadfile"]}
MEASURES = (*PYTEST_RUNS, "caelum_run1", "caelum_run2")
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b")
_FINAL = re.compile(r"\bin \d+(\.\d+)?s\b")


@dataclass
class Suite:
    name: str
    project: Path
    pytest_args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    small: bool = False  # the "small suite": caelum must stay within 1.1x serial


def synthetic(root: Path) -> Suite:
    (root / "tests").mkdir(parents=True)
    for f in range(4):
        lines = ["import time", ""]
        for i, seconds in enumerate(DURATIONS[f::4]):
            lines += [f"def test_{f}_{i}():", f"    time.sleep({seconds})", ""]
        (root / "tests" / f"test_file{f}.py").write_text("\n".join(lines))
    return Suite("synthetic-skewed-40", root, [])


def sdist(root: Path, name: str, ver: str) -> Path | None:
    """Download and unpack ``name==ver``'s sdist under ``root``; its folder, or None if offline."""
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"{name}=={ver}", "-d", str(root)], check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"{name} {ver} sdist not available ({exc}); suite left out")
        return None
    with tarfile.open(next(root.glob("*.tar.gz"))) as tar:
        tar.extractall(root, filter="data")
    return next(path for path in root.iterdir() if path.is_dir())


def click_suite(root: Path) -> Suite | None:
    project = sdist(root, "click", "8.1.7")
    if project is None:
        return None
    return Suite("click-8.1.7", project, ["tests", "-W", "ignore::pytest.PytestRemovedIn10Warning"],
                 {"PYTHONPATH": "src"}, small=True)


def large_suite(root: Path) -> Suite | None:
    ver = version("networkx")
    project = sdist(root, "networkx", ver)
    return None if project is None else Suite(f"networkx-{ver}", project, ["networkx"])


def parse_summary(output: str) -> dict[str, int]:
    """pytest's final line (``=== 6139 passed, 359 skipped in 93.9s ===``, or -q's) as counts."""
    for line in reversed(output.splitlines()):
        if _FINAL.search(line) and _COUNT.search(line):
            found = {("error" if word.startswith("error") else word): int(n) for n, word in _COUNT.findall(line)}
            return {key: found[key] for key in COUNT_KEYS if found.get(key)}
    return {}


def caelum_counts(counts: dict[str, int]) -> dict[str, int]:
    """caelum's summary counts restricted to pytest's keys (no flaky/notrun/total), zeros dropped."""
    return {key: counts[key] for key in COUNT_KEYS if counts.get(key)}


def pytest_command(suite: Suite, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite.pytest_args, *extra]


def pytest_env(suite: Suite) -> dict[str, str]:
    env = {**os.environ, **suite.env}
    env.pop("OMP_NUM_THREADS", None)
    return env


def pytest_run(suite: Suite, extra: list[str]) -> dict[str, Any]:
    """One pytest run: wall time, parsed counts and exit code (0/1 accepted, else it raises)."""
    start = time.perf_counter()
    proc = subprocess.run(pytest_command(suite, extra), cwd=suite.project, env=pytest_env(suite),
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{suite.name} {extra}: pytest rc {proc.returncode}\n"
                           + proc.stdout[-3000:] + proc.stderr[-3000:])
    return {"wall": wall, "counts": parse_summary(proc.stdout), "exit_code": proc.returncode}


def caelum_run(suite: Suite, client: Client) -> dict[str, Any]:
    """One ``caelum test`` run: wall time, counts, exit code, shard count and imbalance."""
    options = TestOptions(pytest_args=suite.pytest_args, env=suite.env, retry_failed=0)
    start = time.perf_counter()
    result = run_tests(suite.project, options, client=client)
    wall = time.perf_counter() - start
    durations = [shard["duration"] for shard in result.platforms[0]["shards"]]
    mean = statistics.fmean(durations) if durations else 0.0
    return {"wall": wall, "counts": caelum_counts(result.counts), "exit_code": result.exit_code,
            "shards": len(durations), "imbalance": round(max(durations) / mean, 2) if mean else None}


#: a -k expression no test matches: a caelum run that only collects
NOTHING = ["-k", "caelum_benchmark_warm_up_selects_nothing"]


def warm_up(suite: Suite, client: Client) -> None:
    """Untimed collection for every contender, so no timed run pays for bytecode compilation.

    pytest and xdist compile into the project's ``__pycache__``; caelum's sessions compile into
    the unpacked snapshot on the workers, warmed by a run that collects and selects nothing
    (it records no durations, so run 1 still starts without any).
    """
    subprocess.run([*pytest_command(suite, []), "--collect-only"], cwd=suite.project, env=pytest_env(suite),
                   capture_output=True, check=False)
    run_tests(suite.project, TestOptions(pytest_args=[*suite.pytest_args, *NOTHING], env=suite.env,
                                         retry_failed=0, record_durations=False), client=client)


def with_load(result: dict[str, Any]) -> dict[str, Any]:
    """Tag a run with the 1-minute load average right after it (spots a run that shared the box)."""
    return {**result, "load1": round(os.getloadavg()[0], 2)}


def measure_once(suite: Suite, client: Client) -> dict[str, dict[str, Any]]:
    runs = {name: with_load(pytest_run(suite, extra)) for name, extra in PYTEST_RUNS.items()}
    shutil.rmtree(suite.project / ".caelum", ignore_errors=True)  # run 1: no recorded durations
    runs["caelum_run1"] = with_load(caelum_run(suite, client))
    runs["caelum_run2"] = with_load(caelum_run(suite, client))
    return runs


def ratios(wall: dict[str, float]) -> dict[str, float]:
    out = {}
    for run in ("caelum_run1", "caelum_run2"):
        for base in ("xdist2", "loadfile2", "serial"):
            out[f"{run[-4:]}/{base}"] = round(wall[run] / wall[base], 2)
    out["xdist2/serial"] = round(wall["xdist2"] / wall["serial"], 2)
    return out


def goals(suite: Suite, ratio: dict[str, float], counts_ok: dict[str, bool]) -> dict[str, bool]:
    met = {"run1<=1.0x xdist": ratio["run1/xdist2"] <= 1.0, "run2<=0.85x xdist": ratio["run2/xdist2"] <= 0.85,
           "counts==serial": counts_ok["caelum_run1"] and counts_ok["caelum_run2"]}
    if suite.small:
        met["run1,run2<=1.1x serial"] = max(ratio["run1/serial"], ratio["run2/serial"]) <= 1.1
    return met


def summarise(reps: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Median wall times over the repetitions; counts, exit codes and shards of the last one."""
    last = reps[-1]
    return {"wall_s": {name: round(statistics.median(rep[name]["wall"] for rep in reps), 2) for name in MEASURES},
            "walls_s": {name: [round(rep[name]["wall"], 2) for rep in reps] for name in MEASURES},
            "counts": {name: last[name]["counts"] for name in MEASURES},
            "counts_match_serial": {name: last[name]["counts"] == last["serial"]["counts"] for name in MEASURES},
            "exit_codes": {name: last[name]["exit_code"] for name in MEASURES},
            "load1_after": {name: last[name]["load1"] for name in MEASURES},
            "shards": {run: [last[run]["shards"], last[run]["imbalance"]] for run in ("caelum_run1", "caelum_run2")}}


def bench(suite: Suite, client: Client, repeat: int) -> dict[str, Any]:
    load_before = os.getloadavg()
    warm_up(suite, client)
    row = summarise([measure_once(suite, client) for _ in range(repeat)])
    ratio = ratios(row["wall_s"])
    return {"suite": suite.name, "repeat": repeat, **row, "ratios": ratio,
            "goals": goals(suite, ratio, row["counts_match_serial"]),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def joined(pairs: dict[str, Any], fmt: str = "{}={}") -> str:
    return "  ".join(fmt.format(name, value) for name, value in pairs.items())


def table(row: dict[str, Any]) -> str:
    """The human-readable block for one suite (the JSON line has the same figures)."""
    yes_no = {name: "yes" if ok else "NO" for name, ok in row["counts_match_serial"].items()}
    met = {goal: "met" if ok else "MISSED" for goal, ok in row["goals"].items()}
    lines = [f"== {row['suite']} (median of {row['repeat']}; "
             f"load {row['load_before'][0]} -> {row['load_after'][0]})",
             "  wall s:  " + joined(row["wall_s"]),
             "  ratios:  " + joined(row["ratios"]),
             "  load1 after each run: " + joined(row["load1_after"]),
             f"  serial counts: {row['counts']['serial']}",
             "  counts == serial: " + joined(yes_no),
             "  shards (count, max/mean): " + joined(row["shards"]),
             "  goals: " + joined(met, "{}: {}")]
    lines += [f"  {name} counts: {counts}" for name, counts in row["counts"].items() if yes_no[name] == "NO"]
    return "\n".join(lines)


def start_cluster(work: Path) -> tuple[LocalCluster, Client]:
    kwargs = embedded_cluster_kwargs()
    kwargs.update(n_workers=2, threads_per_worker=1)
    kwargs["env"] = {**kwargs["env"], "DASK_CAELUM__HOME": str(work / "home"), "CAELUM_WORKER_SLOTS": "2"}
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(**kwargs)
    return cluster, Client(cluster)


def suites(args: argparse.Namespace, work: Path) -> list[Suite]:
    found: list[Suite | None] = [synthetic(work / "synthetic")]
    if args.click or args.all:
        found.append(click_suite(work / "click"))
    if args.large or args.all:
        found.append(large_suite(work / "large"))
    return [suite for suite in found if suite is not None]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--click", action="store_true", help="also benchmark click's test suite (small)")
    parser.add_argument("--large", action="store_true", help="also benchmark networkx's test suite (large)")
    parser.add_argument("--all", action="store_true", help="both --click and --large")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each suite's sequence N times (medians)")
    parser.add_argument("--keep-bytecode-env", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE if set (every run then recompiles everything)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if not args.keep_bytecode_env:
        # a developer's machine writes bytecode caches: serial and xdist reuse the project's
        # __pycache__, caelum its unpacked snapshot's. Some boxes (CI images) set
        # PYTHONDONTWRITEBYTECODE, which makes every run of every contender recompile.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    work = Path(tempfile.mkdtemp(prefix="caelum-bench-"))
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    try:
        chosen = suites(args, work)
        cluster, client = start_cluster(work)
        try:
            rows = [bench(suite, client, args.repeat) for suite in chosen]
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                      "load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()]}))
    for row in rows:
        print(json.dumps(row))
    for row in rows:
        print(table(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

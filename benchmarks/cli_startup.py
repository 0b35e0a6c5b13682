"""Benchmark: how long `caelum` takes to answer before doing any work, against `python -c pass`.

Run from the repository root (the package installed in the interpreter that runs this):

    PYTHONPATH=$PWD python benchmarks/cli_startup.py [--repeat 10]

Each command is started ``--repeat`` times as a fresh process (``python -m caelum_dask …``,
which is what the ``caelum`` script runs) after one untimed warm-up start, which also writes the
bytecode (``PYTHONDONTWRITEBYTECODE`` is dropped for the children: an installed caelum has its
``.pyc`` files, and compiling every module at each start is not what users wait for); the
median wall time is compared with ``python -c pass`` measured in the same run. Goal (issue "Fast paths"):
``caelum --help``, ``caelum <cmd> --help`` and argument errors ≤ 0.25 s on this machine.

With ``--analyze-files N`` (default 150, 0: left out) the same run also times the warm
``caelum analyze TREE --json`` of a small tree — N standard-library files, chosen as
benchmarks/analysis.py chooses its small tree — after one cold run (embedded cluster, own
caelum home) has filled the cache. Goal (#17): that warm run ≤ 2× ``caelum --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "caelum --help": ["-m", "caelum_dask", "--help"],
    "caelum --version": ["-m", "caelum_dask", "--version"],
    "caelum bogus (usage error)": ["-m", "caelum_dask", "bogus"],
    "caelum test --help": ["-m", "caelum_dask", "test", "--help"],
    "caelum analyze --help": ["-m", "caelum_dask", "analyze", "--help"],
    "caelum run --help": ["-m", "caelum_dask", "run", "--help"],
    "caelum status --help": ["-m", "caelum_dask", "status", "--help"],
    "caelum bi --help": ["-m", "caelum_dask", "bi", "--help"],
    "caelum llm --help": ["-m", "caelum_dask", "llm", "--help"],
}


WARM_ANALYZE = "caelum analyze (warm)"
WARM_ANALYZE_GIT = "caelum analyze (warm, git tree)"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   env=env)
    return time.perf_counter() - start


def small_tree(dest: Path, limit: int) -> Path:
    """``limit`` standard-library files spread over the whole library (benchmarks/analysis.py's choice)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if limit < len(files):
        files = [files[int(i * len(files) / limit)] for i in range(limit)]
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.read_bytes())
    return dest


def git_commit_all(tree: Path) -> Path:
    """``tree`` as a git work tree with everything committed (most projects are one: the warm
    run then asks git for the file list, as it must for the ignore rules)."""
    who = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for argv in (["init", "-q"], ["add", "-A"], [*who, "commit", "-q", "-m", "tree"]):
        subprocess.run(["git", "-C", str(tree), *argv], check=True, capture_output=True)
    return tree


def warm_analyze(work: Path, files: int, git: bool = False) -> tuple[list[str], dict[str, str]]:
    """The warm analyze command and its environment, after the cold run that fills the cache."""
    env = {**os.environ, "DASK_CAELUM__HOME": str(work / "home"), "DASK_CAELUM__EMBEDDED__N_WORKERS": "2"}
    env.pop("CAELUM_SCHEDULER", None)
    tree = small_tree(work / ("small-git" if git else "small"), files)
    argv = ["-m", "caelum_dask", "analyze", str(git_commit_all(tree) if git else tree), "--json"]
    cold = timed(argv, env)
    name = WARM_ANALYZE_GIT if git else WARM_ANALYZE
    print(f"# {name}: {files} files, cold run {cold:.2f} s (embedded cluster)", file=sys.stderr)
    return argv, env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--analyze-files", type=int, default=150, help="files of the warm-analyze tree (0: skip)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="caelum-startup-"))
    try:
        commands = {name: (argv, None) for name, argv in COMMANDS.items()}
        if args.analyze_files:
            commands[WARM_ANALYZE] = warm_analyze(work, args.analyze_files)
            commands[WARM_ANALYZE_GIT] = warm_analyze(work, args.analyze_files, git=True)
        print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
        medians = {}
        for name, (argv, env) in commands.items():
            timed(argv, env)  # warm the page cache and bytecode
            medians[name] = statistics.median(timed(argv, env) for _ in range(args.repeat))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = medians["python -c pass"]
    print(json.dumps({"median_s": {k: round(v, 3) for k, v in medians.items()},
                      "load_after": os.getloadavg()}))
    print(f"{'command':32} {'median s':>9} {'- pass s':>9} {'goal':>14}")
    for name, value in medians.items():
        if name in (WARM_ANALYZE, WARM_ANALYZE_GIT):
            ratio = value / medians["caelum --help"]
            goal = f"{ratio:.2f}x help " + ("met" if ratio <= 2 else "MISSED")
        else:
            goal = "" if name == "python -c pass" else ("met" if value <= 0.25 else "MISSED")
        print(f"{name:32} {value:9.3f} {value - base:9.3f} {goal:>14}")


if __name__ == "__main__":
    main()

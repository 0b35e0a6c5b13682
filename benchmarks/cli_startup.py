"""Benchmark: how long `caelum` takes to answer before doing any work, against `python -c pass`.

Run from the repository root (the package installed in the interpreter that runs this):

    PYTHONPATH=$PWD python benchmarks/cli_startup.py [--repeat 10]

Each command is started ``--repeat`` times as a fresh process (``python -m caelum_dask …``,
which is what the ``caelum`` script runs) after one untimed warm-up start; the median wall time
is compared with ``python -c pass`` measured in the same run. Goal (issue "Fast paths"):
``caelum --help``, ``caelum <cmd> --help`` and argument errors ≤ 0.25 s on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

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


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
    medians = {}
    for name, argv in COMMANDS.items():
        timed(argv)  # warm the page cache and bytecode
        medians[name] = statistics.median(timed(argv) for _ in range(args.repeat))
    base = medians["python -c pass"]
    print(json.dumps({"median_s": {k: round(v, 3) for k, v in medians.items()},
                      "load_after": os.getloadavg()}))
    print(f"{'command':32} {'median s':>9} {'- pass s':>9} {'goal <=0.25 s':>14}")
    for name, value in medians.items():
        goal = "" if name == "python -c pass" else ("met" if value <= 0.25 else "MISSED")
        print(f"{name:32} {value:9.3f} {value - base:9.3f} {goal:>14}")


if __name__ == "__main__":
    main()

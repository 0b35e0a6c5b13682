"""Analyse a codebase on the cluster and write the report.

    python examples/analyze_codebase.py [PATH] [--out DIR]

PATH defaults to the caelum_dask package itself; DIR to ./analysis-report. Runs on the
scheduler in CAELUM_SCHEDULER / the Dask config, or on an embedded cluster on this machine.
Uses the analyzer plugins in analyzers/ (TODO debt, print calls, deprecated calls).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caelum_dask import connect
from caelum_dask.analysis import analyze
from caelum_dask.analysis.report import export

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(HERE / "caelum_dask"))
    parser.add_argument("--out", default="analysis-report")
    args = parser.parse_args()

    with connect() as client:
        print(f"cluster: {len(client.scheduler_info(n_workers=-1)['workers'])} workers", file=sys.stderr)
        result = analyze(args.path, client=client, plugins=[str(HERE / "analyzers")],
                         progress=lambda event: print(f"  {event.text()}", file=sys.stderr))
    written = export(result, args.out)

    s = result.summary
    print(f"{s['files']} files, {s['lines']} lines, {s['functions']} functions/classes; "
          f"mean complexity {s['mean_complexity']}, mean maintainability {s['mean_mi']}")
    print("most complex:")
    for row in result.functions.nlargest(5, "complexity").itertuples():
        print(f"  {row.rank} {row.complexity:>3}  {row.path}:{row.lineno} {row.fullname}")
    print("most imported modules:", ", ".join(result.tables["modules"].nlargest(3, "fan_in")["module"]))
    print("findings:", s["findings"] or "none")
    print("report:", written["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Example: a BI report over a git repository, on the cluster (or an embedded one).

Run:  python examples/bi_report.py [REPO_OR_FOLDER] [OUT_DIR]
(default: this repository, reports/example). Prints the main tables and writes CSV, Parquet,
report.xlsx and report.html. Set CAELUM_SCHEDULER to use a running cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path

from caelum_dask import connect
from caelum_dask.bi import run_report

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else str(HERE)
    out = sys.argv[2] if len(sys.argv) > 2 else str(HERE / "reports" / "example")
    with connect() as client:
        result = run_report(HERE / "bi" / "weekly_team.py", client=client, roots=[root], since="all", out=out)
    print(f"commits: {result.collected['commits']}")
    print(result.tables["authors"].to_string(index=False))
    print(result.tables["ownership"].to_string(index=False))
    print(f"report: {result.files['html']}")


if __name__ == "__main__":
    main()

"""Code health of a repository: analysis -> tests -> BI report, as one workflow on the cluster.

    caelum run workflows/code_health.py -p path=/abs/path/to/repo
    caelum run workflows/code_health.py -p path=$PWD -p pytest_args="tests/test_resources.py -q"

1. ``analyze``: ``caelum analyze`` of the repository (radon metrics, structure, imports); its
   tables are exported under the caelum home's ``analysis/`` folder, where the BI collectors
   look for code metrics.
2. ``run_tests``: ``caelum test`` of the repository, sharded over the cluster; its merged JUnit
   XML goes under the caelum home's ``tests/`` folder, where the BI collectors look for test
   results.
3. ``report``: the ``bi/code_health.py`` report (hotspots = change frequency x complexity,
   coupling, bus factor, test health, code-health trend) over the repository's git history,
   exported as CSV, Parquet, Excel and HTML into ``out``.

``path`` must exist on the workers (on one machine, or a shared checkout). The steps read the
repository from disk, so they are not cached (``cache=False``): a re-run always looks again.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path
from typing import Any

from caelum_dask.workflow import Workflow, task

BI_DEFINITION = Path(__file__).resolve().parent.parent / "bi" / "code_health.py"


@task(cache=False)
def analyze(path: str) -> dict[str, Any]:
    """Analyse the repository; the tables land in <caelum home>/analysis/<id>/ for BI."""
    from caelum_dask import config
    from caelum_dask.analysis.steps import analyze_step

    out = config.home() / "analysis" / f"code-health-{uuid.uuid4().hex[:8]}"
    summary = analyze_step(os.path.abspath(path), out=str(out))
    return {k: summary[k] for k in ("files", "functions", "errors", "mean_complexity") if k in summary} | {
        "report": str(out), "worst": summary.get("worst_functions", [])[:5]}


@task(cache=False)
def run_tests(path: str, pytest_args: str, analysis: dict[str, Any]) -> dict[str, Any]:
    """Run the test suite; the merged JUnit XML lands in <caelum home>/tests/ for BI.

    ``analysis`` is the previous step's summary: the tests run after the analysis.
    """
    from caelum_dask import config
    from caelum_dask.testing.steps import test_step

    junit = config.home() / "tests" / f"code-health-{uuid.uuid4().hex[:8]}.xml"
    junit.parent.mkdir(parents=True, exist_ok=True)
    return test_step(os.path.abspath(path), pytest_args=shlex.split(pytest_args), junit=str(junit), retry_failed=0)


@task(cache=False)
def report(path: str, since: str, out: str, tests: dict[str, Any]) -> dict[str, Any]:
    """Build the code-health BI report over the repository's history, after the tests."""
    from caelum_dask.bi.steps import report_step

    summary = report_step(str(BI_DEFINITION), roots=[os.path.abspath(path)], since=since,
                          out=os.path.abspath(out))
    return {"out": summary["out"], "tables": {k: v["rows"] for k, v in summary["tables"].items()},
            "problems": len(summary["problems"])}


@task
def summarise(analysis: dict[str, Any], tests: dict[str, Any], bi: dict[str, Any]) -> dict[str, Any]:
    """One dict a person (or the MCP client) can read."""
    return {
        "files": analysis.get("files"),
        "functions": analysis.get("functions"),
        "mean_complexity": analysis.get("mean_complexity"),
        "worst_functions": analysis.get("worst"),
        "tests": tests["counts"],
        "tests_exit_code": tests["exit_code"],
        "failed_tests": tests["failed"],
        "report": bi["out"],
        "tables": bi["tables"],
    }


with Workflow("code-health",
              params={"path": ".", "pytest_args": "", "since": "all", "out": "reports/code-health"},
              description="analysis -> tests -> BI report for one repository") as wf:
    analysis = analyze(wf.param("path"))
    tests = run_tests(wf.param("path"), wf.param("pytest_args"), analysis)
    bi = report(wf.param("path"), wf.param("since"), wf.param("out"), tests)
    summarise(analysis, tests, bi)

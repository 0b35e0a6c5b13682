"""Business intelligence: dev analytics collected on every machine and aggregated centrally.

Python API::

    from caelum_dask import connect
    from caelum_dask.bi import collect, run_report, metrics

    with connect() as client:
        data = collect(client, roots=["~/src"], since=parse_since("90d"))   # Dataset of DataFrames
        churn = metrics.churn(data)                                          # any built-in table
        result = run_report("bi/weekly_team.py", client=client, out="reports/")
        result.tables["activity"]                                            # DataFrames

See docs/bi.md for tables, definitions and the file locations read.
"""

from __future__ import annotations

from caelum_dask.bi import metrics
from caelum_dask.bi.collect import collect, collect_here, submit_collectors
from caelum_dask.bi.dataset import Dataset, parse_since
from caelum_dask.bi.definition import ReportDefinition, load
from caelum_dask.bi.options import BIOptions
from caelum_dask.bi.report import ReportResult, run_report

__all__ = ["BIOptions", "Dataset", "ReportDefinition", "ReportResult", "collect", "collect_here", "load", "metrics",
           "parse_since", "run_report", "submit_collectors"]

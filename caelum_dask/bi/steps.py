"""Workflow step: run a BI report as one task of a workflow (e.g. the code-health workflow)."""

from __future__ import annotations

from typing import Any

from caelum_dask.cluster import step_client
from caelum_dask.workflow.runtime import subjob_progress


def report_step(report_path: str, **opts: Any) -> dict[str, Any]:
    """Run ``report_path`` and return a small JSON-able summary (the ``--json`` shape).

    Inside a Dask task the collectors are submitted through ``worker_client()`` (the task
    secedes while they run); outside one, :func:`caelum_dask.connect` is used. ``opts`` are
    :func:`~caelum_dask.bi.report.run_report` keywords: roots, since, out, per.
    """
    from caelum_dask.bi.report import run_report

    with step_client() as client:
        opts.setdefault("progress", subjob_progress())  # its steps become the workflow's status lines
        return run_report(report_path, client=client, **opts).to_dict()

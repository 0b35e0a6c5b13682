"""The analysis as a workflow step (used by workflows/code_health.py)."""

from __future__ import annotations

from typing import Any

from caelum_dask.cluster import step_client


def analyze_step(path: str, **opts: Any) -> dict[str, Any]:
    """Analyse ``path`` and return the run's JSON-able summary.

    Inside a Dask task the sub-work is submitted through ``worker_client()`` (the step's
    thread secedes while the batches run); outside one, :func:`caelum_dask.connect` is used.
    ``opts`` are :func:`caelum_dask.analysis.analyze` keywords, plus ``out`` (a folder for the
    CSV/Parquet/HTML export, whose paths are added to the summary as ``outputs``).
    """
    from caelum_dask.analysis.engine import analyze
    from caelum_dask.analysis.report import export

    out = opts.pop("out", None)
    with step_client() as client:
        result = analyze(path, client=client, **opts)
    summary = dict(result.summary)
    if out:
        summary["outputs"] = export(result, out)
    return summary

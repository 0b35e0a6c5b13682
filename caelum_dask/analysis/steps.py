"""The analysis as a workflow step (used by workflows/code_health.py)."""

from __future__ import annotations

from typing import Any

from caelum_dask.cluster import step_client
from caelum_dask.workflow.runtime import subjob_progress


def analyze_step(path: str, **opts: Any) -> dict[str, Any]:
    """Analyse ``path`` and return the run's JSON (:meth:`AnalysisResult.to_dict`).

    Inside a Dask task the sub-work is submitted through ``worker_client()`` (the step's
    thread secedes while the batches run); outside one, :func:`caelum_dask.connect` is used.
    ``opts`` are :func:`caelum_dask.analysis.analyze` keywords, ``out`` included (a folder for
    the CSV/Parquet/HTML export, whose paths the summary lists as ``outputs``). The step's
    options are resolved where it runs: a workflow passes what must not depend on the worker's
    configuration explicitly.
    """
    from caelum_dask.analysis.engine import analyze

    with step_client() as client:
        opts.setdefault("progress", subjob_progress())  # its counts become the workflow's status lines
        result = analyze(path, client=client, **opts)
    return result.to_dict()

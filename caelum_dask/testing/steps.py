"""The test-suite step for workflows (e.g. the code-health workflow).

``test_step(path, **opts)`` runs ``caelum test`` on ``path`` and returns a small JSON-able
summary. Inside a Dask task it submits its shards through ``distributed.worker_client()``
(the task secedes from the worker's thread pool while the shards run, so it cannot deadlock
a small cluster); outside one it uses :func:`caelum_dask.connect`.
"""

from __future__ import annotations

from typing import Any

from caelum_dask.cluster import step_client
from caelum_dask.workflow.runtime import subjob_progress
from caelum_dask.testing.runner import TestOptions, run_tests


def test_step(path: str, **opts: Any) -> dict[str, Any]:
    """Run the suite at ``path``; ``opts`` are :class:`TestOptions` fields (shards, dist, junit…).

    Returns ``{run_id, exit_code, counts, duration, junit, failed: [nodeid, …], flaky: [...]}``.
    """
    options = TestOptions(**opts)
    with step_client() as client:
        result = run_tests(path, options, client=client, progress=subjob_progress())
    return {
        "run_id": result.run_id, "exit_code": result.exit_code, "counts": result.counts,
        "duration": result.duration, "junit": result.junit,
        "failed": result.nodeids("failed", "error"), "flaky": result.nodeids("flaky"),
    }


test_step.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name

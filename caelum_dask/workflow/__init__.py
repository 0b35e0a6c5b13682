"""Workflows: Python/networkx DAGs compiled to one Dask graph, with a run store, caching and resume.

::

    from caelum_dask.workflow import Workflow, task, run

    @task
    def square(x: int) -> int:
        return x * x

    @task
    def total(xs: list[int]) -> int:
        return sum(xs)

    with Workflow("squares", params={"n": 10}) as wf:
        total(square.map(range(10)))

    result = run(wf)                       # RunResult: state, computed/cached/failed, results
    result["total"]                        # -> 285

See docs/workflows.md for node attributes, options, the CLI and the event/JSON shapes.
"""

from __future__ import annotations

from caelum_dask.workflow.model import REQUIRED, MapRef, ParamRef, Ref, Task, Workflow, task
from caelum_dask.workflow.loader import load_workflow
from caelum_dask.workflow.runner import RunResult, run, run_file
from caelum_dask.workflow.runtime import TaskTimeout, worker_resources
from caelum_dask.workflow.store import RunStore
from caelum_dask.workflow.validation import WorkflowInvalid, validate

__all__ = [
    "REQUIRED", "MapRef", "ParamRef", "Ref", "RunResult", "RunStore", "Task", "TaskTimeout", "Workflow",
    "WorkflowInvalid", "load_workflow", "run", "run_file", "task", "validate", "worker_resources",
]

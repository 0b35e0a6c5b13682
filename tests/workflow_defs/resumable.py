"""A test workflow: a -> b -> c -> d plus an independent e; c fails while the marker file exists."""

import os

from caelum_dask.workflow import Workflow, task


@task
def a(x: int) -> int:
    return x + 1


@task
def b(v: int) -> int:
    return v * 2


@task
def c(v: int, marker: str) -> int:
    if os.path.exists(marker):
        raise RuntimeError(f"marker {marker} present")
    return v + 100


@task
def d(v: int) -> int:
    return v - 1


@task
def e(x: int) -> int:
    return x * 10


with Workflow("resumable", params={"x": 1, "marker": ""}) as wf:
    d(c(b(a(wf.param("x"))), wf.param("marker")))
    e(wf.param("x"))

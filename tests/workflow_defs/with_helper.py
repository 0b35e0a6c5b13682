"""A workflow that imports a helper module from its own folder."""

from _wf_helper import triple

from caelum_dask.workflow import Workflow, task


@task
def tripled(x: int) -> int:
    return triple(x)


with Workflow("with-helper", params={"x": 4}) as wf:
    tripled(wf.param("x"))

"""Defines tasks but no workflow."""
from caelum_dask.workflow import task


@task
def lonely() -> int:
    return 1

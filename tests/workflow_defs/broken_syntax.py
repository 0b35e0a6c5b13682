from caelum_dask.workflow import Workflow, task

def oops(:
    pass

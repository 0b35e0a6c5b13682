"""caelum-dask: the machines on a developer's network as one Dask cluster.

The public API of the foundation::

    from caelum_dask import connect, machines, ResourceRequirements

    with connect() as client:            # --scheduler / CAELUM_SCHEDULER / config / embedded
        print(machines(client))          # MachineNode dicts from the scheduler's registry
        req = ResourceRequirements(gpu_required=True)
        future = client.submit(fn, **req.submit_kwargs(client))
"""

from __future__ import annotations

__version__ = "0.1.0"

from caelum_dask import config as _config  # noqa: E402,F401  (loads the caelum defaults)
from caelum_dask.cluster import connect, machines, register_service  # noqa: E402
from caelum_dask.errors import (  # noqa: E402
    CaelumError,
    InvalidInput,
    PortTaken,
    SchedulerUnreachable,
    UnsatisfiableRequirement,
)
from caelum_dask.requirements import ResourceRequirements  # noqa: E402

__all__ = [
    "CaelumError",
    "InvalidInput",
    "PortTaken",
    "ResourceRequirements",
    "SchedulerUnreachable",
    "UnsatisfiableRequirement",
    "__version__",
    "connect",
    "machines",
    "register_service",
]

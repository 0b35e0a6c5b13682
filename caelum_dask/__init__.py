"""caelum-dask: the machines on a developer's network as one Dask cluster.

The public API of the foundation::

    from caelum_dask import connect, machines, ResourceRequirements

    with connect() as client:            # --scheduler / CAELUM_SCHEDULER / config / embedded
        print(machines(client))          # MachineNode dicts from the scheduler's registry
        req = ResourceRequirements(gpu_required=True)
        future = client.submit(fn, **req.submit_kwargs(client))
"""

from __future__ import annotations

from caelum_dask.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {"connect": "caelum_dask.cluster", "machines": "caelum_dask.cluster",
         "register_service": "caelum_dask.cluster", "ResourceRequirements": "caelum_dask.requirements",
         **dict.fromkeys(("CaelumError", "InvalidInput", "PortTaken", "SchedulerUnreachable",
                          "UnsatisfiableRequirement"), "caelum_dask.errors")}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())

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

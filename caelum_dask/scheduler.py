"""Scheduler preload: ``dask scheduler --preload caelum_dask.scheduler``.

Installs the machine registry plugin (and whatever scheduler-side pieces later capabilities
add, such as dashboard pages). Dask runs preloads before the scheduler starts serving, so a
plain ``dask scheduler`` with this preload is a complete caelum scheduler.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from caelum_dask import revocation
from caelum_dask.registry import MachineRegistry

# Modules with an ``install(scheduler)`` function, installed when the capability is present.
SCHEDULER_EXTENSIONS: tuple[str, ...] = ("caelum_dask.dashboard", "caelum_dask.learned")


def dask_setup(scheduler: Any) -> None:
    """Preload entry point (Dask calls it with the Scheduler)."""
    revocation.install(scheduler)  # first: revoked certificates are refused from now on
    scheduler.add_plugin(MachineRegistry())
    for install in _extensions():
        install(scheduler)


def _extensions() -> list[Any]:
    """Scheduler-side installers of the capabilities (dashboard pages, …), when present."""
    installers = []
    for module_name in SCHEDULER_EXTENSIONS:
        if importlib.util.find_spec(module_name) is not None:
            installers.append(importlib.import_module(module_name).install)
    return installers

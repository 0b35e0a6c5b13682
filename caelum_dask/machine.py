"""MachineNode: one physical machine of the cluster, however many workers it runs.

This is the seed plan's data model: identity (id, hostname, ip_address), what it runs
(platform, os, python), what it has (resources), what listens where (services) and whether it
is there (status, last_heartbeat). Workers describe their machine once at registration through
Dask's ``startup_information``; the scheduler's registry merges workers of one host into one
MachineNode.
"""

from __future__ import annotations

import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: owner-active: a desktop worker's owner is using the machine; its worker retired (or is
#: retiring) and it rejoins when the owner is away (caelum_dask.desktop)
MachineStatus = Literal["online", "busy", "offline", "owner-active"]


def machine_id(hostname: str, ip_address: str) -> str:
    """Stable identity of a machine: its hostname and the address the scheduler sees.

    The IP is part of the identity because hosts in separate network namespaces (and cloned
    VMs) often share a hostname.
    """
    return f"{hostname}@{ip_address}"


@dataclass
class WorkerEntry:
    """One Dask worker process on a machine."""

    address: str
    name: str
    nthreads: int
    memory_limit: int
    resources: dict[str, float]
    gpu_indices: list[int] = field(default_factory=list)
    slot: int | None = None
    #: processes its own command declared (``--nworkers``); None: not a caelum worker
    slots: int | None = None
    #: resource names given with ``--resources`` (never re-split)
    explicit: list[str] = field(default_factory=list)


@dataclass
class MachineNode:
    """A machine in the registry; ``to_dict`` is the stable JSON shape ``caelum status`` prints."""

    id: str
    hostname: str
    ip_address: str
    platform: str
    os: str
    python: str
    resources: dict[str, Any]
    services: dict[str, int] = field(default_factory=dict)
    status: MachineStatus = "online"
    last_heartbeat: float | None = None
    first_seen: float | None = None
    caelum_version: str | None = None
    workers: dict[str, WorkerEntry] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["workers"] = [asdict(w) for w in self.workers.values()]
        return data


def describe_local_machine() -> dict[str, Any]:
    """The fields of a MachineNode that only the machine itself can tell."""
    from caelum_dask import __version__

    return {
        "hostname": socket.gethostname(),
        "platform": platform.system().lower(),
        "os": platform.platform(),
        "python": ".".join(map(str, sys.version_info[:3])),
        "caelum_version": __version__,
    }

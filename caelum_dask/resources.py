"""What this machine has, and the Dask resources each worker process advertises.

Dask schedules on *resources*: abstract quantities a worker declares (``--resources GPU=1``)
and tasks consume (``resources={"GPU": 1}``). caelum detects them so nobody has to type them:
cores and memory and disk through psutil, GPUs through NVML. Several worker processes on one
machine split the machine (each GPU goes to exactly one process; cores, memory and disk are
divided) so that the cluster never promises more than the machine has.
"""

from __future__ import annotations

import math
import os
import pathlib
import platform
from dataclasses import dataclass, field
from typing import Any

import psutil

from caelum_dask.nvml import GPUInfo, describe_gpus

# The resource names caelum advertises; defined here once, used everywhere.
CPU = "CPU"
MEMORY_GB = "MEMORY_GB"
GPU = "GPU"
GPU_MEMORY_GB = "GPU_MEMORY_GB"
DISK_GB = "DISK_GB"
RESOURCE_NAMES: tuple[str, ...] = (CPU, MEMORY_GB, GPU, GPU_MEMORY_GB, DISK_GB)

_GIB = 1024**3


@dataclass(frozen=True)
class MachineResources:
    """The whole machine: cores, memory, GPUs and free disk."""

    cpu_cores: int
    memory_gb: float
    gpus: tuple[GPUInfo, ...] = field(default_factory=tuple)
    disk_space_gb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_cores": self.cpu_cores,
            "memory_gb": self.memory_gb,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "disk_space_gb": self.disk_space_gb,
        }


def detect(disk_path: str | os.PathLike[str] | None = None) -> MachineResources:
    """Measure this machine: logical cores, total memory, GPUs (NVML) and free disk."""
    path = pathlib.Path(disk_path) if disk_path else pathlib.Path.cwd()
    while not path.exists() and path != path.parent:
        path = path.parent
    return MachineResources(
        cpu_cores=os.cpu_count() or 1,
        memory_gb=round(psutil.virtual_memory().total / _GIB, 2),
        gpus=tuple(describe_gpus()),
        disk_space_gb=round(psutil.disk_usage(str(path)).free / _GIB, 2),
    )


@dataclass(frozen=True)
class WorkerShare:
    """The part of a machine one worker process advertises."""

    resources: dict[str, float]
    gpu_indices: tuple[int, ...]


def share_for_worker(machine: MachineResources, slot: int, slots: int) -> WorkerShare:
    """The resources worker process number ``slot`` of ``slots`` on ``machine`` advertises.

    GPUs are dealt round-robin (process ``slot`` gets GPUs ``slot, slot+slots, …``) so each GPU
    belongs to exactly one process; cores, memory and disk are divided evenly. A process with
    no GPU advertises no GPU resources at all, so GPU tasks never land on it.
    """
    if slots < 1 or not 0 <= slot < slots:
        raise ValueError(f"slot {slot} of {slots} is not a valid worker slot")
    gpus = [gpu for gpu in machine.gpus if gpu.index % slots == slot]
    resources: dict[str, float] = {
        CPU: max(1, machine.cpu_cores // slots) if machine.cpu_cores >= slots else 1,
        MEMORY_GB: math.floor(machine.memory_gb / slots * 100) / 100,
        DISK_GB: math.floor(machine.disk_space_gb / slots * 100) / 100,
    }
    if gpus:
        resources[GPU] = len(gpus)
        resources[GPU_MEMORY_GB] = round(sum(g.memory_gb for g in gpus), 2)
    return WorkerShare(resources=resources, gpu_indices=tuple(g.index for g in gpus))


def merge_resources(
    detected: dict[str, float], explicit: dict[str, float]
) -> dict[str, float]:
    """Explicit ``--resources`` win over detection, name by name."""
    merged = dict(detected)
    merged.update(explicit)
    return merged


def platform_name() -> str:
    """The platform label used for placement (``linux``, ``darwin``, ``windows``)."""
    return platform.system().lower()

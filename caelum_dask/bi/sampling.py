"""A resource sample of this machine (psutil, and NVML through caelum_dask.nvml)."""

from __future__ import annotations

import time
from typing import Any

import psutil

from caelum_dask import nvml


def sample() -> list[dict[str, Any]]:
    """One row for the CPU/memory/disk of this machine and one per GPU NVML reports."""
    now = time.time()
    vm = psutil.virtual_memory()
    rows: list[dict[str, Any]] = [{
        "time": now, "device": "cpu", "cpu_percent": psutil.cpu_percent(interval=0.1),
        "load_1m": psutil.getloadavg()[0], "memory_used_gb": (vm.total - vm.available) / 1024**3,
        "memory_total_gb": vm.total / 1024**3, "gpu_utilization": None, "gpu_memory_free_gb": None,
    }]
    for gpu in nvml.describe_gpus():
        rows.append({"time": now, "device": f"gpu{gpu.index}:{gpu.name}", "cpu_percent": None,
                     "load_1m": None, "memory_used_gb": None, "memory_total_gb": gpu.memory_gb,
                     "gpu_utilization": gpu.utilization, "gpu_memory_free_gb": gpu.memory_free_gb})
    return rows

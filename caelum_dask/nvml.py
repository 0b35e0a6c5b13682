"""GPU description through NVML (the ``pynvml`` module of nvidia-ml-py).

NVML is the driver's own management library: it reports what is physically there (name,
memory, UUID, utilisation) without initialising CUDA. A machine without an NVIDIA driver simply
has no GPUs; nothing here raises or logs loudly for that case.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)

_GIB = 1024**3


@dataclass(frozen=True)
class GPUInfo:
    """One GPU as NVML sees it."""

    index: int
    name: str
    memory_gb: float
    uuid: str
    memory_free_gb: float | None = None
    utilization: float | None = None  # percent of time a kernel was running, 0–100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_nvml() -> Any | None:
    """Return an initialised ``pynvml`` module, or None when no NVIDIA driver is present."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, …
        logger.debug("NVML unavailable: %s", exc)
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def describe_gpus(nvml: Any | None = None) -> list[GPUInfo]:
    """Describe every GPU on this machine; an empty list where there is no NVIDIA driver.

    ``nvml`` is the ``pynvml`` module (or anything with its interface); by default the real
    one is loaded and initialised.
    """
    if nvml is None:
        nvml = _load_nvml()
        if nvml is None:
            return []
    gpus: list[GPUInfo] = []
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception as exc:
        logger.debug("NVML device count failed: %s", exc)
        return []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: float | None = float(
                    nvml.nvmlDeviceGetUtilizationRates(handle).gpu
                )
            except Exception:  # not supported on some boards (MIG, vGPU)
                utilization = None
            gpus.append(
                GPUInfo(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_gb=round(memory.total / _GIB, 2),
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    memory_free_gb=round(memory.free / _GIB, 2),
                    utilization=utilization,
                )
            )
        except Exception as exc:
            logger.warning("NVML could not describe GPU %d: %s", index, exc)
    return gpus

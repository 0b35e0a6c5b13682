"""Resource detection and the per-process split, without a cluster."""

from __future__ import annotations

import os
import types

import psutil
import pytest

from caelum_dask import nvml, resources
from caelum_dask.nvml import GPUInfo
from caelum_dask.resources import CPU, DISK_GB, GPU, GPU_MEMORY_GB, MEMORY_GB, MachineResources


def test_detect_measures_this_machine(tmp_path):
    machine = resources.detect(tmp_path)
    assert machine.cpu_cores == os.cpu_count()
    total = psutil.virtual_memory().total / 1024**3
    assert machine.memory_gb == pytest.approx(total, rel=0.01)
    assert machine.disk_space_gb > 0


def _gpus(n: int) -> tuple[GPUInfo, ...]:
    return tuple(GPUInfo(index=i, name=f"Fake {i}", memory_gb=24.0, uuid=f"GPU-{i}") for i in range(n))


def test_single_process_gets_the_whole_machine():
    machine = MachineResources(cpu_cores=8, memory_gb=32.0, gpus=_gpus(2), disk_space_gb=100.0)
    share = resources.share_for_worker(machine, 0, 1)
    assert share.resources == {CPU: 8, MEMORY_GB: 32.0, DISK_GB: 100.0, GPU: 2, GPU_MEMORY_GB: 48.0}
    assert share.gpu_indices == (0, 1)


def test_processes_split_cores_memory_and_deal_gpus_once_each():
    machine = MachineResources(cpu_cores=8, memory_gb=32.0, gpus=_gpus(3), disk_space_gb=100.0)
    shares = [resources.share_for_worker(machine, slot, 2) for slot in range(2)]
    assert [s.gpu_indices for s in shares] == [(0, 2), (1,)]
    assert sum(s.resources[CPU] for s in shares) == 8
    assert sum(s.resources[MEMORY_GB] for s in shares) <= 32.0
    assert sum(s.resources[GPU] for s in shares) == 3
    assert shares[1].resources[GPU_MEMORY_GB] == 24.0


def test_process_without_gpu_advertises_no_gpu_resources():
    machine = MachineResources(cpu_cores=4, memory_gb=16.0, gpus=_gpus(1), disk_space_gb=10.0)
    share = resources.share_for_worker(machine, 1, 2)
    assert GPU not in share.resources and GPU_MEMORY_GB not in share.resources


def test_invalid_slot_is_rejected():
    machine = MachineResources(cpu_cores=4, memory_gb=16.0)
    with pytest.raises(ValueError, match="slot 2 of 2"):
        resources.share_for_worker(machine, 2, 2)


def test_explicit_resources_win_over_detection():
    merged = resources.merge_resources({CPU: 4, GPU: 0.0, MEMORY_GB: 8}, {GPU: 1, "FOO": 2})
    assert merged == {CPU: 4, GPU: 1, MEMORY_GB: 8, "FOO": 2}


# -- NVML ------------------------------------------------------------------------------------

class _NVMLError(Exception):
    pass


def test_no_driver_means_no_gpus_quietly(monkeypatch, caplog):
    fake = types.SimpleNamespace(nvmlInit=lambda: (_ for _ in ()).throw(_NVMLError("Driver Not Loaded")))
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    assert nvml.describe_gpus() == []
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_real_nvml_on_this_machine_does_not_raise():
    # Here (no NVIDIA driver) this is []; on a GPU machine it lists the GPUs.
    gpus = nvml.describe_gpus()
    assert isinstance(gpus, list)
    assert all(isinstance(g, GPUInfo) for g in gpus)


def _fake_nvml(devices: list[dict], utilization_supported: bool = True) -> types.SimpleNamespace:
    """An object with pynvml's function names, returning what the driver would."""

    def util(handle):
        if not utilization_supported:
            raise _NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=devices[handle]["util"], memory=0)

    return types.SimpleNamespace(
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: devices[h]["name"].encode(),
        nvmlDeviceGetUUID=lambda h: devices[h]["uuid"],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(
            total=devices[h]["total"], free=devices[h]["free"], used=devices[h]["total"] - devices[h]["free"]
        ),
        nvmlDeviceGetUtilizationRates=util,
    )


def test_gpu_description_from_nvml_readings():
    fake = _fake_nvml([
        {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-aaaa", "total": 80 * 1024**3, "free": 60 * 1024**3, "util": 37},
        {"name": "NVIDIA RTX 4090", "uuid": "GPU-bbbb", "total": 24 * 1024**3, "free": 24 * 1024**3, "util": 0},
    ])
    gpus = nvml.describe_gpus(fake)
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].uuid == "GPU-aaaa"
    assert gpus[0].memory_gb == 80.0 and gpus[0].memory_free_gb == 60.0 and gpus[0].utilization == 37.0
    assert gpus[1].to_dict()["memory_gb"] == 24.0


def test_gpu_without_utilization_support_is_still_described():
    fake = _fake_nvml([{"name": "A100 MIG", "uuid": "MIG-1", "total": 10 * 1024**3, "free": 5 * 1024**3, "util": 0}],
                      utilization_supported=False)
    (gpu,) = nvml.describe_gpus(fake)
    assert gpu.utilization is None and gpu.memory_gb == 10.0

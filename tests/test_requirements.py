"""ResourceRequirements -> Dask submit arguments, and the can-never-run check."""

from __future__ import annotations

import pytest

from caelum_dask import ResourceRequirements, UnsatisfiableRequirement
from caelum_dask.resources import CPU, GPU, GPU_MEMORY_GB, MEMORY_GB


def _machine(mid, platform, workers, status="online"):
    host, ip = mid.split("@")
    return {"id": mid, "hostname": host, "ip_address": ip, "platform": platform, "status": status,
            "workers": [{"address": a, "resources": r} for a, r in workers]}


MACHINES = [
    _machine("ws@10.0.0.1", "linux", [("tcp://10.0.0.1:1", {CPU: 8, MEMORY_GB: 32})]),
    _machine("gpu@10.0.0.2", "linux", [("tcp://10.0.0.2:1", {CPU: 16, MEMORY_GB: 64, GPU: 1, GPU_MEMORY_GB: 24})]),
    _machine("mac@10.0.0.3", "darwin", [("tcp://10.0.0.3:1", {CPU: 10, MEMORY_GB: 16})]),
    _machine("old@10.0.0.4", "linux", [("tcp://10.0.0.4:1", {CPU: 64, GPU: 8, GPU_MEMORY_GB: 640})], status="offline"),
]


def test_consumables_become_dask_resources():
    req = ResourceRequirements(cpu_cores=2, memory_gb=4, gpu_required=True, gpu_memory_gb=16)
    assert req.dask_resources() == {CPU: 2.0, MEMORY_GB: 4.0, GPU: 1.0, GPU_MEMORY_GB: 16.0}
    assert req.kwargs_for(req.check(MACHINES)) == {"resources": req.dask_resources()}


def test_gpu_requirement_selects_only_gpu_workers():
    assert ResourceRequirements(gpu_required=True).check(MACHINES) == ["tcp://10.0.0.2:1"]


def test_placement_constraints_become_worker_restrictions():
    req = ResourceRequirements(platform="Darwin")
    kwargs = req.kwargs_for(req.check(MACHINES))
    assert kwargs == {"workers": ["tcp://10.0.0.3:1"], "allow_other_workers": False}
    assert ResourceRequirements(machine="ws").check(MACHINES) == ["tcp://10.0.0.1:1"]
    assert ResourceRequirements(machine="10.0.0.2").check(MACHINES) == ["tcp://10.0.0.2:1"]


def test_impossible_requirement_names_requirement_and_offers():
    with pytest.raises(UnsatisfiableRequirement) as err:
        ResourceRequirements(gpus=2).check(MACHINES)
    text = str(err.value)
    assert "gpus=2" in text and "GPU=1" in text and "gpu (linux)" in text
    assert "offline" not in text  # offline machines are not offered


def test_offline_machines_do_not_count():
    with pytest.raises(UnsatisfiableRequirement):
        ResourceRequirements(gpus=8).check(MACHINES)


def test_from_value_rejects_unknown_fields():
    assert ResourceRequirements.from_value({"gpu_required": True}).gpu_required
    with pytest.raises(UnsatisfiableRequirement, match="unknown resource requirement"):
        ResourceRequirements.from_value({"gpu_ram": 3})

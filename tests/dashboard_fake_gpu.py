"""Test-only worker preload: a machine with an NVML GPU, on a box that has none.

Loaded after ``caelum_dask.worker`` (``--preload caelum_dask.worker --preload THIS_FILE``), it
wraps the worker's ``startup_information["caelum"]`` machine description, the message the
real preload sends at registration, so the scheduler's registry receives exactly what a worker
on a GPU machine would send: another hostname and one GPU as NVML describes it. Nothing in the
registry or the dashboard is faked.
"""

from __future__ import annotations

from typing import Any

from caelum_dask.worker import STARTUP_KEY

HOSTNAME = "gpu-box"
FAKE_GPU = {
    "index": 0,
    "name": "NVIDIA FakeGPU 24GB (test)",
    "memory_gb": 24.0,
    "uuid": "GPU-00000000-fake-0000-0000-000000000000",
    "memory_free_gb": 20.0,
    "utilization": 42.0,
}


def dask_setup(worker: Any) -> None:
    original = worker.startup_information[STARTUP_KEY]

    def describe(w: Any) -> dict[str, Any]:
        description = dict(original(w))
        description["hostname"] = HOSTNAME
        description["resources"] = {**description["resources"], "gpus": [FAKE_GPU]}
        description["gpu_indices"] = [0]
        return description

    worker.startup_information[STARTUP_KEY] = describe

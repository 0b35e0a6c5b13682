"""A GPU-tagged step with CPU fallback.

    caelum run workflows/gpu_step.py                   # GPU worker if any, else CPU
    caelum run workflows/gpu_step.py -p size=512

``multiply`` asks for a GPU (``resources={"gpu_required": True}``): when a machine with a GPU
worker is in the cluster (auto-detected through NVML, or ``dask worker --resources GPU=1``)
the step is placed on it; ``fallback=True`` lets it run on any worker when none has a GPU
(without it the run would stop before starting with a clear "no machine can meet" error).
The step looks at the worker it landed on and uses CuPy or PyTorch there when installed.
"""

from __future__ import annotations

import random

from caelum_dask.workflow import Workflow, task, worker_resources


@task
def make_matrix(size: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.random() for _ in range(size)] for _ in range(size)]


def _gpu_matmul(a: list[list[float]]) -> tuple[str, float] | None:
    try:  # CuPy first, then PyTorch; either needs a CUDA device on this worker
        import cupy as cp  # type: ignore[import-not-found]

        m = cp.asarray(a)
        return "gpu:cupy", float((m @ m).sum())
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch  # type: ignore[import-not-found]

        if torch.cuda.is_available():
            m = torch.tensor(a, device="cuda", dtype=torch.float64)
            return "gpu:torch", float((m @ m).sum().item())
    except Exception:  # noqa: BLE001
        pass
    return None


@task(resources={"gpu_required": True}, fallback=True, retries=1)
def multiply(a: list[list[float]]) -> dict[str, object]:
    """A @ A on the GPU when this worker has one, else on the CPU (numpy, or pure Python)."""
    has_gpu = worker_resources().get("GPU", 0) >= 1
    done = _gpu_matmul(a) if has_gpu else None
    if done is None:
        try:
            import numpy as np

            m = np.asarray(a)
            done = ("cpu:numpy", float((m @ m).sum()))
        except ImportError:
            n = len(a)
            total = sum(a[i][k] * a[k][j] for i in range(n) for j in range(n) for k in range(n))
            done = ("cpu:python", float(total))
    device, checksum = done
    return {"device": device, "gpu_worker": has_gpu, "checksum": round(checksum, 6), "size": len(a)}


@task
def report(result: dict[str, object]) -> str:
    return f"{result['size']}x{result['size']} product on {result['device']}: checksum {result['checksum']}"


with Workflow("gpu-step", params={"size": 256, "seed": 7}, description="GPU step with CPU fallback") as wf:
    report(multiply(make_matrix(wf.param("size"), wf.param("seed"))))

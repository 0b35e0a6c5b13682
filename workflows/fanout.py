"""Fan-out / fan-in data job: split a data set into chunks, summarise each chunk in parallel,
combine the summaries.

    caelum run workflows/fanout.py                     # 100,000 numbers in 20 chunks
    caelum run workflows/fanout.py -p n=1000000 -p chunks=50

The chunks are produced at run time by ``split``, so ``chunk_stats.map(...)`` fans out when
they are known (one task per chunk); ``combine`` is the reduce step. Re-running with the same
parameters reuses every cached result; changing ``n`` recomputes everything downstream of it.
"""

from __future__ import annotations

import math
import random

from caelum_dask.workflow import Workflow, task


@task
def generate(n: int, seed: int) -> list[float]:
    """The data set: n pseudo-random measurements (deterministic for a seed)."""
    rng = random.Random(seed)
    return [rng.gauss(100.0, 15.0) for _ in range(n)]


@task
def split(values: list[float], chunks: int) -> list[list[float]]:
    size = max(1, math.ceil(len(values) / chunks))
    return [values[i:i + size] for i in range(0, len(values), size)]


@task(retries=2, retry_delay=0.2)
def chunk_stats(chunk: list[float]) -> dict[str, float]:
    """Per-chunk summary: count, sum, sum of squares, min, max."""
    return {"count": len(chunk), "sum": math.fsum(chunk), "sumsq": math.fsum(x * x for x in chunk),
            "min": min(chunk), "max": max(chunk)}


@task
def combine(stats: list[dict[str, float]]) -> dict[str, float]:
    """The reduce step: merge chunk summaries into mean / standard deviation / range."""
    count = sum(s["count"] for s in stats)
    total = math.fsum(s["sum"] for s in stats)
    mean = total / count
    var = max(0.0, math.fsum(s["sumsq"] for s in stats) / count - mean * mean)
    return {"count": count, "mean": round(mean, 6), "std": round(math.sqrt(var), 6),
            "min": min(s["min"] for s in stats), "max": max(s["max"] for s in stats), "chunks": len(stats)}


with Workflow("fanout", params={"n": 100_000, "chunks": 20, "seed": 42},
              description="fan-out/fan-in summary statistics") as wf:
    data = generate(wf.param("n"), wf.param("seed"))
    parts = split(data, wf.param("chunks"))
    combine(chunk_stats.map(parts))

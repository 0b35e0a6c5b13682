"""Benchmark of the LLM pool against fake Ollama servers (fixed latency, one request at a time).

Run:  PYTHONPATH=. python benchmarks/llm_pool.py [--latency 0.05] [--per-backend 40]

Three measurements, each against a baseline run in the same process:

1. throughput: N = 1, 2, 4 backends behind the pool (async API, 4·N concurrent callers)
   versus a single backend called directly; goal ≥ 0.9·N×;
2. routing overhead per request: p50 of pool.agenerate / pool.generate / `caelum llm serve`
   versus calling the backend directly with httpx (zero-latency backend, sequential);
   goal: p50 overhead of the Python API ≤ 2 ms;
3. warm-model hit rate: 4 backends that each keep one model in memory (max_loaded=1,
   loading costs ``--load-latency``), requests for 4 models in random order; the pool's
   warm-first routing versus uniform random routing (a hit = Ollama reported no model load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fake_ollama import FakeOllama  # noqa: E402
from llm_fixtures import Served  # noqa: E402

from caelum_dask.llm import LLMPool  # noqa: E402
from caelum_dask.llm.router import RouterSettings  # noqa: E402

MODEL = "llama3.2:latest"


async def _drive(call, total: int, concurrency: int) -> float:  # noqa: ANN001
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


def throughput(latency: float, per_backend: int) -> list[tuple[int, float, float]]:
    single = FakeOllama(models=[MODEL], loaded=[MODEL], latency=latency, parallel=1).start()

    async def direct() -> float:
        async with httpx.AsyncClient(timeout=60) as http:
            async def call(i: int) -> None:
                r = await http.post(f"{single.url}/api/generate", json={"model": MODEL, "prompt": f"p{i}", "stream": False})
                r.raise_for_status()
            return await _drive(call, per_backend, 4)

    base = asyncio.run(direct())
    single.kill()
    rows = []
    for n in (1, 2, 4):
        fakes = [FakeOllama(models=[MODEL], loaded=[MODEL], latency=latency, parallel=1).start() for _ in range(n)]

        async def pooled(fakes: list[FakeOllama] = fakes, n: int = n) -> float:
            async with LLMPool(backends=[f.url for f in fakes], refresh_interval=0.5) as pool:
                await pool.agenerate(MODEL, "warm-up")
                return await _drive(lambda i: pool.agenerate(MODEL, f"p{i}"), per_backend * n, 4 * n)

        rate = asyncio.run(pooled())
        spread = [len(f.requests) for f in fakes]
        for f in fakes:
            f.kill()
        rows.append((n, rate, rate / base))
        print(f"  N={n}: pool {rate:6.1f} req/s vs single direct {base:6.1f} req/s -> {rate / base:4.2f}x "
              f"(goal >= {0.9 * n:.1f}x); requests per backend {spread}")
    return rows


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def overhead(requests: int) -> dict[str, float]:
    fake = FakeOllama(models=[MODEL], loaded=[MODEL], latency=0.0, tokens=1).start()
    body = {"model": MODEL, "prompt": "x", "stream": False}
    out: dict[str, float] = {}

    async def measure_async() -> tuple[list[float], list[float]]:
        direct, pooled = [], []
        async with httpx.AsyncClient() as http, LLMPool(backends=[fake.url]) as pool:
            await pool.agenerate(MODEL, "x")
            await http.post(f"{fake.url}/api/generate", json=body)
            for _ in range(requests):  # interleaved so that noise hits both alike
                t = time.perf_counter()
                (await http.post(f"{fake.url}/api/generate", json=body)).raise_for_status()
                direct.append(time.perf_counter() - t)
                t = time.perf_counter()
                await pool.agenerate(MODEL, "x")
                pooled.append(time.perf_counter() - t)
        return direct, pooled

    direct, pooled = asyncio.run(measure_async())
    out["direct_p50_ms"] = _p50(direct)
    out["async_p50_ms"] = _p50(pooled)

    sync_direct, sync_pool = [], []
    with httpx.Client() as http, LLMPool(backends=[fake.url]) as pool:
        pool.generate(MODEL, "x")
        http.post(f"{fake.url}/api/generate", json=body)
        for _ in range(requests):
            t = time.perf_counter()
            http.post(f"{fake.url}/api/generate", json=body).raise_for_status()
            sync_direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            pool.generate(MODEL, "x")
            sync_pool.append(time.perf_counter() - t)
    out["sync_direct_p50_ms"] = _p50(sync_direct)
    out["sync_p50_ms"] = _p50(sync_pool)

    served = Served(["--backend", fake.url], env={"PYTHONPATH": str(ROOT)})
    try:
        via_serve = []
        with httpx.Client() as http:
            http.post(f"{served.url}/api/generate", json=body)
            for _ in range(requests):
                t = time.perf_counter()
                http.post(f"{served.url}/api/generate", json=body).raise_for_status()
                via_serve.append(time.perf_counter() - t)
        out["serve_p50_ms"] = _p50(via_serve)
    finally:
        served.stop()
        fake.kill()
    print(f"  direct httpx (async) p50 {out['direct_p50_ms']:.2f} ms; pool.agenerate p50 {out['async_p50_ms']:.2f} ms "
          f"-> overhead {out['async_p50_ms'] - out['direct_p50_ms']:.2f} ms (goal <= 2 ms)")
    print(f"  direct httpx (sync)  p50 {out['sync_direct_p50_ms']:.2f} ms; pool.generate  p50 {out['sync_p50_ms']:.2f} ms "
          f"-> overhead {out['sync_p50_ms'] - out['sync_direct_p50_ms']:.2f} ms")
    print(f"  through `caelum llm serve` (extra HTTP hop, separate process) p50 {out['serve_p50_ms']:.2f} ms "
          f"-> overhead {out['serve_p50_ms'] - out['sync_direct_p50_ms']:.2f} ms")
    return out


def warm_hits(requests: int, load_latency: float, latency: float) -> tuple[float, float]:
    models = [f"model-{i}:latest" for i in range(4)]
    rng = random.Random(7)
    workload = [rng.choice(models) for _ in range(requests)]

    def start() -> list[FakeOllama]:
        return [FakeOllama(models=models, loaded=[models[i]], max_loaded=1, latency=latency,
                           load_latency=load_latency, parallel=1).start() for i in range(4)]

    def hit(resp: dict) -> bool:
        return resp["load_duration"] < load_latency * 1e9 / 2

    async def pooled(fakes: list[FakeOllama], cap: int) -> float:
        hits = 0
        async with LLMPool(backends=[f.url for f in fakes], refresh_interval=0.5,
                           settings=RouterSettings(max_in_flight=cap)) as pool:
            await pool._await_ready()

            async def call(i: int) -> None:
                nonlocal hits
                reply = await pool.agenerate(workload[i], "x")  # await first: `hits +=` must not span it
                hits += hit(reply)
            await _drive(call, requests, 4)
        return hits / requests

    async def randomly(fakes: list[FakeOllama]) -> float:
        hits = 0
        pick = random.Random(11)
        async with httpx.AsyncClient(timeout=60) as http:
            async def call(i: int) -> None:
                nonlocal hits
                url = pick.choice(fakes).url
                r = await http.post(f"{url}/api/generate", json={"model": workload[i], "prompt": "x", "stream": False})
                hits += hit(r.json())  # (the await above is complete here)
            await _drive(call, requests, 4)
        return hits / requests

    rates = {}
    for cap in (4, 1):
        fakes = start()
        rates[cap] = asyncio.run(pooled(fakes, cap))
        for f in fakes:
            f.kill()
    fakes = start()
    base = asyncio.run(randomly(fakes))
    for f in fakes:
        f.kill()
    print(f"  warm-model hit rate: pool {rates[4]:.0%} (max-in-flight 4, the default) / {rates[1]:.0%} "
          f"(max-in-flight 1: a busy warm backend spills to cold ones) vs random routing {base:.0%} "
          f"({requests} requests over 4 models, 4 callers, 4 backends holding 1 model each)")
    return rates[4], base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="fake backend latency per request (s)")
    parser.add_argument("--per-backend", type=int, default=40, help="requests per backend in the throughput runs")
    parser.add_argument("--overhead-requests", type=int, default=300)
    parser.add_argument("--warm-requests", type=int, default=120)
    parser.add_argument("--load-latency", type=float, default=0.2)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    print(f"llm pool benchmark (python {sys.version.split()[0]}, {os.cpu_count()} cores)")
    print(f"1. throughput, fake latency {args.latency * 1000:.0f} ms, one request at a time per backend")
    throughput(args.latency, args.per_backend)
    print("2. routing overhead per request (zero-latency backend, sequential)")
    overhead(args.overhead_requests)
    print("3. warm-model hit rate")
    warm_hits(args.warm_requests, args.load_latency, 0.02)


if __name__ == "__main__":
    main()

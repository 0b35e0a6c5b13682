"""Routing: warm-first, least busy, caps, cooldown + retry, failover, sticky sessions.

Real HTTP against fake Ollama servers (the pool given ``backends=[urls]``), plus the router's
pure ordering rules on Backend tables with GPU readings.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from caelum_dask.llm import Backend, BackendError, LLMPool, ModelUnavailable, NoBackendAvailable, Router
from caelum_dask.llm.backend import reachable_url
from caelum_dask.llm.discovery import parse_host
from caelum_dask.llm.router import RouterSettings

M = "llama3.2:latest"


def served_by(fake) -> int:  # noqa: ANN001
    return len([r for r in fake.requests if r["path"] in ("/api/generate", "/api/chat", "/api/embed")])


def test_parse_host_follows_ollama_rules() -> None:
    assert parse_host(None) == "http://127.0.0.1:11434"
    assert parse_host("0.0.0.0") == "http://127.0.0.1:11434"
    assert parse_host(":5000") == "http://127.0.0.1:5000"
    assert parse_host("gpu1:8080") == "http://gpu1:8080"
    assert parse_host("https://gpu1") == "https://gpu1:443"
    assert reachable_url("http://127.0.0.1:11434", "10.0.0.7") == "http://10.0.0.7:11434"
    assert reachable_url("http://gpu1:11434", "10.0.0.7") == "http://gpu1:11434"


def _backend(url: str, loaded: bool = False, free: float | None = None, models=(M,)) -> Backend:  # noqa: ANN001
    return Backend(url=url, machine=url, up=True, models={m: {} for m in models},
                   loaded={M: {"size_vram": 1}} if loaded else {},
                   gpus=[{"index": 0, "memory_free_gb": free}] if free is not None else [])


def test_router_order_loaded_then_gpu_memory_then_in_flight() -> None:
    router = Router(RouterSettings(max_in_flight=8, gpu_step_gb=4))
    cold_big = _backend("http://cold-big", free=40)
    cold_small = _backend("http://cold-small", free=6)
    warm_small = _backend("http://warm-small", loaded=True, free=3)
    router.update([cold_big, cold_small, warm_small])
    assert router.choose(M).url == "http://warm-small"  # loaded beats 40 GiB free
    router.update([cold_big, cold_small])
    assert router.choose(M).url == "http://cold-big"  # then the most free GPU memory
    # same GPU step: the least busy wins
    a, b = _backend("http://a", free=20.5), _backend("http://b", free=21.9)
    router = Router(RouterSettings(max_in_flight=8, gpu_step_gb=4))
    router.update([a, b])
    first = router.choose(M)
    second = router.choose(M)
    assert {first.url, second.url} == {"http://a", "http://b"}
    assert router.health("http://a")["in_flight"] == router.health("http://b")["in_flight"] == 1


def test_router_power_of_two_choices_spreads_ties() -> None:
    router = Router(RouterSettings(max_in_flight=1000))
    backends = [_backend(f"http://b{i}", loaded=True) for i in range(4)]
    router.update(backends)
    for _ in range(400):
        chosen = router.choose(M)
        router.release(chosen, model=M, ok=True, latency_s=0.01)
    served = [router.health(b.url)["served"] for b in backends]
    assert min(served) > 40, served  # every tied backend gets a share


def test_model_missing_everywhere_names_where_to_pull(fakes) -> None:
    a = fakes(models=["qwen2.5:0.5b"])
    with LLMPool(backends=[a.url]) as pool:
        with pytest.raises(ModelUnavailable) as err:
            pool.generate("llama3.2", "hi")
    message = str(err.value)
    assert "no backend has model 'llama3.2'" in message
    assert f"caelum llm pull llama3.2 --machines 127.0.0.1:{a.port}" in message


def test_prefers_backend_with_model_loaded(fakes) -> None:
    cold = fakes(models=[M], name="cold")
    warm = fakes(models=[M], loaded=[M], name="warm")
    with LLMPool(backends=[cold.url, warm.url]) as pool:
        for _ in range(5):
            assert pool.generate("llama3.2", "hi")["response"].startswith("echo from warm")
        assert served_by(cold) == 0
        assert pool.status()["router"]["warm_hit_rate"] == 1.0


def test_least_busy_spreads_concurrent_requests(fakes) -> None:
    gate = threading.Event()
    a = fakes(models=[M], loaded=[M], name="a", hold_after_first=gate)
    b = fakes(models=[M], loaded=[M], name="b", hold_after_first=gate)

    async def run(pool: LLMPool) -> list[str]:
        streams = [await pool.agenerate("llama3.2", f"p{i}", stream=True) for i in range(4)]
        firsts = [await s.__anext__() for s in streams]  # all four are in flight now
        assert len(firsts) == 4
        assert (a.in_flight, b.in_flight) == (2, 2)
        gate.set()
        texts = []
        for s in streams:
            texts.append("".join([p["response"] async for p in s]))
        return texts

    with LLMPool(backends=[a.url, b.url]) as pool:
        texts = asyncio.run(run(pool))
    assert all(t for t in texts)
    assert served_by(a) == served_by(b) == 2


def test_concurrency_cap_queues_requests(fakes) -> None:
    a = fakes(models=[M], latency=0.02)
    settings = RouterSettings(max_in_flight=1)

    async def run(pool: LLMPool) -> list[dict]:
        return await asyncio.gather(*(pool.agenerate("llama3.2", f"p{i}") for i in range(6)))

    with LLMPool(backends=[a.url], settings=settings) as pool:
        results = asyncio.run(run(pool))
    assert len(results) == 6 and all(r["done"] for r in results)
    assert a.max_in_flight_seen == 1  # never more than the cap at the backend


def test_failure_cools_down_and_retries_elsewhere(fakes) -> None:
    warm = fakes(models=[M], loaded=[M], name="warm")
    other = fakes(models=[M], name="other")
    warm.fail_next(1, status=500)
    with LLMPool(backends=[warm.url, other.url], settings=RouterSettings(cooldown=60)) as pool:
        result = pool.generate("llama3.2", "hi")
        assert result["response"].startswith("echo from other")
        health = pool.router.health(warm.url)
        assert health["cooldown_s"] > 0 and "500" in health["last_error"]
        for _ in range(3):  # cooled down: the loaded backend is skipped while it cools
            assert pool.generate("llama3.2", "again")["response"].startswith("echo from other")
        assert served_by(warm) == 1
        kinds = [e["event"] for e in pool.recent_events]
        assert "backend-down" in kinds
        down = next(e for e in pool.recent_events if e["event"] == "backend-down")
        assert down["backend"] == warm.url
        finished = [e for e in pool.recent_events if e["event"] == "request-finished"]
        assert {"backend", "machine", "model", "latency_s", "ok"} <= set(finished[0])
        assert [e["ok"] for e in finished][:2] == [False, True]


def test_stale_table_404_retries_without_cooldown(fakes) -> None:
    a = fakes(models=[M], loaded=[M], name="a")
    b = fakes(models=[M], name="b")
    with LLMPool(backends=[a.url, b.url], refresh_interval=60) as pool:
        pool.backends()
        a._models.clear()  # the model was deleted on a after the last probe
        a._loaded.clear()
        assert pool.generate("llama3.2", "hi")["response"].startswith("echo from b")
        assert pool.router.health(a.url)["cooldown_s"] == 0


def test_client_error_is_not_retried(fakes) -> None:
    a = fakes(models=[M], name="a")
    b = fakes(models=[M], name="b")
    with LLMPool(backends=[a.url, b.url]) as pool:
        with pytest.raises(BackendError) as err:
            pool.generate("llama3.2", "hi", options="not-a-dict")
    assert err.value.status_code == 400
    assert served_by(a) + served_by(b) == 1


def test_backend_dies_mid_stream_error_line_then_failover(fakes) -> None:
    warm = fakes(models=[M], loaded=[M], name="warm", tokens=6)
    other = fakes(models=[M], name="other")
    warm.die_mid_stream(after=2)
    with LLMPool(backends=[warm.url, other.url]) as pool:
        parts = []
        with pytest.raises(BackendError) as err:
            for part in pool.generate("llama3.2", "a b c d e f g", stream=True):
                parts.append(part)
        assert len(parts) == 2  # what arrived before the crash was delivered
        assert "failed mid-stream" in str(err.value)
        assert pool.router.health(warm.url)["cooldown_s"] > 0
        # the dead backend is down: the next requests go to the other one
        assert pool.generate("llama3.2", "next")["response"].startswith("echo from other")
        assert pool.chat("llama3.2", [{"role": "user", "content": "hi"}])["message"]["content"].startswith(
            "echo from other")


def test_error_line_mid_stream_is_passed_on(fakes) -> None:
    a = fakes(models=[M], loaded=[M], tokens=4)
    a.error_mid_stream(after=1, message="runner crashed")
    with LLMPool(backends=[a.url]) as pool:
        with pytest.raises(BackendError, match="runner crashed"):
            list(pool.generate("llama3.2", "a b c d", stream=True))


def test_all_backends_down_is_a_clear_error(fakes) -> None:
    a = fakes(models=[M])
    with LLMPool(backends=[a.url], retries=1) as pool:
        pool.backends()
        a.kill()
        with pytest.raises(NoBackendAvailable) as err:
            pool.generate("llama3.2", "hi")
    assert "failed this request" in str(err.value) or "cooling down" in str(err.value)
    assert a.url in str(err.value)


def test_sticky_sessions_stay_on_one_backend(fakes) -> None:
    a = fakes(models=[M], loaded=[M], name="a")
    b = fakes(models=[M], loaded=[M], name="b")
    with LLMPool(backends=[a.url, b.url]) as pool:
        first = pool.chat("llama3.2", [{"role": "user", "content": "1"}], session="conv-1")
        name = first["message"]["content"].split(":")[0]
        for i in range(6):
            reply = pool.chat("llama3.2", [{"role": "user", "content": str(i)}], session="conv-1")
            assert reply["message"]["content"].split(":")[0] == name


def test_embed_and_async_api(fakes) -> None:
    a = fakes(models=["nomic-embed-text"])

    async def run() -> tuple[dict, dict]:
        async with LLMPool(backends=[a.url]) as pool:
            one = await pool.aembed("nomic-embed-text", ["x", "y"])
            two = await pool.aembed("nomic-embed-text", "x")
            return one, two

    one, two = asyncio.run(run())
    assert len(one["embeddings"]) == 2 and one["embeddings"][0] == two["embeddings"][0]


def test_cold_start_avoids_evicting_a_model_in_use() -> None:
    other = "qwen2.5:0.5b"
    busy = _backend("http://busy", models=(M, other))
    idle = _backend("http://idle", models=(M, other))
    router = Router(RouterSettings(max_in_flight=8))
    router.update([busy, idle])
    busy.checked_at = idle.checked_at = time.time() - 5  # the last probe was before this:
    router.release(busy, model=other, ok=True, latency_s=0.1)  # qwen was just served on "busy"
    for _ in range(5):
        chosen = router.choose(M)  # llama3.2 is cold everywhere: load it where nothing else runs
        assert chosen.url == "http://idle"
        router.release(chosen, model=M, ok=False, cool=False)


def test_cancelled_requests_free_their_slot(fakes) -> None:
    gate = threading.Event()
    a = fakes(models=[M], loaded=[M], hold_after_first=gate, parallel=1)

    async def run(pool: LLMPool) -> None:
        stream = await pool.agenerate("llama3.2", "a b c d", stream=True)
        await stream.__anext__()
        await stream.aclose()  # the caller goes away mid-stream
        task = asyncio.ensure_future(pool.agenerate("llama3.2", "x"))
        while len(a.served("/api/generate")) < 2:  # queued at the one-at-a-time backend
            await asyncio.sleep(0.01)
        assert pool.router.health(a.url)["in_flight"] == 1
        task.cancel()  # ... and this caller gives up too
        with pytest.raises(asyncio.CancelledError):
            await task

    with LLMPool(backends=[a.url]) as pool:
        asyncio.run(run(pool))
        assert pool.router.health(a.url)["in_flight"] == 0  # both slots are free again
        gate.set()
        assert pool.generate("llama3.2", "after")["done"]

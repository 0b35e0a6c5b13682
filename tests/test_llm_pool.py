"""The pool's shape: one failover policy for sync, async and streamed requests; the blocking
portal that runs the sync API (started on use, joined on close, no thread left behind);
options from ``caelum.llm.*``; typed results with the published shapes.

Real HTTP against fake Ollama servers speaking the real protocol (the pool given URLs).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import dask.config
import pytest
from harness import wait_for

from caelum_dask.errors import InvalidInput
from caelum_dask.llm import LLMPool
from caelum_dask.llm.batch import run_map
from caelum_dask.llm.options import LLMOptions
from caelum_dask.llm.results import MapItem
from caelum_dask.llm.router import Router, RouterSettings

M = "llama3.2:latest"


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]


def test_sync_api_runs_on_a_portal_that_close_joins(fakes) -> None:
    a = fakes(models=[M, "nomic-embed-text"], loaded=[M], name="a")
    before = set(threading.enumerate())
    pool = LLMPool(backends=[a.url])
    assert _new_threads(before) == []  # nothing starts before the first use
    with pool:
        assert pool.generate("llama3.2", "hi")["response"] == "echo from a: hi"
        parts = pool.chat("llama3.2", [{"role": "user", "content": "x y z"}], stream=True)
        assert next(parts)["message"]["content"]  # a stream left half read ...
        assert len(pool.embed("nomic-embed-text", ["x"])["embeddings"]) == 1
        assert asyncio.run(pool.agenerate("llama3.2", "async"))["done"]
        assert "caelum-llm-pool" in _new_threads(before)
    parts.close()  # ... and closed after the pool: nothing to free any more
    wait_for(lambda: not _new_threads(before), timeout=30, what="the pool's threads to end")
    pool.close()  # twice is fine
    with pytest.raises(InvalidInput, match="closed"):
        pool.generate("llama3.2", "after close")


def test_async_pool_leaves_no_thread_behind(fakes) -> None:
    a = fakes(models=[M], loaded=[M], name="a")
    before = set(threading.enumerate())

    async def run() -> list[str]:
        async with LLMPool(backends=[a.url]) as pool:
            stream = await pool.agenerate("llama3.2", "a b c", stream=True)
            return [part["response"] async for part in stream]

    assert "".join(asyncio.run(run())) == "echo from a: a b c"
    wait_for(lambda: not _new_threads(before), timeout=30, what="the pool's threads to end")


def _failover(pool: LLMPool, mode: str) -> str:
    """One request in one of the three ways a caller can make it; the text it got back."""
    if mode == "sync":
        return pool.generate("llama3.2", "hi")["response"]
    if mode == "stream":
        return "".join(part["response"] for part in pool.generate("llama3.2", "hi", stream=True))

    async def run() -> str:
        return (await pool.agenerate("llama3.2", "hi"))["response"]

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_one_failover_policy_for_sync_async_and_streams(fakes: Callable[..., Any], mode: str) -> None:
    warm = fakes(models=[M], loaded=[M], name="warm")
    other = fakes(models=[M], name="other")
    with LLMPool(backends=[warm.url, other.url], settings=RouterSettings(cooldown=60)) as pool:
        pool.backends()
        warm.fail_next(1, status=500)
        assert _failover(pool, mode) == "echo from other: hi"
        health = pool.router.health(warm.url)
        assert health["failures"] == 1 and health["cooldown_s"] > 0 and health["in_flight"] == 0
        assert pool.router.health(other.url)["in_flight"] == 0
        down = [e for e in pool.recent_events if e["event"] == "backend-down"]
        assert [e["backend"] for e in down] == [warm.url] and "500" in down[0]["reason"]


def test_options_come_from_caelum_llm_config(fakes) -> None:
    a = fakes(models=[M])
    with dask.config.set({"caelum.llm.retries": 0, "caelum.llm.request-timeout": "2m",
                          "caelum.llm.cooldown": "3s", "caelum.llm.max-in-flight": 7}):
        options = LLMOptions.from_config(queue_timeout=5)
        assert (options.retries, options.request_timeout, options.queue_timeout) == (0, 120.0, 5.0)
        assert options.router_settings().cooldown == 3.0
        assert Router(RouterSettings(max_in_flight=1)).settings.cooldown == 3.0  # the rest configured
        with LLMPool(backends=[a.url], retries=4) as pool:
            assert (pool.retries, pool.request_timeout) == (4, 120.0)  # the keyword wins
            assert pool.router.health(a.url)["cap"] == 7
    with pytest.raises(TypeError, match="no option"):
        LLMOptions.from_config(retry=1)


def test_batch_progress_is_a_callback_never_printing() -> None:
    with pytest.raises(InvalidInput, match="ProgressEvent"):
        run_map(None, "llama3.2", ["x"], progress=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown batch kind"):
        run_map(None, "llama3.2", ["x"], kind="speak")


def test_map_item_keeps_the_published_shape() -> None:
    failed = MapItem(index=3, ok=False, error="boom", worker="tcp://127.0.0.1:1")
    assert failed.to_dict() == {"index": 3, "ok": False, "response": None, "error": "boom", "backend": None,
                                "machine": None, "worker": "tcp://127.0.0.1:1", "latency_s": None}
    done = MapItem(index=0, ok=True, response={"response": "hi", "done": True}, backend="http://h:1",
                   machine="m", worker="tcp://w", latency_s=0.5)
    assert set(done.to_dict()) == set(failed.to_dict()) and done.to_dict()["response"]["response"] == "hi"

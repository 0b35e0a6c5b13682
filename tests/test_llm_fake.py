"""The fake Ollama speaks Ollama's protocol: the real `ollama` client, pointed straight at it.

These tests keep the fake honest; every other LLM test relies on it.
"""

from __future__ import annotations

import asyncio

import httpx
import ollama
import pytest


def test_real_ollama_client_against_the_fake(fakes) -> None:
    fake = fakes(models=["llama3.2", "nomic-embed-text"], load_latency=0.01)
    client = ollama.Client(host=fake.url)
    assert sorted(m.model for m in client.list().models) == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert client.ps().models == []
    reply = client.generate(model="llama3.2", prompt="hello")
    assert reply.done and reply.done_reason == "stop" and reply.response == "echo from fake: hello"
    assert reply.load_duration >= 10_000_000  # a cold load was reported ...
    assert client.generate(model="llama3.2", prompt="x").load_duration < 1_000_000  # ... once
    assert [m.model for m in client.ps().models] == ["llama3.2:latest"]
    assert client.ps().models[0].size_vram > 0
    parts = list(client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert parts[-1].done and not parts[0].done
    assert "".join(p.message.content for p in parts) == "echo from fake: a b c"
    assert len(client.embed(model="nomic-embed-text", input=["x", "y"]).embeddings) == 2
    assert client.show("llama3.2").details.format == "gguf"
    progress = list(client.pull("qwen2.5:0.5b", stream=True))
    assert progress[-1].status == "success" and any(p.total for p in progress)
    assert "qwen2.5:0.5b" in {m.model for m in client.list().models}
    assert httpx.get(f"{fake.url}/api/version").json() == {"version": "0.12.3"}


def test_fake_errors_look_like_ollamas(fakes) -> None:
    fake = fakes(models=["llama3.2"], tokens=4)
    client = ollama.Client(host=fake.url)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="missing", prompt="x")
    assert err.value.status_code == 404 and 'model "missing" not found' in err.value.error
    fake.fail_next(1, status=500)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="llama3.2", prompt="x")
    assert err.value.status_code == 500
    fake.error_mid_stream(after=2, message="runner crashed")
    stream = client.generate(model="llama3.2", prompt="a b c d e f", stream=True)
    got = []
    with pytest.raises(ollama.ResponseError, match="runner crashed"):
        for part in stream:
            got.append(part)
    assert len(got) == 2
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(client.pull("no-such-model", stream=True))
    fake.kill()
    with pytest.raises(ConnectionError):
        client.list()
    fake.revive()
    assert client.list().models


def test_one_request_at_a_time_mode(fakes) -> None:
    fake = fakes(models=["llama3.2"], loaded=["llama3.2"], latency=0.02, parallel=1)

    async def run() -> None:
        client = ollama.AsyncClient(host=fake.url)
        await asyncio.gather(*(client.generate(model="llama3.2", prompt=str(i)) for i in range(5)))

    asyncio.run(run())
    assert fake.max_in_flight_seen == 1 and len(fake.served("/api/generate")) == 5

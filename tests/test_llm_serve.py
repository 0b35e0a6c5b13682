"""`caelum llm serve` driven by the real `ollama` client: an Ollama endpoint over the pool."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import ollama
import pytest

M = "llama3.2:latest"


def test_ollama_client_through_serve(fakes, llm_serve) -> None:
    warm = fakes(models=[M, "nomic-embed-text"], loaded=[M], name="warm", version="0.12.3")
    cold = fakes(models=[M, "qwen2.5:0.5b"], name="cold", version="0.11.0")
    served = llm_serve("--backend", warm.url, "--backend", cold.url)
    assert "2 backend(s) up" in served.banner
    client = ollama.Client(host=served.url)

    names = sorted(m.model for m in client.list().models)
    assert names == sorted([M, "nomic-embed-text:latest", "qwen2.5:0.5b"])  # union, once each
    assert [m.model for m in client.ps().models] == [M]
    assert httpx.get(f"{served.url}/api/version").json() == {"version": "0.11.0"}
    assert httpx.get(served.url).text == "Ollama is running"

    reply = client.generate(model="llama3.2", prompt="hello pool")
    assert reply.response == "echo from warm: hello pool" and reply.done
    chat = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert chat.message.content == "echo from warm: hi"
    parts = [p.message.content for p in client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b c"}], stream=True)]
    assert "".join(parts) == "echo from warm: a b c" and len(parts) > 2
    emb = client.embed(model="nomic-embed-text", input=["x", "y"])
    assert len(emb.embeddings) == 2
    assert client.generate(model="qwen2.5:0.5b", prompt="q").response.startswith("echo from cold")
    assert client.show("llama3.2").modelfile.startswith("FROM")

    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="missing-model", prompt="x")
    assert err.value.status_code == 404 and "caelum llm pull missing-model" in str(err.value)
    bad = httpx.post(f"{served.url}/api/generate", json={"model": "llama3.2", "prompt": "x", "options": "bad"})
    assert bad.status_code == 400 and "cannot unmarshal" in bad.json()["error"]
    assert httpx.post(f"{served.url}/api/chat", content=b"{not json").status_code == 400

    code, stderr = served.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_streaming_is_forwarded_unbuffered(fakes, llm_serve) -> None:
    gate = threading.Event()
    backend = fakes(models=[M], loaded=[M], tokens=4, hold_after_first=gate)
    served = llm_serve("--backend", backend.url)
    client = ollama.Client(host=served.url, timeout=60)
    stream = client.generate(model="llama3.2", prompt="one two three four", stream=True)
    first = next(stream)  # arrives while the backend still holds the rest back
    assert first.response == "echo from "
    assert not first.done and backend.in_flight == 1
    gate.set()
    rest = list(stream)
    assert rest[-1].done and "".join(p.response for p in [first, *rest]) == "echo from fake: one two three four"
    head = httpx.post(f"{served.url}/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert head.headers["content-type"].startswith("application/x-ndjson")  # stream defaults to true
    assert head.headers["x-caelum-backend"] == backend.url
    assert len(head.text.strip().splitlines()) > 1


def test_serve_fails_over_when_a_backend_dies(fakes, llm_serve) -> None:
    warm = fakes(models=[M], loaded=[M], name="warm")
    other = fakes(models=[M], name="other")
    served = llm_serve("--backend", warm.url, "--backend", other.url)
    client = ollama.Client(host=served.url)
    assert client.generate(model="llama3.2", prompt="1").response.startswith("echo from warm")
    warm.kill()
    for i in range(3):
        assert client.generate(model="llama3.2", prompt=str(i)).response.startswith("echo from other")
    status = httpx.get(f"{served.url}/caelum/status").json()
    by_url = {b["url"]: b for b in status["backends"]}
    assert by_url[warm.url]["cooldown_s"] > 0 or not by_url[warm.url]["up"]


def test_async_ollama_client_through_serve(fakes, llm_serve) -> None:
    a = fakes(models=[M], loaded=[M], name="a", latency=0.05, parallel=1)
    b = fakes(models=[M], loaded=[M], name="b", latency=0.05, parallel=1)
    served = llm_serve("--backend", a.url, "--backend", b.url)

    async def run() -> list[str]:
        client = ollama.AsyncClient(host=served.url)
        replies = await asyncio.gather(*(client.generate(model="llama3.2", prompt=f"p{i}") for i in range(8)))
        return [r.response for r in replies]

    texts = asyncio.run(run())
    assert sorted(t.split(":")[1].strip() for t in texts) == sorted(f"p{i}" for i in range(8))
    assert {t.split(":")[0] for t in texts} == {"echo from a", "echo from b"}  # both served


def test_session_header_keeps_a_conversation_on_one_backend(fakes, llm_serve) -> None:
    a = fakes(models=[M], loaded=[M], name="a")
    b = fakes(models=[M], loaded=[M], name="b")
    served = llm_serve("--backend", a.url, "--backend", b.url)
    body = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    with httpx.Client(base_url=served.url, headers={"X-Caelum-Session": "conv-7"}) as http:
        backends = {http.post("/api/chat", json=body).headers["x-caelum-backend"] for _ in range(6)}
    assert len(backends) == 1 and backends <= {a.url, b.url}


def test_openai_compatible_endpoints_through_serve(fakes, llm_serve) -> None:
    a = fakes(models=[M, "nomic-embed-text"], loaded=[M], name="a")
    b = fakes(models=["qwen2.5:0.5b"], name="b")
    served = llm_serve("--backend", a.url, "--backend", b.url)
    with httpx.Client(base_url=served.url) as http:
        models = http.get("/v1/models").json()
        assert models["object"] == "list"
        assert sorted(m["id"] for m in models["data"]) == sorted([M, "nomic-embed-text:latest", "qwen2.5:0.5b"])
        chat = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi there"}]}
        reply = http.post("/v1/chat/completions", json=chat)
        assert reply.headers["x-caelum-backend"] == b.url
        assert reply.json()["choices"][0]["message"]["content"] == "echo from b: hi there"
        with http.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = list(stream.iter_lines())
        events = [line for line in lines if line]
        assert events[-1] == "data: [DONE]" and lines[1] == ""  # SSE framing kept
        text = "".join(json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1])
        assert text == "echo from b: hi there"
        emb = http.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": ["x", "y"]}).json()
        assert [d["index"] for d in emb["data"]] == [0, 1]
        missing = http.post("/v1/chat/completions", json={**chat, "model": "nope"})
        assert missing.status_code == 404 and "caelum llm pull nope" in missing.json()["error"]["message"]

"""The pool on a real cluster: `dask scheduler` + `dask worker` subprocesses, each worker
configured with its own Ollama (OLLAMA_HOST) — fake servers speaking the real protocol.

Worker a: backend A (model loaded), worker b: backend B (model installed, cold),
worker c: OLLAMA_HOST points at a closed port (its Ollama is down).
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from fake_ollama import FakeOllama
from harness import ProcessCluster, run_caelum, wait_for

from caelum_dask import events, machines
from caelum_dask.llm import LLMPool, ModelUnavailable
from caelum_dask.llm.steps import generate_step
from caelum_dask.progress import ProgressEvent

pytestmark = pytest.mark.slow
M = "llama3.2:latest"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Setup:
    def __init__(self, cluster: ProcessCluster, a: FakeOllama, b: FakeOllama, down_url: str) -> None:
        self.cluster, self.a, self.b, self.down_url = cluster, a, b, down_url
        self.client = cluster.wait_for_workers(3)
        info = self.client.scheduler_info()["workers"]
        self.worker = {w["name"]: addr for addr, w in info.items()}


@pytest.fixture(scope="module")
def llm_cluster() -> Iterator[Setup]:
    a = FakeOllama(models=[M, "nomic-embed-text"], loaded=[M], name="A", latency=0.02).start()
    b = FakeOllama(models=[M], name="B", latency=0.02, load_latency=0.05).start()
    down_port = _closed_port()
    with tempfile.TemporaryDirectory() as logdir:
        cluster = ProcessCluster(logdir=Path(logdir))
        cluster.env = {"DASK_CAELUM__LLM__PROBE_INTERVAL": "0.3s"}
        try:
            cluster.start_scheduler()
            for name, host in (("a", a.url), ("b", b.url), ("c", f"http://127.0.0.1:{down_port}")):
                cluster.env = {**cluster.env, "OLLAMA_HOST": host}
                cluster.start_worker(name)
            setup = Setup(cluster, a, b, f"http://127.0.0.1:{down_port}")
            yield setup
            setup.client.close()
        finally:
            cluster.stop()
            a.kill()
            b.kill()


def _backend(pool: LLMPool, url: str) -> dict[str, Any]:
    return next(b for b in pool.status()["backends"] if b["url"] == url)


def test_workers_discover_their_machines_backends(llm_cluster: Setup) -> None:
    s = llm_cluster
    with LLMPool(s.client) as pool:
        status = pool.status()
        urls = {b["url"] for b in status["backends"]}
        assert urls == {s.a.url, s.b.url, s.down_url}
        a, b, down = _backend(pool, s.a.url), _backend(pool, s.b.url), _backend(pool, s.down_url)
    assert a["up"] and a["workers"] == [s.worker["a"]] and a["version"] == "0.12.3"
    assert a["models"] == sorted([M, "nomic-embed-text:latest"])
    assert [m["model"] for m in a["loaded"]] == [M] and a["loaded"][0]["size_vram_gb"] == 2.0
    assert b["up"] and b["workers"] == [s.worker["b"]] and b["loaded"] == []
    assert not down["up"] and down["workers"] == [s.worker["c"]] and "Connect" in down["error"]
    assert "gpus" in a and a["machine"].endswith("@127.0.0.1")
    assert status["models"][M]["loaded_on"] == [s.a.url]
    services = wait_for(lambda: {name: port for m in machines(s.client) for name, port in m["services"].items()
                                 if name.startswith("ollama")}, what="ollama in the service table")
    assert services["ollama"] in (s.a.port, s.b.port)  # the registry lists the Ollama port


def test_pool_routes_to_the_loaded_backend(llm_cluster: Setup) -> None:
    s = llm_cluster
    before = len(s.b.requests)
    with LLMPool(s.client) as pool:
        for i in range(3):
            assert pool.generate("llama3.2", f"q{i}")["response"] == f"echo from A: q{i}"
        assert len(s.b.requests) == before
    found = wait_for(lambda: [m for _t, m in s.client.get_events(events.LLM)
                              if m.get("event") == "request-finished" and m.get("backend") == s.a.url],
                     what="request-finished events on caelum.llm")
    assert found[0]["ok"] is True and found[0]["model"] == "llama3.2"


def test_map_runs_as_dask_tasks_next_to_the_backends(llm_cluster: Setup) -> None:
    s = llm_cluster
    seen: list[ProgressEvent] = []
    prompts = [f"item {i}" for i in range(12)]
    with LLMPool(s.client) as pool:
        results = pool.map("llama3.2", prompts, progress=seen.append)
    assert [r["index"] for r in results] == list(range(12))
    assert [r["response"]["response"].split(": ", 1)[1] for r in results] == prompts
    assert all(r["ok"] for r in results)
    owner = {s.a.url: s.worker["a"], s.b.url: s.worker["b"]}
    for r in results:
        assert r["worker"] == owner[r["backend"]]  # each item ran on the worker next to its backend
    assert s.worker["c"] not in {r["worker"] for r in results}  # c's Ollama is down
    assert {e.job for e in seen} == {"llm"} and len({e.run_id for e in seen}) == 1
    assert (seen[0].done, seen[0].total) == (0, 12)
    assert [(e.done, e.total, e.failed) for e in seen[1:]] == [(i, 12, 0) for i in range(1, 13)]
    prefixes = s.client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "llm_generate" in prefixes  # Dask's prefix is the step, the run id is in the token


def test_map_reports_failures_per_item(llm_cluster: Setup) -> None:
    s = llm_cluster
    items = [[{"role": "user", "content": "fine"}], [{"content": "no role"}], "plain text"]
    with LLMPool(s.client) as pool:
        results = pool.map("llama3.2", items, kind="chat", progress=False)
    assert [r["ok"] for r in results] == [True, False, True]
    assert "400" in results[1]["error"] and "role" in results[1]["error"]
    assert results[2]["response"]["message"]["content"].endswith("plain text")


def test_map_with_a_model_nobody_has_names_where_to_pull(llm_cluster: Setup) -> None:
    with LLMPool(llm_cluster.client) as pool:
        with pytest.raises(ModelUnavailable, match="caelum llm pull mistral --machines"):
            pool.map("mistral", ["x"])


def test_generate_step_inside_a_task(llm_cluster: Setup) -> None:
    s = llm_cluster
    future = s.client.submit(generate_step, "llama3.2", ["one", "two", "three"], key="caelum-wf-test-step")
    summary = future.result(timeout=60)
    assert summary["count"] == 3 and summary["ok"] == 3 and summary["failed"] == 0
    assert [r.split(": ", 1)[1] for r in summary["responses"]] == ["one", "two", "three"]
    assert sum(summary["machines"].values()) == 3
    json.dumps(summary)


def test_cli_status_and_pull(llm_cluster: Setup) -> None:
    s = llm_cluster
    out = run_caelum("llm", "status", "--json", "--scheduler", s.cluster.address)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {b["url"]: b["up"] for b in report["backends"]} == {s.a.url: True, s.b.url: True, s.down_url: False}
    text = run_caelum("llm", "status", "--scheduler", s.cluster.address)
    assert "DOWN" in text.stdout and s.b.url in text.stdout

    pulled = run_caelum("llm", "pull", "qwen2.5:0.5b", "--machines", s.b.url, "--json",
                        "--scheduler", s.cluster.address)
    assert pulled.returncode == 0, pulled.stderr
    result = json.loads(pulled.stdout)
    assert [(r["backend"], r["ok"]) for r in result["results"]] == [(s.b.url, True)]
    assert "qwen2.5:0.5b" in s.b._models and "qwen2.5:0.5b" not in s.a._models

    bad = run_caelum("llm", "pull", "qwen2.5:0.5b", "--machines", "no-such-box", "--scheduler", s.cluster.address)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("caelum: error: no Ollama backend on machine 'no-such-box'")
    missing = run_caelum("llm", "pull", "not-a-model", "--machines", s.a.url, "--scheduler", s.cluster.address)
    assert missing.returncode == 1 and "file does not exist" in missing.stdout


def test_serve_on_the_cluster(llm_cluster: Setup, llm_serve) -> None:
    s = llm_cluster
    served = llm_serve("--scheduler", s.cluster.address)
    client = ollama.Client(host=served.url)
    assert {m.model for m in client.list().models} >= {M, "nomic-embed-text:latest"}
    reply = httpx.post(f"{served.url}/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
    name = {s.a.url: "A", s.b.url: "B"}[reply.headers["x-caelum-backend"]]  # both warm after the map
    assert reply.json()["response"] == f"echo from {name}: hi"
    assert client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}]).message.content.endswith(": x")
    assert client.embed(model="nomic-embed-text", input="e").embeddings  # only A has it


def test_map_fails_over_when_a_backend_dies_mid_run(llm_cluster: Setup) -> None:
    s = llm_cluster
    s.a.die_mid_stream(after=1)  # A's next request kills it, connection and all
    before_a, before_b = len(s.a.requests), len(s.b.requests)
    try:
        with LLMPool(s.client) as pool:
            results = pool.map("llama3.2", [f"p{i}" for i in range(8)], progress=False)
        assert all(r["ok"] for r in results), [r["error"] for r in results if not r["ok"]]
        assert {r["backend"] for r in results} == {s.b.url}
        assert len(s.a.requests) - before_a >= 1  # A took an item, then died mid-request
        assert len(s.b.requests) - before_b >= 8
        down = wait_for(lambda: [m for _t, m in s.client.get_events(events.LLM)
                                 if m.get("event") == "backend-down" and m.get("backend") == s.a.url],
                        what="backend-down event for A")
        assert down[0]["reason"]
    finally:
        s.a._faults.clear()
        s.a.revive()

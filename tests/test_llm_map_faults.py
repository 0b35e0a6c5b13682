"""LLMPool.map survives losing every worker next to the model (found by the soak benchmark)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest
from fake_ollama import FakeOllama
from harness import ProcessCluster, wait_for

from caelum_dask.llm import LLMPool
from caelum_dask.progress import ProgressEvent

pytestmark = pytest.mark.slow
M = "llama3.2:latest"


def test_items_pinned_to_a_dead_worker_move_to_its_replacement() -> None:
    backend = FakeOllama(models=[M], loaded=[M], name="A", latency=0.4, parallel=1).start()
    with tempfile.TemporaryDirectory() as logdir:
        cluster = ProcessCluster(logdir=Path(logdir))
        cluster.env = {"DASK_CAELUM__LLM__PROBE_INTERVAL": "0.3s", "OLLAMA_HOST": backend.url}
        try:
            cluster.start_scheduler()
            cluster.start_worker("first")
            client = cluster.wait_for_workers(1)
            seen: list[ProgressEvent] = []
            box: dict = {}
            with LLMPool(client) as pool:
                runner = threading.Thread(target=lambda: box.setdefault(
                    "results", pool.map("llama3.2", [f"q{i}" for i in range(8)], progress=seen.append)))
                runner.start()
                wait_for(lambda: any(e.done >= 1 for e in seen), timeout=120, what="a first result")
                cluster.kill_worker("first")  # every worker that serves the model is gone
                cluster.start_worker("replacement")
                runner.join(timeout=180)
                assert not runner.is_alive(), "map() waited forever for the dead worker"
            results = box["results"]
            assert [r["index"] for r in results] == list(range(8)) and all(r["ok"] for r in results), results
            assert seen[-1].done == 8 and seen[-1].failed == 0
            client.close()
        finally:
            cluster.stop()
            backend.kill()

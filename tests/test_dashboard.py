"""The dashboard on a real scheduler: mounted on Dask's dashboard server, fed by Dask's hooks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from distributed import Client

from caelum_dask import events
from caelum_dask.dashboard import pages_url
from caelum_dask.dashboard.pages import PAGES
from harness import REPO, run_caelum


def poll(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Return check()'s first truthy value, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def inc(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError("boom")


def test_pages_are_mounted_on_the_dask_dashboard_server(client: Client) -> None:
    index = pages_url(client.dashboard_link)
    assert index is not None and index.startswith(client.dashboard_link.rsplit("/status", 1)[0])
    for path, label, _ in [("", "Index", ""), *PAGES]:
        html = fetch(f"{index}{path}")
        assert f'caelum/{path}" class="active">' in html  # our navbar, this page highlighted
        assert 'id="myTopnav"' in html  # Dask's navbar
        assert 'class="caelum-nav"' in html
    # Dask's own pages link to ours, and the resources our pages reference resolve below /caelum/
    assert '<a href="caelum">Caelum</a>' in fetch(client.dashboard_link)
    assert len(fetch(f"{index}static/js/bokeh.min.js")) > 100_000
    assert "navbar" in fetch(f"{index}statics/css/base.css")


def test_collector_counts_tasks_per_machine_by_kind(client: Client) -> None:
    assert client.submit(inc, 1, key="caelum-test-abc-1").result() == 2
    assert client.submit(inc, 2, key="caelum-analyze-abc-1").result() == 3
    assert client.submit(inc, 3, key="plain-dask-1").result() == 4
    with pytest.raises(ValueError):
        client.submit(boom, 1, key="caelum-wf-abc-1").result()

    def counts(dask_scheduler: Any) -> dict[str, Any]:
        tasks = dask_scheduler.plugins["caelum-dashboard"].tasks
        total = {k: sum(c[k] for c in tasks.completed.values()) for k in ("test", "analysis", "other")}
        failed = sum(c["workflow"] for c in tasks.failed.values())
        registry = dask_scheduler.plugins["caelum-machine-registry"]
        return {"completed": total, "failed": failed, "machines": sorted(tasks.completed),
                "registry": sorted(registry.machines)}

    result = poll(lambda: (r := client.run_on_scheduler(counts))["failed"] == 1 and r, what="task counts")
    assert result["completed"] == {"test": 1, "analysis": 1, "other": 1}
    assert result["machines"] == result["registry"]  # counted per registry machine, not per worker


def test_events_logged_by_a_client_reach_the_pages_models(client: Client) -> None:
    events.emit(events.WORKFLOWS, "run-started", sink=client, run_id="r1", workflow="wf",
                nodes=["a", "b"], edges=[["a", "b"]])
    events.emit(events.WORKFLOWS, "task-state", sink=client, run_id="r1", task="a", state="completed",
                worker="w", machine="m")
    events.emit(events.TESTS, "shard-finished", sink=client, run_id="t1", shard=0, worker="w", machine="m",
                passed=3, failed=0, skipped=0, errors=0, duration=1.0)
    events.emit(events.LLM, "request-finished", sink=client, backend="http://b:11434", machine="m",
                model="llama3", latency_s=0.4, ok=True)

    def models(dask_scheduler: Any) -> dict[str, Any]:
        state = dask_scheduler.plugins["caelum-dashboard"]
        run = state.workflows.get("r1")
        test = state.tests.get("t1")
        return {"wf": dict(run.states) if run else None, "tests": len(test.shards) if test else 0,
                "llm": len(state.llm.requests), "samples": len(state.utilisation.rows)}

    result = poll(lambda: (m := client.run_on_scheduler(models))["llm"] and m, what="events")
    assert result["wf"] == {"a": "completed", "b": "pending"}
    assert result["tests"] == 1
    poll(lambda: client.run_on_scheduler(models)["samples"] > 0, what="utilisation samples")


def test_status_prints_the_caelum_pages_url() -> None:
    result = run_caelum("status", "--json", env={"DASK_CAELUM__EMBEDDED__N_WORKERS": "1"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["caelum_dashboard"] == report["dashboard"].rsplit("/status", 1)[0] + "/caelum/"
    text = run_caelum("status", env={"DASK_CAELUM__EMBEDDED__N_WORKERS": "1"})
    assert text.returncode == 0, text.stderr
    assert re.search(r"^caelum\s+http://127\.0\.0\.1:\d+/caelum/$", text.stdout, re.M)


def test_plain_dask_scheduler_without_preload_gets_no_url(process_cluster: Any) -> None:
    address = process_cluster.start_scheduler(preload=False)
    process_cluster.start_worker("w1", preload=False)
    process_cluster.wait_for_workers(1).close()
    result = run_caelum("status", "--json", "--scheduler", address)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["caelum_dashboard"] is None


@pytest.mark.slow
def test_example_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "dashboard_demo.py"), "--fanout", "3"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={**__import__("os").environ, "DASK_CAELUM__EMBEDDED__N_WORKERS": "2", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"workflow run \w+: \{.*'completed': 5", result.stdout)
    assert "page /caelum/workflows: HTTP 200" in result.stdout


def test_scheduler_without_dashboard_still_collects() -> None:
    import asyncio

    from distributed import Scheduler

    async def run() -> tuple[bool, bool]:
        async with Scheduler(host="127.0.0.1", port=0, dashboard=False, dashboard_address=None,
                             preload=["caelum_dask.scheduler"]) as scheduler:
            state = scheduler.plugins["caelum-dashboard"]
            events.emit(events.WORKFLOWS, "run-started", sink=scheduler, run_id="x", workflow="w",
                        nodes=["a"], edges=[])
            return state.bokeh_app is None, state.workflows.get("x") is not None

    assert asyncio.run(run()) == (True, True)

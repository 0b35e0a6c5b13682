"""Workflows on the shared contract: ProgressEvents with live task starts, WorkflowOptions from
caelum.yaml, RunResult on Result (real embedded LocalCluster, real run store)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import dask.config
import pytest
from distributed import Client

from caelum_dask.mcp_server.runs import ActiveRun
from caelum_dask.progress import ProgressEvent
from caelum_dask.results import Result
from caelum_dask.workflow import RunStore, Workflow, run, task
from caelum_dask.workflow.runner import RunResult, WorkflowOptions

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

#: the published keys of ``caelum run --json`` (docs/workflows.md)
RUN_JSON_KEYS = {"run_id", "workflow", "state", "params", "computed", "cached", "failed", "skipped", "duration",
                 "per_machine", "errors", "resumed_from", "tasks", "results"}
#: the published MCP ``counts`` of a run (run_workflow with wait=false, workflow_status live_counts)
MCP_COUNT_KEYS = {"run_id", "total", "computed", "cached", "failed", "skipped", "running", "done"}


@task
def gated(gate: str, i: int) -> int:
    """Runs until the test opens ``gate`` (a file); bounded so a broken test cannot hang a worker."""
    deadline = time.monotonic() + 120
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.02)
    return i


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def double(x: int) -> int:
    return 2 * x


def _gated_workflow() -> Workflow:
    with Workflow("gated", params={"gate": ""}) as wf:
        add(gated(wf.param("gate"), 1), gated(wf.param("gate"), 2))
    return wf


def _await(events: list[ProgressEvent], predicate: Any, box: dict[str, Any], runner: threading.Thread) -> ProgressEvent:
    """The first collected event that satisfies ``predicate`` (the run goes on in ``runner``)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for event in list(events):
            if predicate(event):
                return event
        if not runner.is_alive():
            raise AssertionError(f"the run ended first: {box} {[e.to_dict() for e in events]}")
        time.sleep(0.05)
    raise AssertionError(f"no such event in {[e.to_dict() for e in events]}")


def test_started_tasks_count_as_running_before_any_finishes(wf_client: Client, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    events: list[ProgressEvent] = []
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["result"] = run(_gated_workflow(), client=wf_client, params={"gate": str(gate)},
                                cache=False, progress=events.append)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            box["error"] = exc

    runner = threading.Thread(target=drive, daemon=True)
    runner.start()
    try:
        live = _await(events, lambda e: e.running > 0, box, runner)
    finally:
        gate.write_text("open")  # the tasks end (and the run) whatever the assertions say
        runner.join(120)
    assert not runner.is_alive() and "error" not in box, box
    result: RunResult = box["result"]
    assert result.ok and result["add"] == 3

    # the running tasks were counted while they ran: nothing had finished yet
    assert live.job == "workflow" and live.run_id == result.run_id
    assert live.done == 0 and live.failed == 0 and live.total == 3
    assert live.detail["states"]["running"] == live.running
    machines = live.detail["running_per_machine"]
    assert sum(machines.values()) == live.running
    assert set(machines) <= set(result.per_machine)  # the same machine names the result uses

    first, last = events[0], events[-1]
    assert first.run_id == result.run_id and first.message == f"run {result.run_id} started"
    assert (last.done, last.total, last.running) == (3, 3, 0) and last.detail["states"]["completed"] == 3
    assert set(last.detail["counts"]) == MCP_COUNT_KEYS - {"run_id"}
    dones = [e.done for e in events]
    assert dones == sorted(dones)

    with RunStore() as store:  # the start reached the store as a running attempt, then its end
        attempts = [a for a in store.run(result.run_id)["attempts"] if a["task"].startswith("gated")]
    assert len(attempts) == 2 and {a["state"] for a in attempts} == {"completed"}


def test_mcp_run_record_keeps_the_published_counts(wf_client: Client) -> None:
    with Workflow("pair", params={"x": 3}) as wf:
        double(wf.param("x"))
    active = ActiveRun(path="pair.py")
    result = run(wf, client=wf_client, progress=active.on_progress, cache=False)
    assert active.run_id == result.run_id and active.started.is_set()
    assert set(active.counts) == MCP_COUNT_KEYS
    assert active.counts["done"] == active.counts["total"] == 1 and active.counts["computed"] == 1
    assert active.event is not None and active.event.job == "workflow"


def test_options_come_from_caelum_yaml_unless_given(wf_client: Client, tmp_path: Path) -> None:
    defaults = WorkflowOptions.from_config()
    assert defaults.cache is True and defaults.poll and defaults.progress_interval and defaults.settle
    with Workflow("reuse", params={"x": 4}) as wf:
        double(wf.param("x"))
    cache = str(tmp_path / "cache")
    first = run(wf, client=wf_client, cache_url=cache)
    assert (first.computed, first.cached) == (1, 0)
    with dask.config.set({"caelum.workflow.use-cache": False}):
        assert WorkflowOptions.from_config().cache is False
        configured = run(wf, client=wf_client, cache_url=cache)  # configured: no reuse
        given = run(wf, client=wf_client, options=WorkflowOptions(cache=True, cache_url=cache))
    assert (configured.computed, configured.cached) == (1, 0)
    assert (given.computed, given.cached) == (0, 1)
    store = tmp_path / "runs.sqlite"
    elsewhere = run(wf, client=wf_client, options=WorkflowOptions(store=str(store), cache_url=cache))
    with RunStore(store) as other:
        assert [r["id"] for r in other.runs()] == [elsewhere.run_id]
    with pytest.raises(TypeError, match="no option"):
        WorkflowOptions.from_config(bogus=1)


def test_run_result_is_a_result_with_the_published_shape(wf_client: Client) -> None:
    with Workflow("shape", params={"x": 5}) as wf:
        double(wf.param("x"))
    result = run(wf, client=wf_client, cache=False)
    assert isinstance(result, Result)
    data = result.to_dict()
    assert set(data) == RUN_JSON_KEYS and data["results"] == {"double": 10}
    assert set(data["tasks"]["double"]) == {"state", "machine", "worker", "attempts", "error"}
    assert set(result.to_dict(results=False)) == RUN_JSON_KEYS - {"results"}


def test_cli_display_shows_running_tasks() -> None:
    """``caelum run``'s ProgressDisplay prints the running count a workflow event carries."""
    import io

    from caelum_dask.cli.progress import ProgressDisplay

    out = io.StringIO()
    with ProgressDisplay("caelum run", noun="tasks", stream=out, live=False, interval=0) as display:
        display(ProgressEvent(job="workflow", total=5, message="run r1 started", run_id="r1"))
        display(ProgressEvent(job="workflow", done=1, total=5, running=3, run_id="r1"))
        display(ProgressEvent(job="workflow", done=5, total=5, run_id="r1"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "caelum run: run r1 started"
    assert "caelum run: 1/5 tasks, 0 failed, 3 running" in lines
    assert lines[-1].startswith("caelum run: 5/5 tasks, 0 failed in ")

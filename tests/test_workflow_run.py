"""Workflows on a real embedded LocalCluster (worker processes with the caelum preloads)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import dask.config
import pytest
from distributed import Client

from caelum_dask import connect, events
from caelum_dask.workflow import RunStore, Workflow, run, task

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_fan_out_and_reduce_static_and_dynamic(wf_client: Client) -> None:
    with Workflow("fan", params={"n": 6}) as wf:
        dynamic = total.with_options(name="dynamic_total")(square.map(numbers(wf.param("n"))))
        static = total.with_options(name="static_total")(square.map([1, 2, 3]))
        assert dynamic.name == "dynamic_total" and static.name == "static_total"
    result = run(wf, client=wf_client)
    assert result.ok, result.errors
    assert result["dynamic_total"] == sum(i * i for i in range(6))
    assert result["static_total"] == 14
    items = sorted(t for t in result.tasks if t.startswith("square["))
    assert items == [f"square[{i}]" for i in range(6)]  # the dynamic items are tasks of their own
    assert all(result.tasks[t]["state"] == "completed" for t in items)
    # 1 numbers + 1 fan-out + 6 items + 3 static items + 2 totals
    assert result.computed == 13 and result.cached == 0 and result.failed == 0

    again = run(wf, client=wf_client, params={"n": 6})
    assert again.ok and again.computed == 0 and again["dynamic_total"] == 55 and again["static_total"] == 14
    fresh = run(wf, client=wf_client, cache=False)  # --no-cache: everything again, fan-out items too
    assert fresh.ok and fresh.computed == 13 and fresh.cached == 0 and fresh["dynamic_total"] == 55


@task(retries=2, retry_delay=0.01, retry_jitter=0.5, cache=False)
def flaky(counter: str) -> str:
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls < 3:
        raise ConnectionError(f"call {calls} fails")
    return f"passed on call {calls}"


def test_retries_fail_twice_then_pass(wf_client: Client, tmp_path: Path) -> None:
    with Workflow("retry", params={"counter": str(tmp_path / "count")}) as wf:
        flaky(wf.param("counter"))
    result = run(wf, client=wf_client)
    assert result.ok and result["flaky"] == "passed on call 3"
    with RunStore() as store:
        attempts = store.run(result.run_id)["attempts"]
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "failed"), (2, "failed"), (3, "completed")]
    assert attempts[0]["error"] == "ConnectionError: call 1 fails" and "Traceback" in attempts[0]["traceback"]
    assert result.tasks["flaky"]["attempts"] == 3

    (tmp_path / "count").write_text("-5")  # now it needs 8 calls: more than 1 + 2 retries
    failed = run(wf, client=wf_client)
    assert failed.state == "failed" and failed.failed == 1
    assert failed.errors["flaky"] == "ConnectionError: call 1 fails".replace("1", "-2")


@task(timeout=1, cache=False)
def sleepy(seconds: float) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return "woke up"


@task(cache=False)
def after(value: str) -> str:
    return value + "!"


@task(cache=False)
def quick() -> str:
    return "quick"


def test_timeout_fails_task_skips_dependents_and_run_ends(wf_client: Client) -> None:
    with Workflow("timeout") as wf:
        after(after(sleepy(120)))
        quick()
    result = run(wf, client=wf_client)
    assert result.state == "failed"
    assert result.tasks["sleepy"]["state"] == "failed"
    assert "TaskTimeout" in result.errors["sleepy"] and "timeout of 1s" in result.errors["sleepy"]
    assert result.tasks["after"]["state"] == "skipped" and result.tasks["after-2"]["state"] == "skipped"
    assert result.results == {"quick": "quick"}
    assert (result.computed, result.failed, result.skipped) == (1, 1, 2)


def test_resume_computes_only_the_failed_task_and_dependents(wf_client: Client, tmp_path: Path) -> None:
    from caelum_dask.workflow.loader import load_workflow

    wf = load_workflow(Path(__file__).parent / "workflow_defs" / "resumable.py")
    marker = tmp_path / "fail-c"
    marker.write_text("x")
    first = run(wf, client=wf_client, params={"x": 2, "marker": str(marker)})
    assert first.state == "failed"
    assert {n: t["state"] for n, t in first.tasks.items()} == {
        "a": "completed", "b": "completed", "c": "failed", "d": "skipped", "e": "completed"}
    marker.unlink()
    second = run(wf, client=wf_client, resume=first.run_id)  # parameters come from the first run
    assert second.ok and second.params == {"x": 2, "marker": str(marker)}
    assert (second.computed, second.cached) == (2, 3)
    assert {n for n, t in second.tasks.items() if t["state"] == "completed"} == {"c", "d"}
    assert second.results == {"d": (2 + 1) * 2 + 100 - 1, "e": 20}
    with RunStore() as store:
        row = store.run(second.run_id)
    assert row["resumed_from"] == first.run_id and (row["computed"], row["cached"], row["failed"]) == (2, 3, 0)
    third = run(wf, client=wf_client, params={"x": 2, "marker": str(marker)})  # plain re-run: all cached
    assert third.ok and third.computed == 0 and third.cached == 5


def test_run_store_and_events(wf_client: Client) -> None:
    with Workflow("recorded", params={"n": 3}) as wf:
        total(square.map(numbers(wf.param("n"))))
    result = run(wf, client=wf_client)
    with RunStore() as store:
        row = store.run(result.run_id)
        listed = store.runs()
    assert listed[0]["id"] == result.run_id
    assert row["workflow"] == "recorded" and row["parameters"] == {"n": 3} and row["state"] == "completed"
    assert row["started"] <= row["finished"] and row["computed"] == result.computed == 6
    tasks = {t["task"]: t for t in row["tasks"]}
    assert set(tasks) == {"numbers", "square", "square[0]", "square[1]", "square[2]", "total"}
    for t in tasks.values():
        assert t["state"] == "completed" and t["worker"].startswith("tcp://127.0.0.1:")
        assert t["machine"].endswith("@127.0.0.1") and t["attempts"] == 1 and t["cache_key"]
    assert result.per_machine == {tasks["total"]["machine"]: 6}

    def mine() -> list[dict]:
        return [m for _t, m in wf_client.get_events(events.WORKFLOWS) if m.get("run_id") == result.run_id]

    deadline = time.monotonic() + 10
    while not any(m["event"] == "run-finished" for m in mine()) and time.monotonic() < deadline:
        time.sleep(0.05)
    msgs = mine()
    started = next(m for m in msgs if m["event"] == "run-started")
    assert started["workflow"] == "recorded" and set(started["nodes"]) == {"numbers", "square", "total"}
    assert sorted(map(tuple, started["edges"])) == [("numbers", "square"), ("square", "total")]
    states = [m for m in msgs if m["event"] == "task-state"]
    assert {m["state"] for m in states} <= {"running", "completed"}
    assert all({"run_id", "task", "state", "worker", "machine"} <= set(m) for m in states)
    completed = {m["task"]: m for m in states if m["state"] == "completed"}
    assert set(completed) == set(tasks) and all(m["started"] <= row["finished"] for m in completed.values())
    assert any(m["state"] == "running" and m["task"] == "square" for m in states)  # the fan-out waits: announced
    finished = next(m for m in msgs if m["event"] == "run-finished")
    assert (finished["state"], finished["computed"], finished["cached"], finished["failed"]) == ("completed", 6, 0, 0)


@task(cache=False)
def scaled(x: int, factor: int) -> int:
    time.sleep(0.01)
    return x * factor


def test_two_concurrent_runs_do_not_share_keys(wf_client: Client) -> None:
    with Workflow("concurrent", params={"factor": 1}) as wf:
        total([scaled(i, wf.param("factor")) for i in range(8)])
    outcomes: dict[str, object] = {}

    def go(label: str, factor: int) -> None:
        outcomes[label] = run(wf, client=wf_client, params={"factor": factor})

    threads = [threading.Thread(target=go, args=args) for args in (("a", 2), ("b", 3), ("c", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    r2, r3, r2b = outcomes["a"], outcomes["b"], outcomes["c"]
    assert r2.ok and r3.ok and r2b.ok
    assert r2["total"] == 2 * 28 and r3["total"] == 3 * 28 and r2b["total"] == 2 * 28
    assert len({r2.run_id, r3.run_id, r2b.run_id}) == 3
    # every run computed every one of its own tasks: nothing was handed over by a shared key
    assert r2.computed == r3.computed == r2b.computed == 9
    seen = {(m["run_id"], m["task"]) for _t, m in wf_client.get_events(events.WORKFLOWS)
            if m.get("event") == "task-state" and m.get("state") == "completed"}
    for r in (r2, r3, r2b):
        assert {task for rid, task in seen if rid == r.run_id} == set(r.tasks)


@task(cache=False)
def stamp(i: int) -> tuple[int, float]:
    time.sleep(0.02)
    return i, time.time()


def _order(result) -> list[int]:
    return [i for i, _t in sorted(result.results.values(), key=lambda v: v[1])]


def test_priorities_change_order_when_slots_are_scarce() -> None:
    with dask.config.set({"caelum.embedded.n-workers": 1}):
        client = connect()
    try:
        def build(prio) -> Workflow:
            with Workflow("prio") as wf:
                for i in range(6):
                    stamp.with_options(name=f"s{i}", priority=prio(i))(i)
            return wf

        up = run(build(lambda i: i), client=client)
        down = run(build(lambda i: -i), client=client)
    finally:
        client.close()
    assert up.ok and down.ok
    assert _order(up) == [5, 4, 3, 2, 1, 0]
    assert _order(down) == [0, 1, 2, 3, 4, 5]


def test_run_file_converts_text_parameters(wf_client: Client) -> None:
    from caelum_dask.workflow import run_file

    result = run_file(str(Path(__file__).parent / "workflow_defs" / "resumable.py"), client=wf_client,
                      params={"x": "3", "marker": ""})
    assert result.ok and result.params == {"x": 3, "marker": ""}
    assert result.results == {"d": (3 + 1) * 2 + 100 - 1, "e": 30}
    with RunStore() as store:
        assert store.run(result.run_id)["file"].endswith("resumable.py")


def test_another_handler_on_the_topic_keeps_working(wf_client: Client) -> None:
    seen: list[dict] = []
    wf_client.subscribe_topic(events.WORKFLOWS, lambda event: seen.append(event[1]))  # e.g. a dashboard
    try:
        with Workflow("shared-topic") as wf:
            total([square(i) for i in range(3)])
        result = run(wf, client=wf_client, cache=False)
        assert result.ok and result.computed == 4 and result["total"] == 5
        deadline = time.monotonic() + 10
        while not any(m.get("run_id") == result.run_id and m.get("event") == "run-finished" for m in seen):
            assert time.monotonic() < deadline, "the other subscriber stopped receiving events"
            time.sleep(0.05)
        assert {m["task"] for m in seen if m.get("run_id") == result.run_id and m.get("event") == "task-state"
            and m.get("state") == "completed"} == set(result.tasks)
    finally:
        wf_client.unsubscribe_topic(events.WORKFLOWS)


def test_final_states_recoverable_from_the_scheduler_log(wf_client: Client) -> None:
    from caelum_dask.workflow.runner import _recover

    with Workflow("recover") as wf:
        total([square(i) for i in range(4)])
    result = run(wf, client=wf_client, cache=False)
    recovered = _recover(wf_client, result.run_id, set(result.tasks))
    assert {m["task"]: m["state"] for m in recovered} == {t: "completed" for t in result.tasks}


def test_helper_module_next_to_the_workflow_file_is_shipped(wf_client: Client) -> None:
    from caelum_dask.workflow import run_file

    result = run_file(str(Path(__file__).parent / "workflow_defs" / "with_helper.py"), client=wf_client)
    assert result.ok, result.errors
    assert result["tripled"] == 12

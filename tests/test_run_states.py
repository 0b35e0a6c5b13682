"""Honest run states (issue #16 item 2): a run whose client died reads ``interrupted``, and resumes.

A real ``caelum run`` (a subprocess on its own embedded cluster) is stopped mid-run — kill -9,
so nothing of it records anything, and SIGTERM, so its own cleanup does — while one task
waits on a gate file the test creates. ``caelum runs list --json`` then shows the run
``interrupted`` with a reason, and ``caelum run FILE --resume RUN_ID`` finishes it, reusing
the tasks that had completed (their own execution records prove they did not run again).
The run store's owner check is also exercised directly: a live owner keeps its run
``running``; a dead one, or a reused pid, makes it ``interrupted``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from distributed import Client
from harness import pythonpath, run_caelum, wait_for

from caelum_dask.proctree import JOB_ENV, kill, marked_in
from caelum_dask.workflow.owner import Owner, OwnerCheck
from caelum_dask.workflow.store import RunStore

WORKFLOW = '''
"""Three quick tasks, then one that waits (bounded) for a gate file, then a last one."""
import pathlib, time, uuid
from caelum_dask.workflow import Workflow, task

RECORDS = pathlib.Path({records!r})
GATE = pathlib.Path({gate!r})


def _record(kind, name):
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{{kind}}~{{name}}~{{uuid.uuid4().hex}}").touch()


@task
def prepare(i):
    _record("done", f"prepare{{i}}")
    return i * 10


@task
def gated(values):
    _record("start", "gated")
    deadline = time.monotonic() + 240
    while not GATE.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the gate never opened")
        time.sleep(0.05)
    _record("done", "gated")
    return sum(values)


@task
def report(total):
    _record("done", "report")
    return total + 1


with Workflow("gated_run") as wf:
    report(gated([prepare.with_options(name=f"prepare{{i}}")(i) for i in range(3)]))
'''
PREPARED = {"prepare0", "prepare1", "prepare2"}


def _records(folder: Path) -> list[tuple[str, str]]:
    """(kind, task) of every execution record the tasks left."""
    if not folder.exists():
        return []
    return [tuple(p.name.split("~")[:2]) for p in folder.iterdir()]  # type: ignore[misc]


def _stored_run(store_path: Path) -> dict | None:
    """The newest run as the store has it (read without reconciling: the test only watches)."""
    if not store_path.exists():
        return None
    with RunStore(store_path) as store:
        runs = store.runs(1, reconcile=False)
        return store.run(runs[0]["id"], reconcile=False) if runs else None


@pytest.fixture
def job_marker() -> Iterator[str]:
    """A CAELUM_JOBS marker for the `caelum run` under test; whatever carries it is killed at the end."""
    marker = f"test-run-states-{uuid.uuid4().hex[:12]}"
    try:
        yield marker
    finally:
        kill(marked_in(JOB_ENV, marker))


def _start_run(flow: Path, marker: str) -> subprocess.Popen[str]:
    outer = os.environ.get(JOB_ENV)
    env = {**os.environ, "PYTHONPATH": pythonpath(), "PYTHONUNBUFFERED": "1",
           "DASK_CAELUM__EMBEDDED__N_WORKERS": "2", JOB_ENV: f"{outer}:{marker}" if outer else marker}
    return subprocess.Popen([sys.executable, "-m", "caelum_dask", "run", str(flow)], env=env, cwd=flow.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _mid_run(proc: subprocess.Popen[str], store_path: Path, records: Path) -> dict:
    """Wait until the store has the quick tasks completed and the gated one running."""
    def ready() -> dict | None:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"`caelum run` exited ({proc.returncode}) before the gate:\n{out}\n{err}")
        run = _stored_run(store_path)
        if run is None:
            return None
        states = {t["task"]: t["state"] for t in run["tasks"]}  # the gated task's start reached the store too
        return run if states.get("gated") == "running" and all(states.get(t) == "completed" for t in PREPARED) else None

    return wait_for(ready, timeout=150, interval=0.2, what="the quick tasks to complete and the gated one to start")


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_stopped_client_reads_interrupted_and_resumes(tmp_path: Path, _caelum_home: Path, job_marker: str,
                                                      how: signal.Signals) -> None:
    records, gate = tmp_path / "records", tmp_path / "gate"
    flow = tmp_path / "gated_run.py"
    flow.write_text(textwrap.dedent(WORKFLOW.format(records=str(records), gate=str(gate))))
    store_path = _caelum_home / "workflows.sqlite"

    proc = _start_run(flow, job_marker)
    try:
        run_id = _mid_run(proc, store_path, records)["id"]
        proc.send_signal(how)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    kill(marked_in(JOB_ENV, job_marker))  # kill -9 leaves the embedded cluster's workers behind

    listed = run_caelum("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    run = next(r for r in json.loads(listed.stdout) if r["id"] == run_id)
    assert run["state"] == "interrupted", run
    assert run["reason"], run
    if how == signal.SIGKILL:  # nothing recorded it: the reader found the owner gone
        assert f"process {run['owner_pid']}" in run["reason"] and "gone" in run["reason"], run
    else:  # the client's own cleanup recorded it
        assert run["reason"] == "its client was stopped (SIGTERM)", run
    assert run["owner_pid"] == proc.pid and run["owner_host"] == socket.gethostname()
    assert run["computed"] == len(PREPARED) and run["finished"] is not None

    shown = run_caelum("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    tasks = {t["task"]: t["state"] for t in json.loads(shown.stdout)["tasks"]}
    assert tasks == {**dict.fromkeys(PREPARED, "completed"), "gated": "interrupted", "report": "pending"}
    text = run_caelum("runs", "show", run_id)
    assert f"run {run_id} (gated_run): interrupted" in text.stdout and "why: " in text.stdout, text.stdout

    gate.touch()
    resumed = run_caelum("run", str(flow), "--resume", run_id, "--json", timeout=240,
                         env={"PYTHONPATH": pythonpath(), "DASK_CAELUM__EMBEDDED__N_WORKERS": "2"})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["state"] == "completed" and result["resumed_from"] == run_id
    assert (result["cached"], result["computed"], result["failed"]) == (len(PREPARED), 2, 0), result
    assert result["results"] == {"report": 0 + 10 + 20 + 1}
    done = sorted(t for kind, t in _records(records) if kind == "done")
    assert done == sorted(PREPARED | {"gated", "report"}), "the completed tasks must not run again"

    after = {r["id"]: r["state"] for r in json.loads(run_caelum("runs", "list", "--json").stdout)}
    assert after == {run_id: "interrupted", result["run_id"]: "completed"}


# -- the owner check, on real processes ---------------------------------------------------------

def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _start(store: RunStore, run_id: str, owner: Owner) -> None:
    store.start_run(run_id, "wf", {"n": 1}, ["a", "b", "c"], owner=owner)
    store.record(run_id, [{"task": "a", "state": "completed", "worker": "w1", "machine": "m", "started": time.time()},
                          {"task": "b", "state": "running", "worker": "w1", "machine": "m"}])


def test_run_of_a_dead_owner_is_interrupted_and_a_live_one_stays_running(tmp_path: Path) -> None:
    host = socket.gethostname()
    alive, doomed = _sleeper(), _sleeper()
    try:
        with RunStore(tmp_path / "runs.sqlite") as store:
            _start(store, "live", Owner(host, alive.pid, psutil.Process(alive.pid).create_time()))
            _start(store, "dead", Owner(host, doomed.pid, psutil.Process(doomed.pid).create_time()))
            # the same pid, but a process that started at another time: not the owner
            _start(store, "reused", Owner(host, alive.pid, psutil.Process(alive.pid).create_time() - 3600))
            assert {r["id"]: r["state"] for r in store.runs()} == {"live": "running", "dead": "running",
                                                                 "reused": "interrupted"}
            doomed.kill()
            doomed.wait()
            states = {r["id"]: (r["state"], r["reason"]) for r in store.runs()}
            dead = store.run("dead")
            reused = store.run("reused")
        assert states["live"] == ("running", None)
        assert states["dead"][0] == "interrupted" and f"process {doomed.pid} on {host} is gone" in states["dead"][1]
        assert reused["state"] == "interrupted" and "another process" in reused["reason"]
        assert {t["task"]: t["state"] for t in dead["tasks"]} == {"a": "completed", "b": "interrupted", "c": "pending"}
        assert [a["state"] for a in dead["attempts"] if a["task"] == "b"] == ["interrupted"]
        assert dead["computed"] == 1 and dead["finished"] is not None
    finally:
        for proc in (alive, doomed):
            proc.kill()
            proc.wait()


def test_owner_that_finishes_after_all_keeps_its_own_end(tmp_path: Path) -> None:
    """A reader's verdict never overwrites how the owner ended its run, and the owner's end wins."""
    with RunStore(tmp_path / "runs.sqlite") as store:
        _start(store, "r", Owner.current())
        store.finish_run("r", "completed", {"computed": 3})
        assert store.end_unfinished("r", "interrupted", "too late") is False
        assert store.run("r")["state"] == "completed"
        _start(store, "s", Owner.current())
        assert store.end_unfinished("s", "interrupted", "given up for dead") is True
        store.finish_run("s", "completed", {"computed": 3})
        run = store.run("s")
        assert (run["state"], run["reason"]) == ("completed", None)


def test_scheduler_check_knows_connected_clients(client: Client) -> None:
    """Runs owned on another host are checked with the scheduler: is the run's client still there?"""
    check = OwnerCheck(timeout=5)
    address = client.scheduler.address
    assert client.id in (check.connected_clients(address) or set())
    assert OwnerCheck(timeout=1).connected_clients("tcp://127.0.0.1:1") is None  # nobody there: unknown
    owner = Owner.current(client)
    assert (owner.scheduler, owner.client) == (address, client.id)
    # a run of another host whose scheduler is on that host's loopback: nothing to ask, left as it is
    assert check.reason({**owner.columns(), "owner_host": "elsewhere.invalid"}) is None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mcp_shows_a_dead_clients_run_interrupted_and_resumes_it(client: Client, tmp_path: Path,
                                                                   _caelum_home: Path, job_marker: str) -> None:
    """A Python-API client on a real scheduler is killed -9; MCP's tools see what the CLI sees."""
    import asyncio

    from mcp import Client as McpClient

    from caelum_dask.mcp_server import build_server
    from caelum_dask.mcp_server.handle import ClusterHandle

    records, gate = tmp_path / "records", tmp_path / "gate"
    flow = tmp_path / "gated_run.py"
    flow.write_text(textwrap.dedent(WORKFLOW.format(records=str(records), gate=str(gate))))
    address = client.scheduler.address
    env = {**os.environ, "PYTHONPATH": pythonpath(), "CAELUM_SCHEDULER": address, JOB_ENV: job_marker}
    proc = subprocess.Popen([sys.executable, "-c", f"from caelum_dask.workflow import run_file; run_file({str(flow)!r})"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        run_id = _mid_run(proc, _caelum_home / "workflows.sqlite", records)["id"]
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    gate.touch()  # the orphaned gated task may finish on the cluster: nobody records it any more

    handle = ClusterHandle(address)
    server = build_server(handle=handle)

    async def go() -> tuple[Any, Any, Any]:
        async with McpClient(server) as mcp:
            status = await mcp.call_tool("workflow_status", {"run_id": run_id})
            runs = await mcp.read_resource("caelum://runs")
            resumed = await mcp.call_tool("run_workflow", {"path": str(flow), "resume": run_id})
            return status, runs, resumed

    try:
        status, runs, resumed = asyncio.run(go())
    finally:
        handle.close()
    assert not status.is_error, status.content
    stored = status.structured_content
    assert stored["state"] == "interrupted" and f"process {proc.pid}" in stored["reason"], stored
    assert stored["scheduler"] == address and stored["owner_client"]
    assert {r["id"]: r["state"] for r in json.loads(runs.contents[0].text)}[run_id] == "interrupted"
    assert not resumed.is_error, resumed.content
    result = resumed.structured_content
    assert result["state"] == "completed" and result["resumed_from"] == run_id
    assert (result["cached"], result["computed"]) == (len(PREPARED), 2), result
    assert result["results"] == {"report": 31}
    assert sorted(t for kind, t in _records(records) if kind == "done" and t.startswith("prepare")) == sorted(PREPARED)

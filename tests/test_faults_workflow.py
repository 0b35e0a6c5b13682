"""Faults during a workflow run, through the real `caelum run` CLI on real Dask processes.

* kill -9 a worker mid-run: the run completes with exactly the results of a clean run; the
  tasks' own execution records show that every task finished exactly once (the one lost with
  the worker started again elsewhere) — nothing lost, nothing duplicated.
* kill -9 the scheduler (and its workers) mid-run: `caelum run` fails with one clear line and a
  non-zero exit; on a new scheduler `caelum run --resume RUN_ID` finishes the run from the run
  store, reusing (not recomputing) the tasks completed before the crash.

Tasks block on a gate file the test creates, so the test (not a sleep) decides when the
lost work may proceed. (tests/test_workflow_cluster.py covers worker loss through the Python
API; this file covers the CLI and exact results.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness import ProcessCluster, run_caelum

WORKFLOW = '''
"""A fault-test workflow: every execution leaves a record; gated tasks wait for a file."""
import os, pathlib, time, uuid
from caelum_dask.workflow import Workflow, task

RECORDS = pathlib.Path({records!r})
GATE = pathlib.Path({gate!r})


def _record(kind, name):
    from distributed import get_worker
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{{kind}}~{{name}}~{{get_worker().name}}~{{uuid.uuid4().hex}}").touch()


def _wait_gate():
    while not GATE.exists():
        time.sleep(0.02)


@task
def prepare(i):
    _record("start", f"prepare{{i}}")
    _record("done", f"prepare{{i}}")
    return i * 10


@task
def gated(bases, j):
    _record("start", f"gated{{j}}")
    _wait_gate()
    _record("done", f"gated{{j}}")
    return bases[j % len(bases)] + j * j


@task
def total(values):
    _record("start", "total")
    _record("done", "total")
    return sorted(values)


with Workflow("faulty") as wf:
    bases = [prepare.with_options(name=f"prepare{{i}}")(i) for i in range({n_prepare})]
    total([gated.with_options(name=f"gated{{j}}")(bases, j) for j in range({n_gated})])
'''

N_PREPARE = 3
N_GATED = 6


def expected_total() -> list[int]:
    """What a clean run computes (the same functions, run in-process)."""
    return sorted((j % N_PREPARE) * 10 + j * j for j in range(N_GATED))


def write_workflow(tmp_path: Path, gate_open: bool = False) -> tuple[Path, Path, Path]:
    records, gate = tmp_path / "records", tmp_path / "gate"
    path = tmp_path / "faulty.py"
    path.write_text(WORKFLOW.format(records=str(records), gate=str(gate), n_prepare=N_PREPARE, n_gated=N_GATED))
    if gate_open:
        gate.touch()
    return path, records, gate


def executions(records: Path) -> list[tuple[str, str, str]]:
    """(kind, task, worker name) for every record the tasks left."""
    if not records.exists():
        return []
    return [tuple(p.name.split("~")[:3]) for p in records.iterdir()]  # type: ignore[misc]


def poll(predicate: Any, what: str, timeout: float = 60, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"`caelum run` exited ({proc.returncode}) while waiting for {what}:\n{out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_run(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "caelum_dask", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"`caelum run` did not finish:\n{out}\n{err}")
    return proc.returncode, out, err


def kill_all(cluster: ProcessCluster) -> None:
    """kill -9 every process of the cluster (scheduler and workers) and reap them."""
    for proc in cluster.procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    cluster.workers.clear()


def test_worker_killed_mid_run_gives_exactly_the_clean_results(process_cluster: ProcessCluster, tmp_path: Path) -> None:
    path, records, gate = write_workflow(tmp_path)
    address = process_cluster.start_scheduler()
    process_cluster.start_worker("steady")
    process_cluster.start_worker("doomed")
    process_cluster.wait_for_workers(2).close()

    proc = start_run(str(path), "--scheduler", address, "--json")
    try:
        # a gated task runs on each worker (waiting there for the gate); the steady one thus
        # holds copies of every prepare result, so only the doomed worker's task is lost
        poll(lambda: {w for k, t, w in executions(records) if k == "start" and t.startswith("gated")}
             == {"steady", "doomed"}, "a gated task to start on each worker", proc=proc)
        lost = [t for k, t, w in executions(records) if k == "start" and w == "doomed" and t.startswith("gated")]
        # ...and the run store has it running there (so the lost attempt is on record)
        run_id = poll(_current_run, "the run to be recorded", proc=proc)
        poll(lambda: all(_run_store_tasks(run_id).get(t) == "running" for t in lost),
             "the lost task to be recorded as running", proc=proc)
        process_cluster.kill_worker("doomed")
        gate.touch()
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 0, err
    result = json.loads(out)
    assert result["state"] == "completed"
    assert result["results"] == {"total": expected_total()}
    assert result["computed"] == N_PREPARE + N_GATED + 1 and result["failed"] == 0 and result["skipped"] == 0

    runs = executions(records)
    done = [t for k, t, _w in runs if k == "done"]
    every = {f"prepare{i}" for i in range(N_PREPARE)} | {f"gated{j}" for j in range(N_GATED)} | {"total"}
    assert sorted(done) == sorted(every), "each task must finish exactly once: nothing lost, nothing duplicated"
    assert not [t for k, t, w in runs if k == "done" and w == "doomed" and t in lost]
    started_twice = {t for t in lost if sum(1 for k, t2, _w in runs if k == "start" and t2 == t) == 2}
    assert started_twice == set(lost), "the task lost with the worker must start again on the survivor"
    assert all(result["tasks"][t]["attempts"] >= 2 for t in lost)

    shown = run_caelum("runs", "show", result["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    lost_attempts = [a for a in json.loads(shown.stdout)["attempts"] if a["state"] == "lost"]
    assert {a["task"] for a in lost_attempts} == set(lost)


def _run_store_tasks(run_id: str) -> dict[str, str]:
    from caelum_dask.workflow.store import RunStore

    with RunStore() as store:
        return {t["task"]: t["state"] for t in store.run(run_id)["tasks"]}


def _current_run() -> str | None:
    from caelum_dask.workflow.store import RunStore

    with RunStore() as store:
        runs = store.runs(1)
    return runs[0]["id"] if runs else None


def test_scheduler_restart_mid_run_then_resume_reuses_completed_tasks(tmp_path: Path) -> None:
    path, records, gate = write_workflow(tmp_path)
    first = ProcessCluster(logdir=tmp_path / "first")
    second = ProcessCluster(logdir=tmp_path / "second")
    first.logdir.mkdir()  # type: ignore[union-attr]
    second.logdir.mkdir()  # type: ignore[union-attr]
    proc: subprocess.Popen[str] | None = None
    try:
        address = first.start_scheduler()
        first.start_worker("a")
        first.start_worker("b")
        first.wait_for_workers(2).close()
        proc = start_run(str(path), "--scheduler", address)
        prepared = {f"prepare{i}" for i in range(N_PREPARE)}
        run_id = poll(_current_run, "the run to be recorded", proc=proc)
        # the prepare tasks are completed in the run store, and gated tasks hold both workers
        poll(lambda: all(_run_store_tasks(run_id).get(t) == "completed" for t in prepared),
             "the prepare tasks to complete", proc=proc)
        poll(lambda: len([1 for k, t, _w in executions(records) if k == "start" and t.startswith("gated")]) == 2,
             "two gated tasks to start", proc=proc)
        kill_all(first)
        code, out, err = finish(proc)
        assert code != 0, out
        lines = [ln for ln in err.splitlines() if ln.startswith("caelum: error:")]
        assert len(lines) == 1 and "scheduler" in lines[0] and run_id in lines[0], err
        assert "--resume" in lines[0], err
        assert "Traceback" not in err, err
        assert _run_store_tasks(run_id)["total"] != "completed"

        before = executions(records)
        assert not [t for k, t, _w in before if k == "done" and t.startswith("gated")]
        new_address = second.start_scheduler()
        second.start_worker("c")
        second.start_worker("d")
        second.wait_for_workers(2).close()
        gate.touch()
        resumed = run_caelum("run", str(path), "--resume", run_id, "--scheduler", new_address, "--json", timeout=90)
        assert resumed.returncode == 0, resumed.stderr
        result = json.loads(resumed.stdout)
        assert result["state"] == "completed" and result["resumed_from"] == run_id
        assert result["results"] == {"total": expected_total()}
        assert result["cached"] == N_PREPARE, result
        assert result["computed"] == N_GATED + 1, result
        assert all(result["tasks"][t]["state"] == "cached" for t in prepared)

        runs = executions(records)
        done = sorted(t for k, t, _w in runs if k == "done")
        every = sorted(prepared | {f"gated{j}" for j in range(N_GATED)} | {"total"})
        assert done == every, "reused tasks must not run again; the rest exactly once"
        assert sorted(t for k, t, _w in runs if k == "start" and t in prepared) == sorted(prepared)

        shown = run_caelum("runs", "show", result["run_id"], "--json")
        assert shown.returncode == 0, shown.stderr
        stored = json.loads(shown.stdout)
        assert stored["state"] == "completed" and stored["resumed_from"] == run_id
        assert stored["cached"] == N_PREPARE and stored["computed"] == N_GATED + 1
        assert {t["task"]: t["state"] for t in stored["tasks"] if t["task"] in prepared} == dict.fromkeys(prepared, "cached")
        old = json.loads(run_caelum("runs", "show", run_id, "--json").stdout)
        assert old["state"] == "interrupted" and "scheduler" in old["reason"]
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        first.stop()
        second.stop()

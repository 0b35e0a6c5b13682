"""Workflows on real `dask scheduler` / `dask worker` subprocesses: placement and worker loss."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import cloudpickle
import pytest
from dask.utils import key_split

from caelum_dask import events
from caelum_dask.errors import UnsatisfiableRequirement
from caelum_dask.workflow import RunStore, Workflow, run, task, worker_resources

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@task(resources={"gpu_required": True}, cache=False)
def on_gpu(i: int, gate: str) -> dict:
    return {"i": i, "gpu": worker_resources().get("GPU", 0), "gate": gate}


@task(cache=False, priority=3, retries=2, resources={"machine": socket.gethostname()})
def gate(path: str) -> str:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "open"


def _scheduler_view(dask_scheduler) -> dict:
    return {str(ts.key): {"annotations": dict(ts.annotations or {}), "state": ts.state,
                          "workers": sorted(ts.worker_restrictions or []), "loose": ts.loose_restrictions,
                          "resources": dict(ts.resource_restrictions or {}), "retries": ts.retries}
            for ts in dask_scheduler.tasks.values() if (ts.annotations or {}).get("caelum_kind") == "workflow"}


@task(cache=False)
def on_any(i: int) -> int:
    return i


@task(resources={"gpus": 4}, fallback=True, cache=False)
def wants_four_gpus() -> float:
    return worker_resources().get("GPU", 0)


@task(resources={"gpus": 4}, cache=False)
def needs_four_gpus() -> int:
    return 1


def test_gpu_tasks_run_only_on_the_gpu_tagged_worker(process_cluster, tmp_path) -> None:
    process_cluster.start_scheduler()
    process_cluster.start_worker("gpu-box", "--resources", "GPU=1")
    process_cluster.start_worker("cpu-box")
    client = process_cluster.wait_for_workers(2)
    try:
        gpu_address = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "gpu-box")
        with Workflow("placement", params={"door": str(tmp_path / "door")}) as wf:
            opened = gate(wf.param("door"))
            gpu = [on_gpu.with_options(name=f"g{i}")(i, opened) for i in range(6)]
            cpu = [on_any.with_options(name=f"c{i}")(i) for i in range(6)]
            wants_four_gpus()
        box: dict = {}
        runner = threading.Thread(target=lambda: box.setdefault("result", run(wf, client=client)))
        runner.start()
        # while the gate holds the GPU tasks back, read what the scheduler made of the annotations
        deadline = time.monotonic() + 60
        view: dict = {}
        while time.monotonic() < deadline:
            view = client.run_on_scheduler(_scheduler_view)
            if any(key_split(k) == "gate" and v["state"] == "processing" for k, v in view.items()):
                break
            time.sleep(0.05)
        (tmp_path / "door").write_text("open")
        runner.join(120)
        gate_view = next(v for k, v in view.items() if key_split(k) == "gate")  # Dask's prefix is the step
        assert gate_view["annotations"]["priority"] == 3
        assert gate_view["annotations"]["retries"] == 2 and gate_view["retries"] == 2
        assert gate_view["workers"] == sorted(client.scheduler_info()["workers"]) and gate_view["loose"] is False
        gpu_views = [v for k, v in view.items() if key_split(k) in {f"g{i}" for i in range(6)}]
        assert len(gpu_views) == 6 and all(v["resources"] == {"GPU": 1.0} for v in gpu_views)

        result = box["result"]
        assert result.ok, result.errors
        for i in range(6):
            assert result.tasks[f"g{i}"]["worker"] == gpu_address
            assert result[f"g{i}"] == {"i": i, "gpu": 1, "gate": "open"}
        assert {result.tasks[f"c{i}"]["state"] for i in range(6)} == {"completed"}
        assert result["wants_four_gpus"] in (0, 1)  # fell back: ran although no worker has 4 GPUs
        assert len(gpu) == len(cpu) == 6

        with Workflow("impossible") as bad:
            needs_four_gpus()
        with pytest.raises(UnsatisfiableRequirement, match="task 'needs_four_gpus': no machine can meet the requirement"):
            run(bad, client=client)
    finally:
        client.close()


@task(cache=False)
def slow_square(i: int) -> int:
    time.sleep(0.4)
    return i * i


@task(cache=False)
def add_up(values: list[int]) -> int:
    return sum(values)


def test_killed_worker_mid_run_still_completes(process_cluster) -> None:
    process_cluster.start_scheduler()
    process_cluster.start_worker("steady")
    process_cluster.start_worker("doomed")
    client = process_cluster.wait_for_workers(2)
    try:
        doomed = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "doomed")
        with Workflow("survivor") as wf:
            add_up([slow_square.with_options(name=f"sq{i}")(i) for i in range(12)])
        box: dict = {}
        runner = threading.Thread(target=lambda: box.setdefault("result", run(wf, client=client)))
        runner.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            busy = [m for _t, m in client.get_events(events.WORKFLOWS)
                    if m.get("event") == "task-state" and m.get("state") == "running" and m.get("worker") == doomed]
            if busy:
                break
            time.sleep(0.05)
        assert busy, "no task ever started on the worker to be killed"
        process_cluster.kill_worker("doomed")
        runner.join(120)
        result = box["result"]
        assert result.ok, result.errors
        assert result["add_up"] == sum(i * i for i in range(12))
        assert {t["state"] for t in result.tasks.values()} == {"completed"}
        rerun_on_steady = [n for n, t in result.tasks.items() if t["attempts"] >= 2]
        assert rerun_on_steady, "the task lost with the killed worker was not run again"
        assert all(result.tasks[n]["worker"] != doomed for n in rerun_on_steady)
        with RunStore() as store:
            attempts = store.run(result.run_id)["attempts"]
        lost = [a for a in attempts if a["state"] == "lost"]
        assert lost and all(a["worker"] == doomed for a in lost)
    finally:
        client.close()

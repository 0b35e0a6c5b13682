"""Learned task durations survive a scheduler restart (issue: Self-sizing, learned durations)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from distributed import Client, Event
from harness import wait_for

from caelum_dask.learned import load, save


def test_saved_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "learned" / "task-durations.json"
    assert load(path) == {}
    save(path, {"load-data": 1.5, "zero": 0.0})
    assert load(path) == {"load-data": 1.5}
    path.write_text("{not json")
    assert load(path) == {}


def slowstep(event_name: str | None = None) -> int:
    if event_name:
        Event(event_name).wait()
    time.sleep(0.3)
    return 1


def _prefix_average(dask_scheduler, name: str) -> float | None:
    prefix = dask_scheduler.task_prefixes.get(name)
    return None if prefix is None else prefix.duration_average


@pytest.mark.slow
def test_restarted_scheduler_knows_a_prefix_before_running_it(process_cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    process_cluster.env.update({"DASK_CAELUM__HOME": str(home)})
    process_cluster.start_scheduler()
    process_cluster.start_worker("w")
    with process_cluster.wait_for_workers(1) as client:
        futures = [client.submit(slowstep, key=f"slowstep-{i:08x}a") for i in range(3)]
        assert sum(client.gather(futures)) == 3
        learned = client.run_on_scheduler(_prefix_average, name="slowstep")
        assert learned and learned > 0.2
    scheduler = process_cluster.procs[0]
    os.killpg(scheduler.pid, signal.SIGTERM)  # a clean stop saves what it learned
    scheduler.wait(timeout=60)
    saved = load(home / "learned" / "task-durations.json")
    assert saved["slowstep"] == pytest.approx(learned, rel=0.01)

    process_cluster.start_scheduler()
    process_cluster.start_worker("w2")
    with process_cluster.wait_for_workers(1) as client:
        gate = Event("gate", client=client)
        future = client.submit(slowstep, "gate", key="slowstep-12345678b")
        wait_for(lambda: client.run_on_scheduler(_prefix_average, name="slowstep") is not None, timeout=60)
        # known before any task of the prefix ran on this scheduler
        assert client.run_on_scheduler(_prefix_average, name="slowstep") == pytest.approx(learned, rel=0.01)
        gate.set()
        assert future.result(timeout=60) == 1

"""A hung machine (SIGSTOP: nothing closes, only heartbeats stop) leaves the cluster in seconds."""

from __future__ import annotations

import os
import signal

import pytest
from harness import wait_for

from caelum_dask import events


@pytest.mark.slow
def test_stopped_worker_is_removed_and_its_work_moves(process_cluster) -> None:
    process_cluster.start_scheduler()  # Dask's worker-ttl stays at its default (5 minutes)
    hung = process_cluster.start_worker("hung")
    client = process_cluster.wait_for_workers(1)
    try:
        hung_address = next(iter(client.scheduler_info()["workers"]))
        process_cluster.start_worker("alive")
        client.wait_for_workers(2, timeout=90)
        seen: list[dict] = []
        client.subscribe_topic(events.MACHINES, lambda event: seen.append(event[1]))
        # a task pinned to the hung worker (allowed elsewhere) must finish on the other one
        os.killpg(hung.pid, signal.SIGSTOP)
        future = client.submit(lambda: os.getpid(), workers=[hung_address], allow_other_workers=True, pure=False)
        wait_for(lambda: hung_address not in client.scheduler_info()["workers"], timeout=120,
                 what="the silent worker to be removed")
        assert future.result(timeout=60) != hung.pid
        wait_for(lambda: any(e.get("event") == "worker-silent" and e.get("worker") == hung_address for e in seen),
                 timeout=30, what="the worker-silent event")
    finally:
        os.killpg(hung.pid, signal.SIGCONT)
        client.close()


@pytest.mark.slow
def test_busy_worker_that_answers_stays(process_cluster) -> None:
    """A worker whose tasks keep the CPU busy still heartbeats and answers: never removed."""
    process_cluster.start_scheduler()
    process_cluster.start_worker("busy")
    client = process_cluster.wait_for_workers(1)
    try:
        (address,) = client.scheduler_info()["workers"]

        def spin(seconds: float) -> int:
            import time
            end = time.monotonic() + seconds
            n = 0
            while time.monotonic() < end:
                n += 1
            return n

        assert client.submit(spin, 8.0, pure=False).result(timeout=120) > 0  # longer than silent-after
        assert list(client.scheduler_info()["workers"]) == [address]
    finally:
        client.close()


@pytest.mark.slow
def test_worker_whose_nanny_answers_is_not_removed(process_cluster) -> None:
    """A worker process that stops answering (a long GIL-holding call) on a live machine stays:
    its nanny, a separate process, answers the ping."""
    import psutil

    process_cluster.start_scheduler()
    nanny = process_cluster.start_worker("held", nanny=True)
    process_cluster.start_worker("other")
    client = process_cluster.wait_for_workers(2)
    seen: list[dict] = []
    client.subscribe_topic(events.MACHINES, lambda event: seen.append(event[1]))
    held = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "held")
    worker_pid = client.run(os.getpid, workers=[held])[held]
    assert worker_pid in {p.pid for p in psutil.Process(nanny.pid).children(recursive=True)}
    os.kill(worker_pid, signal.SIGSTOP)  # the worker only; the nanny goes on
    try:
        wait_for(lambda: any(e.get("event") == "worker-slow" and e.get("worker") == held
                             and e.get("answered_by") == "nanny" for e in seen), timeout=60, what="worker-slow")
        assert held in client.scheduler_info()["workers"]
        assert not [e for e in seen if e.get("event") == "worker-silent"]
    finally:
        os.kill(worker_pid, signal.SIGCONT)
        client.close()

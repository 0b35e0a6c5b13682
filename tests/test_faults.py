"""Faults on real processes: kill -9 a worker in the middle of a plain Dask computation.

(kill -9 during a workflow, an analysis and a test run are the owners' tests; this is the
foundation's case: a Dask graph submitted through caelum_dask.connect().)
"""

from __future__ import annotations

import time

import pytest

import caelum_dask
from harness import ProcessCluster, wait_for

pytestmark = pytest.mark.slow


def test_kill_9_worker_mid_computation_gives_exact_results(process_cluster: ProcessCluster) -> None:
    process_cluster.env = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "5s"}
    process_cluster.start_scheduler()
    process_cluster.start_worker("victim")
    process_cluster.start_worker("survivor")
    process_cluster.wait_for_workers(2).close()

    def slow_square(x: int) -> int:  # a closure travels by value: workers need not import tests/
        time.sleep(0.03)
        return x * x

    with caelum_dask.connect(process_cluster.address) as client:
        victim = next(a for a, w in client.scheduler_info()["workers"].items() if w["name"] == "victim")
        squares = client.map(slow_square, range(120), pure=False)
        total = client.submit(sum, squares)

        def victim_holds_results() -> int:
            held = [k for k, where in client.who_has(squares).items() if victim in where]
            return len(held) >= 5 and len(held)

        assert squares[0].result(timeout=60) == 0
        held_before = wait_for(victim_holds_results, timeout=60, interval=0.05,
                               what="the victim to hold finished results")
        process_cluster.kill_worker("victim")  # SIGKILL to its process group

        assert total.result(timeout=120) == sum(x * x for x in range(120))
        assert client.gather(squares) == [x * x for x in range(120)]
        workers = client.scheduler_info()["workers"]
        assert [w["name"] for w in workers.values()] == ["survivor"]
        assert all(victim not in where for where in client.who_has(squares).values())
        # the results the victim held were lost with it and computed again on the survivor
        assert held_before >= 5
        lost = [msg for _, msg in client.get_events("all") if isinstance(msg, dict)
                and msg.get("action") == "remove-worker" and msg.get("worker") == victim]
        assert lost, "the scheduler should have recorded the victim's removal"
    # A worker that once talked to a SIGKILLed peer can hang for the fixture's whole 15 s grace
    # period on SIGTERM (Dask closing its rpc pool); the test is over, so stop it hard.
    process_cluster.kill_worker("survivor")

"""One machine, one budget: worker processes started separately re-split the machine."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from caelum_dask import machines
from caelum_dask.machine_share import Member, machine_from_dict, shares_for_machine, target_resources
from caelum_dask.resources import CPU, GPU, MEMORY_GB, MachineResources, share_for_worker

from harness import run_caelum, wait_for


def test_split_ranks_by_slot_and_matches_nworkers() -> None:
    machine = machine_from_dict({"cpu_cores": 8, "memory_gb": 32.0, "disk_space_gb": 100.0,
                                 "gpus": [{"index": 0, "name": "A", "memory_gb": 24.0, "uuid": "u0",
                                           "utilization": 3.0}]})
    shares = shares_for_machine(machine, [Member("tcp://b", slot=3, slots=1), Member("tcp://a", slot=0, slots=1)])
    assert shares["tcp://a"] == share_for_worker(machine, 0, 2).resources  # lowest slot: first share, the GPU
    assert shares["tcp://a"][GPU] == 1 and GPU not in shares["tcp://b"]
    assert shares["tcp://a"][CPU] + shares["tcp://b"][CPU] == 8
    assert shares["tcp://a"][MEMORY_GB] + shares["tcp://b"][MEMORY_GB] <= 32.0
    alone = shares_for_machine(MachineResources(cpu_cores=8, memory_gb=32.0), [Member("tcp://a", 0, 1)])
    assert alone["tcp://a"][CPU] == 8
    assert target_resources({CPU: 8, "FOO": 2}, {CPU: 4, "FOO": 9}, explicit=["FOO"]) == {CPU: 4, "FOO": 2}


def _workers(client) -> dict[str, dict]:
    nodes = machines(client)
    return {w["name"]: w for n in nodes for w in n["workers"]}


def _start(cluster, name: str, *extra: str):
    return cluster._spawn(f"worker-{name}", [sys.executable, "-m", "caelum_dask", "worker", cluster.address,
                                             "--name", name, "--nthreads", "1", "--host", "127.0.0.1",
                                             "--dashboard-address", "127.0.0.1:0", *extra])


@pytest.mark.slow
def test_separately_started_workers_share_the_machine(process_cluster) -> None:
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("needs two cores to split")
    process_cluster.start_scheduler()
    first = _start(process_cluster, "a")
    client = process_cluster.wait_for_workers(1)
    try:
        assert wait_for(lambda: _workers(client).get("a", {}).get("resources", {}).get(CPU) == cores, timeout=60)
        second = _start(process_cluster, "b", "--resources", "FOO=3")
        client.wait_for_workers(2, timeout=90)

        def split() -> bool:
            got = _workers(client)
            return len(got) == 2 and got["a"]["resources"][CPU] + got["b"]["resources"][CPU] == cores
        assert wait_for(split, timeout=60), _workers(client)
        got = _workers(client)
        (node,) = machines(client)
        assert got["a"]["resources"][MEMORY_GB] + got["b"]["resources"][MEMORY_GB] <= node["resources"]["memory_gb"]
        assert got["b"]["resources"]["FOO"] == 3 and list(got["b"]["explicit"]) == ["FOO"]  # explicit wins, untouched
        # the scheduler plans with the split (what resource-constrained tasks see)
        info = client.scheduler_info()["workers"]
        assert sum(w["resources"][CPU] for w in info.values()) == cores
        shown = run_caelum("status", "--scheduler", process_cluster.address, timeout=60)
        assert shown.returncode == 0, shown.stderr
        per_worker = [line for line in shown.stdout.splitlines() if line.strip().startswith("worker ")]
        assert len(per_worker) == 2 and all(f"CPU={cores // 2:g}" in line for line in per_worker), shown.stdout

        os.killpg(second.pid, signal.SIGKILL)
        second.wait(timeout=30)
        assert wait_for(lambda: _workers(client).keys() == {"a"}
                        and _workers(client)["a"]["resources"][CPU] == cores, timeout=90), _workers(client)
    finally:
        client.close()
    assert first.poll() is None


def _profile_interval(dask_worker) -> float:
    return dask_worker.periodic_callbacks["profile"].callback_time


@pytest.mark.slow
def test_workers_profile_at_caelums_interval_unless_the_user_set_one(process_cluster) -> None:
    process_cluster.start_scheduler()
    process_cluster.start_worker("default")
    client = process_cluster.wait_for_workers(1)
    try:
        assert set(client.run(_profile_interval).values()) == {100.0}  # ms: caelum.worker.profile-interval
        process_cluster.env["DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL"] = "20ms"
        process_cluster.start_worker("mine")
        client.wait_for_workers(2, timeout=90)
        assert sorted(client.run(_profile_interval).values()) == [20.0, 100.0]  # the user's value wins
    finally:
        client.close()

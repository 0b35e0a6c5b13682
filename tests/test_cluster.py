"""The foundation on real clusters: registry, placement, events, protocols, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest
from distributed import Client

from caelum_dask import ResourceRequirements, UnsatisfiableRequirement, connect, machines, register_service
from caelum_dask.errors import PortTaken
from caelum_dask.resources import CPU, GPU, MEMORY_GB

from harness import run_caelum, wait_for


def where_am_i() -> str:
    from distributed import get_worker

    return get_worker().address


# -- embedded cluster -------------------------------------------------------------------------

def test_embedded_cluster_registers_this_machine(client):
    (node,) = machines(client)
    assert node["resources"]["cpu_cores"] == os.cpu_count()
    total_gb = psutil.virtual_memory().total / 1024**3
    assert abs(node["resources"]["memory_gb"] - total_gb) <= 0.05 * total_gb
    assert node["status"] in ("online", "busy")
    assert node["ip_address"] == "127.0.0.1"
    assert len(node["workers"]) == 2
    # the two processes split the machine instead of each claiming all of it
    slots = sorted(w["slot"] for w in node["workers"])
    assert slots == [0, 1]
    assert sum(w["resources"][MEMORY_GB] for w in node["workers"]) <= total_gb
    assert all(w["resources"][CPU] >= 1 for w in node["workers"])
    assert node["python"] == ".".join(map(str, sys.version_info[:3]))
    assert any(name.startswith("worker-") for name in node["services"])


def test_resource_constrained_task_runs_on_the_embedded_cluster(client):
    req = ResourceRequirements(cpu_cores=1, memory_gb=0.5)
    assert client.submit(lambda: 42, **req.submit_kwargs(client)).result(timeout=60) == 42


def test_service_registry_refuses_a_taken_port(client):
    (node,) = machines(client)
    register_service(client, node["id"], "ollama", 11434)
    register_service(client, node["id"], "ollama", 11434)  # same service again: fine
    with pytest.raises(PortTaken, match="port 11434 .* already used by 'ollama'"):
        register_service(client, node["id"], "my-api", 11434)
    (node,) = machines(client)
    assert node["services"]["ollama"] == 11434


def test_connect_precedence(monkeypatch):
    import dask.config

    from caelum_dask.cluster import resolve_address

    with dask.config.set({"caelum.scheduler-address": "tcp://config:1"}):
        assert resolve_address() == "tcp://config:1"
        monkeypatch.setenv("CAELUM_SCHEDULER", "tcp://env:1")
        assert resolve_address() == "tcp://env:1"
        assert resolve_address("tcp://flag:1") == "tcp://flag:1"
    monkeypatch.delenv("CAELUM_SCHEDULER")
    assert resolve_address() is None


# -- real `dask scheduler` / `dask worker` subprocesses ----------------------------------------

@pytest.fixture
def two_machines(process_cluster):
    """A preloaded scheduler; worker 'cpu' on 127.0.0.1 and worker 'gpu' (GPU=1) on 127.0.0.2.

    Two loopback addresses make two machines in the registry, as two hosts would.
    """
    process_cluster.env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = "5s"
    process_cluster.start_scheduler()
    process_cluster.start_worker("cpu")
    process_cluster.start_worker("gpu", "--host", "127.0.0.2", "--resources", "GPU=1")
    client = process_cluster.wait_for_workers(2)
    try:
        yield process_cluster, client
    finally:
        client.close()


@pytest.mark.slow
def test_status_json_gpu_placement_and_offline(two_machines):
    cluster, client = two_machines
    result = run_caelum("status", "--json", "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["scheduler"] == cluster.address and report["dashboard"].startswith("http")
    by_ip = {m["ip_address"]: m for m in report["machines"]}
    assert set(by_ip) == {"127.0.0.1", "127.0.0.2"}
    for node in by_ip.values():
        for key in ("id", "hostname", "ip_address", "platform", "os", "python", "resources",
                    "services", "status", "last_heartbeat", "workers"):
            assert key in node
        assert set(node["resources"]) >= {"cpu_cores", "memory_gb", "gpus", "disk_space_gb"}
    (gpu_worker,) = by_ip["127.0.0.2"]["workers"]
    (cpu_worker,) = by_ip["127.0.0.1"]["workers"]
    assert gpu_worker["resources"][GPU] == 1 and GPU not in cpu_worker["resources"]
    assert gpu_worker["resources"][MEMORY_GB] > 0  # detection still adds the rest

    # a GPU task runs on the GPU worker only
    req = ResourceRequirements(gpu_required=True)
    futures = [client.submit(where_am_i, pure=False, **req.submit_kwargs(client)) for _ in range(6)]
    assert {f.result(timeout=60) for f in futures} == {gpu_worker["address"]}

    # two GPUs: no machine has them -> immediate, clear error
    started = time.monotonic()
    with pytest.raises(UnsatisfiableRequirement, match=r"gpus=2.*GPU=1"):
        ResourceRequirements(gpus=2).submit_kwargs(client)
    assert time.monotonic() - started < 10

    # killing the GPU worker turns its machine offline, and an event says so
    gpu_id = by_ip["127.0.0.2"]["id"]
    cluster.kill_worker("gpu")
    wait_for(lambda: {m["id"]: m["status"] for m in machines(client)}[gpu_id] == "offline")
    events = client.get_events("caelum.machines")
    assert any(msg["event"] == "machine-offline" and msg["machine"] == gpu_id for _, msg in events)
    # history kept: the machine is still listed, offline, and no longer offered for GPU work
    with pytest.raises(UnsatisfiableRequirement):
        ResourceRequirements(gpu_required=True).submit_kwargs(client)

    # `caelum events` prints the same as JSON lines
    out = run_caelum("events", "--scheduler", cluster.address, "--topic", "caelum.machines")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert {line["message"]["event"] for line in lines} >= {"machine-online", "machine-offline"}
    assert all(line["topic"] == "caelum.machines" for line in lines)


@pytest.mark.slow
def test_wait_for_machines_waits_for_a_joining_gpu_worker(process_cluster):
    process_cluster.start_scheduler()
    process_cluster.start_worker("cpu")
    client = process_cluster.wait_for_workers(1)
    try:
        with pytest.raises(UnsatisfiableRequirement):
            ResourceRequirements(gpu_required=True).submit_kwargs(client, wait_for_machines=0.5)
        process_cluster.start_worker("gpu", "--resources", "GPU=1")
        kwargs = ResourceRequirements(gpu_required=True).submit_kwargs(client, wait_for_machines=90)
        assert kwargs == {"resources": {GPU: 1.0}}
    finally:
        client.close()


@pytest.mark.slow
def test_plain_dask_scheduler_without_preload_gets_the_registry(process_cluster):
    process_cluster.start_scheduler(preload=False)
    process_cluster.start_worker("w")
    client = process_cluster.wait_for_workers(1)
    try:
        (node,) = machines(client)
        assert node["resources"]["cpu_cores"] == os.cpu_count()
        assert node["workers"][0]["resources"][MEMORY_GB] > 0
    finally:
        client.close()


@pytest.mark.slow
def test_websocket_scheduler_and_worker_through_the_caelum_cli(process_cluster):
    """`caelum scheduler --protocol ws` (the plan's WebSocket hub) and `caelum worker ws://…`."""
    sched = process_cluster._spawn("scheduler", [sys.executable, "-m", "caelum_dask", "scheduler",
                                                 "--protocol", "ws", "--host", "127.0.0.1", "--port", "0",
                                                 "--dashboard-address", "127.0.0.1:0"])
    address = wait_for(lambda: (re.search(r"Scheduler at:\s+(ws://\S+)", process_cluster.log("scheduler"))
                                  or (sched.poll() is not None and pytest.fail(process_cluster.log("scheduler")))))
    address = address.group(1)
    process_cluster._spawn("worker", [sys.executable, "-m", "caelum_dask", "worker", address,
                                      "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1",
                                      "--dashboard-address", "127.0.0.1:0"])
    with Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=90)
        assert client.submit(lambda x: x + 1, 41).result(timeout=60) == 42
        (node,) = machines(client)
        workers = node["workers"]
        assert sorted(w["slot"] for w in workers) == [0, 1]
        # two processes split the machine's cores and memory
        assert sum(w["resources"][CPU] for w in workers) <= os.cpu_count()
        assert sum(w["resources"][MEMORY_GB] for w in workers) <= node["resources"]["memory_gb"]


# -- the CLI against an unreachable scheduler -------------------------------------------------

def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["events"], ["worker"]])
def test_unreachable_scheduler_gives_one_clear_line(command):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    args = [*command, address] if command == ["worker"] else [*command, "--scheduler", address]
    started = time.monotonic()
    result = run_caelum(*args, env={"DASK_CAELUM__CONNECT_TIMEOUT": "2"}, timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("caelum: error: cannot reach the scheduler at " + address)
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_help_and_version():
    result = run_caelum("--help")
    assert result.returncode == 0
    for command in ("scheduler", "worker", "status", "events"):
        assert command in result.stdout
    version = run_caelum("--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout


def test_reachable_as_dask_subcommand():
    result = subprocess.run([sys.executable, "-m", "dask", "caelum", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "status" in result.stdout and "worker" in result.stdout


def test_status_on_the_embedded_cluster_prints_the_dashboard():
    result = run_caelum("status")
    assert result.returncode == 0, result.stderr
    assert re.search(r"dashboard\s+http://127\.0\.0\.1:\d+/status", result.stdout)
    assert "ONLINE" in result.stdout or "BUSY" in result.stdout


@pytest.mark.slow
def test_silent_machine_goes_offline_and_comes_back(process_cluster):
    """A frozen worker (SIGSTOP: connection open, no heartbeats) is offline after the TTL."""
    import signal

    process_cluster.env.update({"DASK_CAELUM__REGISTRY__OFFLINE_AFTER": "2s",
                                "DASK_DISTRIBUTED__WORKER__HEARTBEAT_INTERVAL": "200ms"})
    process_cluster.start_scheduler()
    proc = process_cluster.start_worker("sleepy", "--host", "127.0.0.3")
    client = process_cluster.wait_for_workers(1)
    try:
        (node,) = machines(client)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: machines(client)[0]["status"] == "offline")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: machines(client)[0]["status"] in ("online", "busy"))
        events = [msg for _, msg in client.get_events("caelum.machines") if msg["machine"] == node["id"]]
        offline = [m for m in events if m["event"] == "machine-offline"]
        assert offline and offline[0]["reason"] == "missed heartbeats"
        assert events[-1]["event"] == "machine-online"
    finally:
        client.close()


@pytest.mark.slow
def test_events_follow_prints_new_events(process_cluster):
    process_cluster.start_scheduler()
    follower = subprocess.Popen(
        [sys.executable, "-m", "caelum_dask", "events", "--follow", "--count", "1", "--topic", "caelum.machines",
         "--scheduler", process_cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with Client(process_cluster.address, timeout="30s") as client:
            # wait until the follower is subscribed (Dask's broker knows its subscribers)
            def subscribers(dask_scheduler):
                return len(dask_scheduler._broker._topics["caelum.machines"].subscribers)

            wait_for(lambda: client.run_on_scheduler(subscribers) >= 1)
            process_cluster.start_worker("late")
            out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    (line,) = out.splitlines()
    assert json.loads(line)["message"]["event"] == "machine-online"

"""`caelum up` / `caelum status` / `caelum down` across hosts that are network namespaces.

Topology: the three namespaces of tests/test_netns.py (``Hosts``: S with the bridge
10.X.Y.1, A 10.X.Y.2, B 10.X.Y.3), made by the test and deleted in teardown even on failure.
A real OpenSSH server runs INSIDE each namespace (``ip netns exec NS sshd``) on port 22 of that
namespace's IP, so each namespace is a separate host as far as SSH, the preflight's port checks
and the machine registry can tell. The cluster file puts the scheduler on S's IP and one worker
entry on each of A and B; the real CLI runs inside S (the bridge lives in S, so the root
namespace cannot reach these IPs, and no traffic leaves the namespaces).

Checked: up -> status shows each declared worker on its own IP (one machine per IP) with its
declared nthreads/resources; down -> no process left (psutil) and no pid files. Needs root,
``ip netns`` and sshd; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from deploy_fixtures import SSHD, _skip_reason as _sshd_unavailable, _user, kill_all_under, processes_under
from harness import REPO
from test_netns import Hosts, _netns_unavailable

pytestmark = [pytest.mark.slow, pytest.mark.root]

SCHEDULER_PORT = 8786  # each namespace has its own, empty port space
WORKERS = {"a": {"name": "node-a", "nthreads": 1, "resources": {"GPU": 1}},
           "b": {"name": "node-b", "nthreads": 2, "resources": {"licence": 3}}}


class NamespaceSSHD:
    """One sshd per namespace, on port 22 of that namespace's IP, sharing one host and one user key."""

    def __init__(self, hosts: Hosts, folder: Path) -> None:
        self.hosts, self.folder = hosts, folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.host_key, self.client_key = folder / "host_key", folder / "client_key"
        self.known_hosts = folder / "known_hosts"

    def start(self, names: str) -> None:
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        kind, blob = Path(f"{self.host_key}.pub").read_text().split()[:2]
        self.known_hosts.write_text("".join(f"{self.hosts.ip(h)} {kind} {blob}\n" for h in names))
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        logs = {}
        for host in names:
            config = self.folder / f"sshd_{host}.conf"
            config.write_text(
                f"Port 22\nListenAddress {self.hosts.ip(host)}\nHostKey {self.host_key}\n"
                f"PidFile {self.folder / f'sshd_{host}.pid'}\nAuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
                "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel INFO\n"
                "MaxSessions 50\nMaxStartups 50\n")
            logs[host] = self.folder / f"sshd_{host}.log"
            with open(logs[host], "w") as log:
                self.procs.append(subprocess.Popen([*self.hosts.exec_prefix(host), SSHD, "-D", "-e", "-f", str(config)],
                                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 30
        for host, proc in zip(names, self.procs):
            while "Server listening on" not in logs[host].read_text():  # sshd's own readiness line
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd in {self.hosts.ns(host)} did not start: {logs[host].read_text()[-500:]}")
                time.sleep(0.05)

    def ssh_options(self) -> dict[str, Any]:
        return {"port": 22, "username": os.environ.get("USER") or _user(),
                "client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts)}

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Hosts, NamespaceSSHD, Path]]:
    """Namespaces S/A/B with an sshd in each and a run folder; all removed afterwards, even on failure."""
    reason = _netns_unavailable() or _sshd_unavailable()
    if reason:
        pytest.skip(reason)
    hosts = Hosts()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    servers = NamespaceSSHD(hosts, tmp_path)
    try:
        hosts.build()
        servers.start("sab")
        yield hosts, servers, run_dir
    finally:
        kill_all_under(run_dir)  # scheduler/workers a failed test left behind
        servers.stop()
        hosts.teardown()


def _caelum(hosts: Hosts, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real CLI, run inside S (the namespace that holds the bridge)."""
    return subprocess.run([*hosts.exec_prefix("s"), sys.executable, "-m", "caelum_dask", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _pidfiles(run_dir: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")}


def test_up_status_down_across_namespace_hosts(deployment: tuple[Hosts, NamespaceSSHD, Path], tmp_path: Path) -> None:
    hosts, servers, run_dir = deployment
    s_ip = hosts.ip("s")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({
        "name": "netns",
        "python": sys.executable,
        "env": {"PYTHONPATH": str(REPO), "DASK_CAELUM__HOME": str(run_dir / "home")},
        "run_dir": str(run_dir),
        "join_timeout": 60,
        "ssh": servers.ssh_options(),
        "scheduler": {"host": s_ip, "port": SCHEDULER_PORT, "dashboard_address": f"{s_ip}:8787"},
        "workers": [{"host": hosts.ip(h), **w} for h, w in WORKERS.items()],
    }, sort_keys=False))

    up = _caelum(hosts, "up", str(path), "--json")
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    address = f"tcp://{s_ip}:{SCHEDULER_PORT}"
    assert report["scheduler"] == address
    assert sorted(report["started"]) == ["node-a", "node-b", "scheduler"]
    assert report["workers"] == ["node-a", "node-b"]
    pids = _pidfiles(run_dir)
    assert set(pids) == {"scheduler", "node-a", "node-b"} and all(psutil.pid_exists(p) for p in pids.values())

    status = _caelum(hosts, "status", "--scheduler", address, "--json")
    assert status.returncode == 0, status.stderr
    machines = json.loads(status.stdout)["machines"]
    # one machine per namespace IP, each holding exactly its declared worker, listening on that IP
    by_ip = {m["ip_address"]: m for m in machines}
    assert set(by_ip) == {hosts.ip(h) for h in WORKERS} and len(machines) == len(WORKERS)
    for host, declared in WORKERS.items():
        machine = by_ip[hosts.ip(host)]
        assert machine["status"] in ("online", "busy")
        assert [w["name"] for w in machine["workers"]] == [declared["name"]]
        worker = machine["workers"][0]
        assert worker["address"].startswith(f"tcp://{hosts.ip(host)}:")
        assert worker["nthreads"] == declared["nthreads"]
        for resource, amount in declared["resources"].items():
            assert worker["resources"][resource] == amount
    assert "GPU" not in by_ip[hosts.ip("b")]["workers"][0]["resources"]

    down = _caelum(hosts, "down", str(path), "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["processes"] == {"node-a": "stopped", "node-b": "stopped", "scheduler": "stopped"}
    assert processes_under(run_dir) == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids.values())
    assert not _pidfiles(run_dir)

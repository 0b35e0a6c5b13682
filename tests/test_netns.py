"""Several hosts in network namespaces: a TLS scheduler and workers, each with its own IP.

Topology (made by the test, torn down in teardown even on failure; it exists only inside the
test's namespaces, so no traffic leaves them)::

    ns S (scheduler host)  br0 10.X.Y.1/24 ── vA-h ══ vA-n 10.X.Y.2  ns A (worker node-a)
      scheduler + worker         └──────── vB-h ══ vB-n 10.X.Y.3  ns B (worker node-b)
      "node-s" + the client

The scheduler host also runs a worker, so the registry shows three machines, one per IP.
Cutting node-a's switch port (``ip link set vA-h down`` in S) mid-run: the scheduler drops the
worker after its (short) worker-ttl, its tasks and lost results are recomputed on the other
two, the run completes exactly, node-a turns offline; when the port comes back up node-a's
worker (restarted by a supervisor loop, as systemd would) rejoins and the machine is online.
Needs root and ``ip netns``; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import ProcessCluster, wait_for
from security_fixtures import caelum_argv, make_cluster_certs, start_tls_scheduler

pytestmark = [pytest.mark.slow, pytest.mark.root]
DRIVER = Path(__file__).with_name("netns_driver.py")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs the suite as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"cxprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not supported here: {made.stderr.strip()}"
    try:
        bridge = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        veth = _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1", check=False)
        if bridge.returncode or veth.returncode:
            return f"bridges/veth pairs are not available: {(bridge.stderr or veth.stderr).strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Hosts:
    """The namespaces, addresses and links of one test."""

    token: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: str = field(default_factory=lambda: f"10.{random.randint(100, 250)}.{random.randint(0, 255)}")
    made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"caelum-{self.token}-{host}"

    def ip(self, host: str) -> str:
        return f"{self.subnet}.{ {'s': 1, 'a': 2, 'b': 3}[host]}"

    def port(self, host: str) -> str:
        return f"v{host}{self.token}h"  # the switch side of host's link, inside ns S (<= 15 chars)

    def exec_prefix(self, host: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns(host))

    def build(self) -> None:
        for host in "sab":
            _ip("netns", "add", self.ns(host))
            self.made.append(self.ns(host))
            _ip("-n", self.ns(host), "link", "set", "lo", "up")
        s = self.ns("s")
        _ip("-n", s, "link", "add", "br0", "type", "bridge")
        _ip("-n", s, "addr", "add", f"{self.ip('s')}/24", "dev", "br0")
        _ip("-n", s, "link", "set", "br0", "up")
        for host in "ab":
            nic = f"v{host}{self.token}n"
            # both ends are created straight inside the namespaces: nothing in the root namespace
            _ip("link", "add", self.port(host), "netns", s, "type", "veth", "peer", "name", nic, "netns", self.ns(host))
            _ip("-n", s, "link", "set", self.port(host), "master", "br0", "up")
            _ip("-n", self.ns(host), "addr", "add", f"{self.ip(host)}/24", "dev", nic)
            _ip("-n", self.ns(host), "link", "set", nic, "up")

    def set_link(self, host: str, state: str) -> None:
        _ip("-n", self.ns("s"), "link", "set", self.port(host), state)

    def teardown(self) -> None:
        for name in reversed(self.made):
            _ip("netns", "del", name, check=False)  # deletes the veths and the bridge inside


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    topology = Hosts()
    try:
        topology.build()
        yield topology
    finally:
        topology.teardown()


def _status(hosts: Hosts, tls: Path, address: str) -> list[dict[str, Any]]:
    argv = caelum_argv("status", "--scheduler", address, "--tls", str(tls), "--tls-name", "client", "--json",
                       prefix=hosts.exec_prefix("s"))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["machines"]


def _by_ip(machines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["ip_address"]: m for m in machines}


def test_three_hosts_cut_link_reschedules_and_machine_comes_back(hosts: Hosts, tmp_path: Path) -> None:
    tls = make_cluster_certs(tmp_path / "tls", [])
    from caelum_dask import certs

    for name, host in (("sched", "s"), ("node-s", "s"), ("node-a", "a"), ("node-b", "b"), ("client", "s")):
        certs.issue(name, tls, hosts=[hosts.ip(host)])

    cluster = ProcessCluster(logdir=tmp_path)
    cluster.env = {
        "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "2s",  # Dask floors it at 10 heartbeats = 5 s
        "DASK_CAELUM__REGISTRY__OFFLINE_AFTER": "2s",
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s",
    }
    try:
        address = start_tls_scheduler(cluster, tls, "sched", host=hosts.ip("s"), prefix=hosts.exec_prefix("s"))
        assert address.startswith(f"tls://{hosts.ip('s')}:")
        for host in "sab":
            worker = caelum_argv("worker", address, "--tls", str(tls), "--tls-name", f"node-{host}",
                                 "--name", f"node-{host}", "--nthreads", "1", "--", "--no-nanny",
                                 "--host", hosts.ip(host), "--dashboard-address", f"{hosts.ip(host)}:0")
            # a supervisor loop, as systemd's Restart=always: a worker dropped by the scheduler exits
            # when it hears of it, and the next one rejoins
            loop = f"while :; do {shlex.join(worker)}; sleep 1; done"
            cluster._spawn(f"worker-{host}", [*hosts.exec_prefix(host), "sh", "-c", loop])

        ips = {hosts.ip(h) for h in "sab"}
        machines = wait_for(lambda: (m := _status(hosts, tls, address)) and {x["ip_address"] for x in m} == ips
                            and all(x["workers"] for x in m) and m, timeout=120, interval=1,
                            what="three machines in the registry")
        assert len(machines) == 3
        for machine in machines:
            assert machine["status"] in ("online", "busy")
            assert [w["address"].split("://")[1].rsplit(":", 1)[0] for w in machine["workers"]] == [machine["ip_address"]]

        go = tmp_path / "go"
        driver = subprocess.Popen([*hosts.exec_prefix("s"), sys.executable, str(DRIVER), address, str(tls), "node-a",
                                   str(go)], stdout=subprocess.PIPE, stderr=open(tmp_path / "driver.log", "w"),
                                  text=True, start_new_session=True)
        cluster.procs.append(driver)  # type: ignore[arg-type]
        first = json.loads(driver.stdout.readline() or "{}")  # type: ignore[union-attr]
        assert first.get("victim_holds", 0) >= 3, (tmp_path / "driver.log").read_text()

        hosts.set_link("a", "down")  # pull node-a's cable mid-run
        go.touch()
        line = driver.stdout.readline()  # type: ignore[union-attr]
        assert line, (tmp_path / "driver.log").read_text()
        final = json.loads(line)
        assert driver.wait(timeout=60) == 0
        assert final["exact"] is True and final["result"] == final["expected"]
        assert "node-a" not in final["holders"]  # its results were recomputed elsewhere

        a_ip = hosts.ip("a")
        offline = wait_for(lambda: _by_ip(_status(hosts, tls, address)).get(a_ip, {}).get("status") == "offline",
                           timeout=60, interval=1, what="node-a to turn offline")
        assert offline
        b_ip = hosts.ip("b")
        assert wait_for(lambda: _by_ip(_status(hosts, tls, address))[b_ip]["status"] in ("online", "busy"),
                        timeout=60, interval=1, what="node-b to stay online")

        hosts.set_link("a", "up")
        back = wait_for(lambda: (n := _by_ip(_status(hosts, tls, address)).get(a_ip)) and n["status"] != "offline"
                        and n["workers"] and n, timeout=120, interval=1, what="node-a to come back online")
        assert back["workers"][0]["name"] == "node-a"
        assert len(_status(hosts, tls, address)) == 3

        # the registry announced both transitions on the caelum.machines topic
        argv = caelum_argv("events", "--scheduler", address, "--tls", str(tls), "--tls-name", "client",
                           "--topic", "caelum.machines", prefix=hosts.exec_prefix("s"))
        shown = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        of_a = [json.loads(line)["message"] for line in shown.stdout.splitlines()]
        of_a = [m["event"] for m in of_a if m.get("ip_address") == a_ip]
        assert "machine-offline" in of_a
        assert "machine-online" in of_a[of_a.index("machine-offline"):]
    finally:
        cluster.stop()

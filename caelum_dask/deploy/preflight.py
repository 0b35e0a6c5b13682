"""Preflight: everything ``caelum up`` checks on every host before it starts anything.

Per host, over SSH (all hosts at once):

* reachable: an SSH connection opens with the cluster file's options;
* the configured Python runs, and its Python (major.minor), caelum-dask, dask and distributed
  versions equal this client's — Dask needs the same versions everywhere, and a mismatch found
  here is one clear line instead of a pickling error in the middle of a run;
* the ports the processes will listen on are free (a bind test on the host, with ``ss -ltnp``
  naming the holder; on a scheduler that already runs, its port registry is asked too);
* with TLS on: ``DIR/ca.pem``, ``DIR/NAME.pem`` and ``DIR/NAME-key.pem`` exist (NAME: the
  entry's ``tls_name`` or the host's short name, as ``caelum certs`` names them), and the same on
  this machine for the client.

Hosts whose processes already run (live pid file from an earlier ``caelum up``) are not
port-checked: ``caelum up`` leaves them alone. Every problem is one line; with any problem
nothing is started.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import dask
import distributed

import caelum_dask
from caelum_dask.deploy import ssh
from caelum_dask.deploy.schema import ClusterSpec, HostProcess
from caelum_dask.errors import CaelumError
from caelum_dask.results import Result

# Runs on the host with the configured Python; stdlib only until the version imports, so it
# answers even where caelum-dask is missing or another version.
PROBE = r"""
import json, os, re, socket, subprocess, sys
req = json.loads(sys.argv[1])
out = {"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
       "hostname": socket.gethostname()}
for mod in ("caelum_dask", "dask", "distributed"):
    try:
        out[mod] = getattr(__import__(mod), "__version__", None)
    except Exception as exc:
        out[mod] = None
        out[mod + "_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    from caelum_dask.deploy.remote import state
    out["running"] = state(req["run_dir"], req["names"])
except Exception as exc:
    out["running"] = None
try:
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10).stdout
except Exception:
    ss = ""
def holder(port):
    for line in ss.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3].rsplit(":", 1)[-1] == str(port):
            found = re.findall(r'\("([^"]+)",pid=(\d+)', parts[-1])
            return ", ".join("%s pid %s" % f for f in found) or "another process"
    return "another process"
busy = []
for check in req["ports"]:
    free = 0
    taken = []
    for port in check["ports"]:
        s = socket.socket(socket.AF_INET6 if ":" in check["host"] else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((check["host"], port))
            free += 1
        except OSError:
            taken.append([port, holder(port)])
        finally:
            s.close()
    if free < check["need"]:
        busy.append({"owner": check["owner"], "what": check["what"], "taken": taken, "need": check["need"],
                     "free": free})
out["busy"] = busy
out["missing"] = []
for tls in req["tls"]:
    name = tls["name"] or socket.gethostname().split(".")[0]
    folder = os.path.expanduser(tls["dir"])
    for f in ("ca.pem", name + ".pem", name + "-key.pem"):
        path = os.path.join(folder, f)
        if not os.path.isfile(path) and [tls["owner"], path] not in out["missing"]:
            out["missing"].append([tls["owner"], path])
print("CAELUM-PROBE " + json.dumps(out))
"""


class PreflightFailed(CaelumError):
    """At least one host is not ready; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        hosts = len({p.split(" (", 1)[0] for p in problems})
        super().__init__(
            f"preflight found {len(problems)} problem{'s' if len(problems) != 1 else ''} "
            f"on {hosts} host{'s' if hosts != 1 else ''}; nothing was started"
        )


@dataclass
class HostReport:
    """What the probe learned about one process's host."""

    process: HostProcess
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def running_pid(self) -> int | None:
        running = self.facts.get("running") or {}
        return running.get(self.process.name)


@dataclass
class Preflight(Result):
    """Preflight of a whole cluster file."""

    hosts: list[HostReport]
    problems: list[str]

    def report(self, name: str) -> HostReport:
        return next(h for h in self.hosts if h.process.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The ``preflight`` part of ``caelum up --json``: one summary row per host, not the probe facts."""
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "hosts": [
                {"name": h.process.name, "role": h.process.role, "host": h.process.host,
                 "running_pid": h.running_pid, "python": h.facts.get("python"),
                 "caelum_dask": h.facts.get("caelum_dask"), "hostname": h.facts.get("hostname")}
                for h in self.hosts
            ],
        }


def local_versions() -> dict[str, str]:
    """What every host must match."""
    return {
        "python": "%d.%d" % sys.version_info[:2],
        "caelum_dask": caelum_dask.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
    }


def ports_to_check(proc: HostProcess) -> list[dict[str, Any]]:
    """The ports ``proc`` will listen on that must be free (port 0: any, nothing to check)."""
    bind = _bind_address(proc.listen or proc.host)
    checks: list[dict[str, Any]] = []
    if proc.role == "scheduler":
        if proc.port:
            checks.append({"what": "scheduler port", "host": bind, "ports": [proc.port], "need": 1})
        dash = proc.dashboard_port()
        if dash:
            dash_host = proc.dashboard_address.rsplit(":", 1)[0] or "0.0.0.0"
            checks.append({"what": "dashboard port", "host": _bind_address(dash_host), "ports": [dash], "need": 1})
    elif proc.worker_port:
        if isinstance(proc.worker_port, int):
            ports = [proc.worker_port]
        else:
            low, high = (int(p) for p in proc.worker_port.split(":"))
            ports = list(range(low, high + 1))
        checks.append({"what": "worker port", "host": bind, "ports": ports, "need": proc.nworkers})
    return checks


def _bind_address(host: str) -> str:
    """Bind tests need an address; a name that does not resolve here is left to the host."""
    if host in ("", "*"):
        return "0.0.0.0"
    return host


def tls_files(directory: str, name: str) -> list[str]:
    """The files a TLS node needs in a ``caelum certs`` folder."""
    folder = os.path.expanduser(directory)
    return [os.path.join(folder, f) for f in ("ca.pem", f"{name}.pem", f"{name}-key.pem")]


def client_tls_name(spec: ClusterSpec) -> str:
    return spec.tls_name or socket.gethostname().split(".")[0]


def _probe_key(proc: HostProcess) -> tuple[Any, ...]:
    """Entries that share host, SSH login, Python and environment share one probe."""
    return (proc.host, proc.ssh.port, proc.ssh.username, proc.python, tuple(sorted(proc.env.items())))


async def probe_host(spec: ClusterSpec, procs: list[HostProcess], timeout: float = 60) -> list[HostReport]:
    """Run the probe once for ``procs`` (same host, login, Python, env); one line per problem."""
    first = procs[0]
    reports = {proc.name: HostReport(proc) for proc in procs}
    where = f"{first.host} ({', '.join(f'{p.role} {p.name}' for p in procs)})"
    label = {proc.name: f"{proc.host} ({proc.role} {proc.name})" for proc in procs}
    request = {
        "run_dir": spec.run_dir,
        "names": [proc.name for proc in procs],
        "ports": [{**check, "owner": proc.name} for proc in procs for check in ports_to_check(proc)],
        "tls": [{"owner": proc.name, "dir": proc.tls_dir, "name": proc.tls_name} for proc in procs if proc.tls_dir],
    }
    try:
        connection = await ssh.connect(first)
        try:
            result = await ssh.run(connection, ssh.command_line(first, ["-c", PROBE, json.dumps(request)]), timeout)
        finally:
            connection.close()
    except ssh.SSHFailure as exc:
        reports[first.name].problems.append(f"{where}: {exc}")
        return list(reports.values())
    marker = next((line for line in result.stdout.splitlines() if line.startswith("CAELUM-PROBE ")), None)
    if marker is None:
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
        reports[first.name].problems.append(f"{where}: python {first.python} does not run ({detail[:200]})")
        return list(reports.values())
    facts = json.loads(marker.split(" ", 1)[1])
    reports[first.name].problems += _version_problems(facts, first, where)
    for report in reports.values():
        report.facts = facts
    _port_and_tls_problems(facts, reports, label)
    return list(reports.values())


def _version_problems(facts: dict[str, Any], first: HostProcess, where: str) -> list[str]:
    """The host's Python minor version and caelum-dask/dask/distributed against this client's."""
    problems = []
    mine = local_versions()
    if ".".join(facts["python"].split(".")[:2]) != mine["python"]:
        problems.append(f"{where}: Python {facts['python']} at {first.python}, but this client runs "
                        f"Python {mine['python']}; use the same Python minor version everywhere")
    for key, name in (("caelum_dask", "caelum-dask"), ("dask", "dask"), ("distributed", "distributed")):
        if facts.get(key) is None:
            error = facts.get(f"{key}_error", "not installed")
            problems.append(f"{where}: {name} cannot be imported by {first.python} ({error[:160]}); "
                            f"install {name}=={mine[key]} there")
        elif facts[key] != mine[key]:
            problems.append(f"{where}: {name} {facts[key]} installed, but this client has "
                            f"{mine[key]}; install {name}=={mine[key]} there")
    return problems


def _port_and_tls_problems(facts: dict[str, Any], reports: dict[str, HostReport], label: dict[str, str]) -> None:
    """Busy ports (unless our own running process holds them) and missing TLS files, per entry."""
    for busy in facts.get("busy", []):
        report = reports[busy["owner"]]
        if report.running_pid is not None:  # our own process holds it: left alone
            continue
        holders = ", ".join(f"{port} (held by {who})" for port, who in busy["taken"])
        if busy["need"] == 1:
            report.problems.append(f"{label[busy['owner']]}: {busy['what']} {holders} is in use; free it or "
                                   "choose another port in the cluster file")
        else:
            report.problems.append(f"{label[busy['owner']]}: {busy['what']}s: only {busy['free']} free, "
                                   f"{busy['need']} needed ({holders} in use)")
    for owner, missing in facts.get("missing", []):
        reports[owner].problems.append(f"{label[owner]}: TLS file {missing} is missing; make it with "
                                       "`caelum certs` and copy it there")


async def _registry_problems(spec: ClusterSpec, reports: list[HostReport]) -> list[str]:
    """Ports declared for workers that a running scheduler's port registry gives to another service."""
    fixed = [r for r in reports if r.process.role == "worker" and r.process.worker_port and r.running_pid is None]
    scheduler = next(r for r in reports if r.process.role == "scheduler")
    if not fixed or scheduler.running_pid is None:
        return []
    from distributed import Client

    problems: list[str] = []
    try:
        async with Client(spec.scheduler_address, asynchronous=True, timeout="10s",
                          security=client_security(spec)) as client:
            nodes = await client.scheduler.caelum_machines()
    except Exception:  # no registry (plain Dask scheduler): the bind test on the host is enough
        return []
    for report in fixed:
        proc = report.process
        low, _, high = str(proc.worker_port).partition(":")
        wanted = set(range(int(low), int(high or low) + 1))
        for node in nodes:
            if node["status"] == "offline" or proc.host not in (node["ip_address"], node["hostname"]):
                continue
            for service, port in node.get("services", {}).items():
                if port in wanted:
                    problems.append(f"{proc.host} (worker {proc.name}): port {port} is registered to "
                                    f"{service!r} in the cluster's port registry; choose another worker_port")
    return problems


def client_security(spec: ClusterSpec) -> Any:
    """This client's Dask Security for a TLS cluster file (None without TLS)."""
    if not spec.tls_dir:
        return None
    from distributed import Security

    ca, cert, key = tls_files(spec.tls_dir, client_tls_name(spec))
    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


async def run_preflight(spec: ClusterSpec) -> Preflight:
    """Probe every host of the cluster file at once; collect one line per problem."""
    groups: dict[tuple[Any, ...], list[HostProcess]] = {}
    for proc in spec.processes():
        groups.setdefault(_probe_key(proc), []).append(proc)
    answers = await asyncio.gather(*(probe_host(spec, procs) for procs in groups.values()))
    by_name = {r.process.name: r for reports in answers for r in reports}
    reports = [by_name[proc.name] for proc in spec.processes()]
    problems = [p for r in reports for p in r.problems]
    if spec.tls_dir:
        for missing in tls_files(spec.tls_dir, client_tls_name(spec)):
            if not os.path.isfile(missing):
                problems.append(f"this machine (client): TLS file {missing} is missing; make it with "
                                "`caelum certs` (or set tls_name to the certificate you have)")
    if not problems:
        problems += await _registry_problems(spec, reports)
    return Preflight(hosts=reports, problems=problems)

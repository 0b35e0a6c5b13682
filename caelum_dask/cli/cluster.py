"""Cluster commands: scheduler, worker, status, events.

``caelum scheduler`` and ``caelum worker`` are Dask's own ``dask scheduler``/``dask worker``
with the caelum preloads added: every Dask option still works after ``--``.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import sys
import time
from typing import Any

import click

from caelum_dask import events
from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option, tls_option
from caelum_dask.errors import InvalidInput, SchedulerUnreachable
from caelum_dask.slots import SLOTS_ENV

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASSTHROUGH)
@click.option("--host", default=None, help="Address to listen on (default: all interfaces).")
@click.option("--port", default=8786, show_default=True, type=click.IntRange(0, 65535), help="Scheduler port (0: any free one).")
@click.option(
    "--protocol",
    type=click.Choice(["tcp", "ws", "tls", "wss"]),
    default="tcp",
    show_default=True,
    help="Comm protocol; ws/wss is the WebSocket hub (e.g. --protocol ws --port 8080).",
)
@click.option(
    "--dashboard-address", default=":8787", show_default=True, help="Where the dashboard listens."
)
@tls_option
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def scheduler(
    host: str | None,
    port: int,
    protocol: str,
    dashboard_address: str,
    tls: str | None,
    tls_name: str | None,
    dask_args: tuple[str, ...],
) -> None:
    """Start the cluster's scheduler with the machine registry (and dashboard pages).

    Same as `dask scheduler --preload caelum_dask.scheduler`; any other `dask scheduler`
    option may follow. With --tls DIR it listens on tls:// only, admits only peers whose
    certificate the cluster CA in DIR signed and DIR/crl.pem does not revoke, and serves the
    dashboard over HTTPS with this machine's certificate (docs/security.md).
    """
    from distributed.cli import dask_scheduler

    tls_args = _tls_args(tls, tls_name)
    if tls_args:
        protocol = "wss" if protocol in ("ws", "wss") else "tls"
    elif protocol in ("tls", "wss"):
        raise InvalidInput(f"--protocol {protocol} needs certificates: add --tls DIR (see `caelum certs --help`)")
    _check_port_free(host, port)
    args = [*tls_args, "--preload", "caelum_dask.scheduler", "--port", str(port), "--protocol", protocol]
    if tls_args:
        _require_encryption()
        _https_dashboard(tls, tls_name)
    args += ["--dashboard-address", dashboard_address]
    if host:
        args += ["--host", host]
    dask_scheduler.main(args=[*args, *dask_args], prog_name="caelum scheduler")


@click.command(context_settings=PASSTHROUGH)
@click.argument("address", required=False)
@click.option("--resources", default=None, help='Explicit resources, e.g. "GPU=1 FOO=2"; they win over detection.')
@click.option("--nworkers", default=1, show_default=True, type=int, help="Worker processes on this machine; they split its resources.")
@click.option("--nthreads", default=None, type=int, help="Threads per worker process (default: cores / nworkers).")
@click.option("--name", default=None, help="Worker name (suffixed -0, -1… with several processes).")
@click.option("--policy", type=click.Choice(["always", "desktop"]), default=None,
              help="always: lend the machine all the time; desktop: only while its owner is away "
                   "(default: caelum.desktop.policy; docs/desktop.md).")
@click.option("--owner-cpu", type=float, default=None, help="Desktop: cores of CPU by other processes that mean the owner is active.")
@click.option("--active-after", default=None, help="Desktop: owner activity this long (e.g. 2s) retires the worker.")
@click.option("--away-after", default=None, help="Desktop: owner quiet this long (e.g. 5m) and the machine joins again.")
@click.option("--grace", default=None, help="Desktop: how long running tasks may finish once the owner is active.")
@click.option("--sample-interval", default=None, help="Desktop: how often owner activity is sampled.")
@click.option("--owner-match", default=None, help="Desktop: only processes whose command line matches this regex count as the owner.")
@tls_option
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    address: str | None,
    resources: str | None,
    nworkers: int,
    nthreads: int | None,
    name: str | None,
    policy: str | None,
    owner_cpu: float | None,
    active_after: str | None,
    away_after: str | None,
    grace: str | None,
    sample_interval: str | None,
    owner_match: str | None,
    tls: str | None,
    tls_name: str | None,
    dask_args: tuple[str, ...],
) -> None:
    """Join this machine to the cluster at ADDRESS, advertising its resources.

    Cores, memory, disk and NVIDIA GPUs are detected and advertised as the Dask resources
    CPU, MEMORY_GB, DISK_GB, GPU and GPU_MEMORY_GB; several processes split the machine.
    Same as `dask worker ADDRESS --preload caelum_dask.worker`. With --tls DIR the worker
    shows this machine's certificate and trusts only the cluster CA (docs/security.md).
    With --policy desktop the worker runs only while the machine's owner is away: it retires
    gracefully (results moved to other workers) when the owner is active and rejoins later.
    """
    from distributed.cli import dask_worker

    from caelum_dask.desktop import options_from_cli
    from caelum_dask.security import require_tls_address, resolve_security

    lending = options_from_cli(policy=policy, owner_cpu=owner_cpu, active_after=active_after, away_after=away_after,
                               grace=grace, sample_interval=sample_interval, owner_match=owner_match)

    from caelum_dask.cluster import check_address, resolve_address

    target = resolve_address(address)
    if target is None:
        raise InvalidInput(
            "caelum worker needs the scheduler's address, e.g. `caelum worker tcp://10.0.0.5:8786` "
            "(or set CAELUM_SCHEDULER)"
        )
    check_address(target)
    if nworkers < 1:
        raise InvalidInput(f"--nworkers must be at least 1, not {nworkers}")
    tls_args = _tls_args(tls, tls_name)
    security = resolve_security(tls, tls_name) if tls_args else None
    if security is not None:
        target = require_tls_address(target)
    elif target.startswith(("tls://", "wss://")):
        raise InvalidInput(f"the scheduler {target} uses TLS: add --tls DIR with this machine's certificate")
    if security is not None:
        _refuse_own_revoked_certificate(tls, tls_name)
    _check_reachable(target, security=security, cert_name=tls_name)
    os.environ[SLOTS_ENV] = str(nworkers)
    args = [target, *tls_args, "--preload", "caelum_dask.worker", "--nworkers", str(nworkers)]
    if tls_args:
        _require_encryption()
        # refuse revoked peers in the worker and its nanny too (crl.pem beside ca.pem)
        args += ["--preload", "caelum_dask.revocation", "--preload-nanny", "caelum_dask.revocation"]
    if nthreads:
        args += ["--nthreads", str(nthreads)]
    if resources:
        args += ["--resources", resources]
    if name:
        args += ["--name", name]
    if lending.policy == "desktop":
        from caelum_dask.cli.progress import ProgressDisplay
        from caelum_dask.desktop import supervise

        with ProgressDisplay("caelum worker", live=False) as display:
            code = supervise([sys.executable, "-m", "distributed.cli.dask_worker", *args, *dask_args],
                             target, lending, security=security, progress=display)
        sys.exit(code)
    dask_worker.main(args=[*args, *dask_args], prog_name="caelum worker")


def _check_port_free(host: str | None, port: int) -> None:
    """One clear line for a taken port, instead of Dask's "Scheduler failed to start" traceback."""
    import socket

    if port == 0:
        return
    bind_host = (host or "").split("://")[-1].strip("[]")
    try:
        with socket.socket(socket.AF_INET6 if ":" in bind_host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bind_host, port))
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {bind_host or 'all interfaces'} port {port} ({exc.strerror}); "
            "another scheduler may be running: choose another --port"
        ) from None


def _tls_args(tls: str | None, tls_name: str | None) -> list[str]:
    """The dask CLI's ``--tls-ca-file/--tls-cert/--tls-key`` for --tls/caelum.tls.dir (or none).

    A ``crl.pem`` in the folder is checked here too, so a stale or foreign list fails with one
    line before Dask starts (the preloads load it later).
    """
    from caelum_dask import certs, config
    from caelum_dask.security import dask_cli_args, tls_dir

    folder = tls_dir(tls)
    if folder is None:
        return []
    args = dask_cli_args(folder, tls_name or config.get("tls.name") or None)
    certs.load_crl(folder)
    return args


def _https_dashboard(tls: str | None, tls_name: str | None) -> None:
    """Serve the scheduler's dashboard (and the caelum pages) over HTTPS with the node certificate.

    Set in this process's Dask config just before handing over to Dask's CLI: the scheduler
    runs in this process and reads ``distributed.scheduler.dashboard.tls.*`` when it starts
    its HTTP server, and formats its "dashboard at: https://…" line from the same keys.
    """
    import dask.config

    from caelum_dask import config
    from caelum_dask.security import dashboard_tls_config, tls_dir

    folder = tls_dir(tls)
    if folder is not None:
        dask.config.set(dashboard_tls_config(folder, tls_name or config.get("tls.name") or None))


def _cert_name(tls_name: str | None) -> str:
    from caelum_dask import certs, config

    return tls_name or config.get("tls.name") or certs.default_name()


def _refuse_own_revoked_certificate(tls: str | None, tls_name: str | None) -> None:
    """One line, before any connection, when this machine's own folder lists its certificate as revoked."""
    from caelum_dask import certs
    from caelum_dask.security import tls_dir

    folder = tls_dir(tls)
    name = _cert_name(tls_name)
    if folder is not None and certs.is_revoked(certs.cert_path(folder, name)):
        raise InvalidInput(
            f"this machine's certificate {name} is revoked ({certs.crl_path(folder)}); "
            "ask the cluster owner to re-issue it"
        )


def _require_encryption() -> None:
    """Refuse every plain-tcp comm in this scheduler/worker process and its children.

    Set just before handing over to Dask's CLI, in the Dask config and the environment (a
    nanny's worker processes inherit it), so a failed command leaves its process untouched.
    """
    import dask.config

    dask.config.set({"distributed.comm.require-encryption": True})
    os.environ["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"


# Handshakes `caelum worker` tries before explaining a TLS refusal whose reason was lost.
_TLS_PROBES = 4


def _check_reachable(
    address: str, timeout: float | None = None, security: Any = None, cert_name: str | None = None
) -> None:
    """Fail fast with one line instead of letting a worker retry an unreachable scheduler."""
    from distributed.comm import connect as comm_connect

    from caelum_dask import config
    from caelum_dask.security import speaks_tls

    timeout = timeout if timeout is not None else float(config.get("connect-timeout"))
    connection_args = security.get_connection_args("worker") if security is not None else {}

    async def probe() -> None:
        for attempt in range(_TLS_PROBES):
            try:
                comm = await comm_connect(address, timeout=timeout, **connection_args)
                await comm.close()
                return
            except OSError as exc:
                # A scheduler refusing the certificate closes the socket right after its TLS
                # alert; the close can outrun the alert ("EOF occurred"), so knock again to
                # read the reason (e.g. "certificate revoked") instead of guessing.
                if security is None or "EOF" not in str(exc) or attempt == _TLS_PROBES - 1:
                    raise

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, ValueError) as exc:
        if security is None and address.startswith("tcp://") and speaks_tls(address):
            raise SchedulerUnreachable(
                f"the scheduler at {address} requires TLS: use tls://{address.split('://', 1)[1]} "
                "with --tls DIR"
            ) from None
        if security is not None and "revoked" in str(exc).lower():
            raise SchedulerUnreachable(
                f"the scheduler refused this machine's certificate (revoked?): {_cert_name(cert_name)} "
                "— ask the cluster owner to re-issue it"
            ) from None
        if security is not None:
            raise SchedulerUnreachable(
                f"the TLS scheduler at {address} refused this machine or is unreachable "
                f"({str(exc).splitlines()[0][:160]}); check that its certificate was issued by the "
                "cluster CA and has not expired (`caelum certs show`)"
            ) from None
        raise SchedulerUnreachable(
            f"cannot reach the scheduler at {address} ({str(exc).splitlines()[0][:160]}); "
            "start one with `caelum scheduler` or check the address"
        ) from None


@click.command()
@scheduler_option
@tls_option
@json_option
def status(scheduler: str | None, tls: str | None, tls_name: str | None, as_json: bool) -> None:
    """Machines of the cluster: resources, GPUs, services, status and heartbeats.

    --json prints {"scheduler", "dashboard", "caelum_dashboard", "embedded",
    "machines": [MachineNode…]} (README); caelum_dashboard is the caelum pages' index.
    """
    with open_client(scheduler, quiet=as_json, tls=tls, tls_name=tls_name) as client:
        from caelum_dask.cluster import status_report

        report = status_report(client, scheduler)
    nodes = report["machines"]
    if as_json:
        print_json(report)
        return
    click.echo(f"scheduler  {report['scheduler']}")
    kind = "HTTPS, trust the cluster's ca.pem" if str(report["dashboard"]).startswith("https://") else "plain HTTP"
    click.echo(f"dashboard  {report['dashboard']}  ({kind})")
    if report["caelum_dashboard"]:
        click.echo(f"caelum     {report['caelum_dashboard']}")
    click.echo(f"machines   {len(nodes)}")
    for node in nodes:
        click.echo("")
        click.echo(_describe_machine(node))


def _describe_machine(node: dict[str, Any]) -> str:
    res = node["resources"]
    age = f"{time.time() - node['last_heartbeat']:.1f}s ago" if node.get("last_heartbeat") else "never"
    gpus = res.get("gpus") or []
    lines = [
        f"{node['hostname']} ({node['ip_address']})  {node['status'].upper()}  heartbeat {age}",
        f"  {node['platform']}, python {node['python']}, {node['os']}",
        f"  cores {res.get('cpu_cores')}, memory {res.get('memory_gb')} GiB, "
        f"disk free {res.get('disk_space_gb')} GiB, GPUs {len(gpus)}",
    ]
    for gpu in gpus:
        util = f", {gpu['utilization']:.0f}% busy" if gpu.get("utilization") is not None else ""
        lines.append(f"    GPU {gpu['index']}: {gpu['name']}, {gpu['memory_gb']} GiB{util}")
    for w in node["workers"]:
        resources = " ".join(f"{k}={v:g}" for k, v in sorted(w["resources"].items()))
        lines.append(f"  worker {w['address']} ({w['nthreads']} threads) {resources}")
    if node.get("services"):
        services = ", ".join(f"{k}:{v}" for k, v in sorted(node["services"].items()))
        lines.append(f"  services {services}")
    return "\n".join(lines)


@click.command(name="events")
@scheduler_option
@tls_option
@click.option("--topic", "topics", multiple=True, help="Topic(s) to show (default: every caelum.* topic).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option("--count", type=int, default=None, help="With --follow: stop after this many new events.")
def events_command(
    scheduler: str | None,
    tls: str | None,
    tls_name: str | None,
    topics: tuple[str, ...],
    follow: bool,
    count: int | None,
) -> None:
    """Print cluster events as JSON lines: {"topic", "timestamp", "message"}."""
    import queue

    if count is not None and not follow:
        raise InvalidInput("--count only applies with --follow (it stops after that many new events)")
    if count is not None and count < 1:
        raise InvalidInput(f"--count must be at least 1, not {count}")
    wanted = list(topics) or list(events.TOPICS)
    with open_client(scheduler, quiet=True, tls=tls, tls_name=tls_name) as client:
        for topic in wanted:
            for timestamp, message in client.get_events(topic):
                click.echo(events.as_json_line(topic, timestamp, message))
        if not follow:
            return
        received: queue.Queue[tuple[str, float, Any]] = queue.Queue()
        for topic in wanted:
            client.subscribe_topic(topic, lambda event, topic=topic: received.put((topic, *event)))
        seen = 0
        try:
            while count is None or seen < count:
                try:
                    topic, timestamp, message = received.get(timeout=0.5)
                except queue.Empty:
                    continue
                click.echo(events.as_json_line(topic, timestamp, message))
                sys.stdout.flush()
                seen += 1
        except KeyboardInterrupt:
            pass


COMMANDS = [scheduler, worker, status, events_command]

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
from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option
from caelum_dask.cluster import machines, resolve_address
from caelum_dask.errors import InvalidInput, SchedulerUnreachable
from caelum_dask.slots import SLOTS_ENV

PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=PASSTHROUGH)
@click.option("--host", default=None, help="Address to listen on (default: all interfaces).")
@click.option("--port", default=8786, show_default=True, type=int, help="Scheduler port.")
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
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def scheduler(
    host: str | None, port: int, protocol: str, dashboard_address: str, dask_args: tuple[str, ...]
) -> None:
    """Start the cluster's scheduler with the machine registry (and dashboard pages).

    Same as `dask scheduler --preload caelum_dask.scheduler`; any other `dask scheduler`
    option may follow.
    """
    from distributed.cli import dask_scheduler

    args = ["--preload", "caelum_dask.scheduler", "--port", str(port), "--protocol", protocol]
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
@click.argument("dask_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    address: str | None,
    resources: str | None,
    nworkers: int,
    nthreads: int | None,
    name: str | None,
    dask_args: tuple[str, ...],
) -> None:
    """Join this machine to the cluster at ADDRESS, advertising its resources.

    Cores, memory, disk and NVIDIA GPUs are detected and advertised as the Dask resources
    CPU, MEMORY_GB, DISK_GB, GPU and GPU_MEMORY_GB; several processes split the machine.
    Same as `dask worker ADDRESS --preload caelum_dask.worker`.
    """
    from distributed.cli import dask_worker

    target = resolve_address(address)
    if target is None:
        raise InvalidInput(
            "caelum worker needs the scheduler's address, e.g. `caelum worker tcp://10.0.0.5:8786` "
            "(or set CAELUM_SCHEDULER)"
        )
    _check_reachable(target)
    if nworkers < 1:
        raise InvalidInput(f"--nworkers must be at least 1, not {nworkers}")
    os.environ[SLOTS_ENV] = str(nworkers)
    args = [target, "--preload", "caelum_dask.worker", "--nworkers", str(nworkers)]
    if nthreads:
        args += ["--nthreads", str(nthreads)]
    if resources:
        args += ["--resources", resources]
    if name:
        args += ["--name", name]
    dask_worker.main(args=[*args, *dask_args], prog_name="caelum worker")


def _check_reachable(address: str, timeout: float | None = None) -> None:
    """Fail fast with one line instead of letting a worker retry an unreachable scheduler."""
    from distributed.comm import connect as comm_connect

    from caelum_dask import config

    timeout = timeout if timeout is not None else float(config.get("connect-timeout"))

    async def probe() -> None:
        comm = await comm_connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, ValueError) as exc:
        raise SchedulerUnreachable(
            f"cannot reach the scheduler at {address} ({str(exc).splitlines()[0][:160]}); "
            "start one with `caelum scheduler` or check the address"
        ) from None


@click.command()
@scheduler_option
@json_option
def status(scheduler: str | None, as_json: bool) -> None:
    """Machines of the cluster: resources, GPUs, services, status and heartbeats.

    --json prints {"scheduler", "dashboard", "caelum_dashboard", "embedded",
    "machines": [MachineNode…]} (README); caelum_dashboard is the caelum pages' index.
    """
    from caelum_dask.dashboard import pages_mounted, pages_url

    with open_client(scheduler, quiet=as_json) as client:
        nodes = machines(client)
        report = {
            "scheduler": client.scheduler.address,
            "dashboard": client.dashboard_link,
            "caelum_dashboard": pages_url(client.dashboard_link) if pages_mounted(client) else None,
            "embedded": resolve_address(scheduler) is None,
            "machines": nodes,
        }
    if as_json:
        print_json(report)
        return
    click.echo(f"scheduler  {report['scheduler']}")
    click.echo(f"dashboard  {report['dashboard']}")
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
@click.option("--topic", "topics", multiple=True, help="Topic(s) to show (default: every caelum.* topic).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until interrupted.")
@click.option("--count", type=int, default=None, help="With --follow: stop after this many new events.")
def events_command(scheduler: str | None, topics: tuple[str, ...], follow: bool, count: int | None) -> None:
    """Print cluster events as JSON lines: {"topic", "timestamp", "message"}."""
    import queue

    wanted = list(topics) or list(events.TOPICS)
    with open_client(scheduler, quiet=True) as client:
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

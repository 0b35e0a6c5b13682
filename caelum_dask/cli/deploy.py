"""``caelum up`` / ``caelum down``: bring a cluster up from a cluster file over SSH (docs/deploy.md)."""

from __future__ import annotations

import click

from caelum_dask.cli._options import json_option, print_json
from caelum_dask.cli.progress import ProgressDisplay


@click.command()
@click.argument("cluster_file", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Only run the preflight on every host; start nothing.")
@json_option
def up(cluster_file: str, check: bool, as_json: bool) -> None:
    """Start the cluster described by CLUSTER_FILE over SSH and print its status.

    First a preflight on every host (SSH reachable, same Python/caelum-dask/dask versions as
    this machine, ports free, TLS files present); any problem is printed as one line and
    nothing starts. Then `caelum scheduler` and `caelum worker` are started detached on their
    hosts (they keep running after this command exits) and the command waits until every
    declared worker has joined. Running it again leaves hosts whose processes already run
    alone. Worker entries with `adaptive:` start their minimum workers here; a controller
    on the scheduler then starts more over SSH when work queues and retires idle ones
    (docs/deploy.md, "Adaptive host groups"). --json prints {"scheduler", "dashboard",
    "started", "already_running", "workers", "machines", "preflight"}; when the preflight
    fails, {"ok": false, "problems": [...]} (and a non-zero exit).
    """
    from caelum_dask.cli.cluster import _describe_machine
    from caelum_dask.deploy import PreflightFailed, load, up as deploy_up

    spec = load(cluster_file)
    try:
        with ProgressDisplay("caelum", noun="hosts", live=not as_json) as display:
            result = deploy_up(spec, check_only=check, progress=display)
    except PreflightFailed as exc:
        for problem in exc.problems:
            click.echo(f"caelum: preflight: {problem}", err=True)
        if as_json:
            print_json({"ok": False, "problems": exc.problems})
        raise
    if as_json:
        print_json(result.to_dict())
        return
    if check:
        for host in result.preflight["hosts"]:
            state = f"running (pid {host['running_pid']})" if host["running_pid"] else "ready"
            click.echo(f"{host['role']:9} {host['name']:20} {host['host']:20} python {host['python']}, "
                       f"caelum-dask {host['caelum_dask']}: {state}")
        click.echo("preflight OK")
        return
    click.echo(f"scheduler  {result.scheduler}")
    click.echo(f"dashboard  {result.dashboard}")
    click.echo(f"machines   {len(result.machines)}")
    for node in result.machines:
        click.echo("")
        click.echo(_describe_machine(node))


@click.command()
@click.argument("cluster_file", type=click.Path(dir_okay=False))
@json_option
def down(cluster_file: str, as_json: bool) -> None:
    """Stop every process `caelum up CLUSTER_FILE` started (workers first, then the scheduler).

    With adaptive host groups the scheduler's adaptive controller is stopped first, then every
    worker it may have started.

    Each process group is sent SIGTERM, then SIGKILL after a grace period, and its pid file is
    removed; processes that are not running are skipped. --json prints
    {"scheduler", "processes": {name: "stopped" | "not-running"}}.
    """
    from caelum_dask.deploy import down as deploy_down, load

    spec = load(cluster_file)
    with ProgressDisplay("caelum", noun="hosts", live=not as_json) as display:
        result = deploy_down(spec, progress=display)
    if as_json:
        print_json(result)
        return
    for name, state in result["processes"].items():
        click.echo(f"{name:20} {state}")


COMMANDS = [up, down]

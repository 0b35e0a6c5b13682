"""``caelum run FILE.py`` and ``caelum runs list|show``: workflows from the command line."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Any

import click

from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option
from caelum_dask.cli.progress import ProgressDisplay


def _short(value: Any, width: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@click.command(name="run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a workflow parameter (repeatable); the value takes the type of the default.")
@click.option("--resume", metavar="RUN_ID", default=None,
              help="Re-run RUN_ID's parameters, reusing its completed tasks; only failed, skipped "
                   "or changed tasks (and their dependents) run.")
@click.option("--workflow", "workflow_name", metavar="NAME", default=None,
              help="Which workflow to run when FILE defines several.")
@click.option("--no-cache", is_flag=True, help="Recompute every task instead of reusing cached results.")
@scheduler_option
@json_option
def run_command(file: str, params: tuple[str, ...], resume: str | None, workflow_name: str | None,
                no_cache: bool, scheduler: str | None, as_json: bool) -> None:
    """Run the workflow defined in FILE (a Python file) on the cluster.

    FILE is loaded by path and shipped to the workers by value, so nothing needs installing
    there. Progress goes to stderr; the summary (tasks computed/cached/failed, tasks per
    machine, the run id) to stdout. Exit code 1 when any task failed or was skipped.

    \b
    Examples:
      caelum run workflows/fanout.py -p n=100
      caelum run workflows/fanout.py --resume 20261126-061241-c0c84f
    """
    from caelum_dask.workflow.loader import load_workflow
    from caelum_dask.workflow.params import parse_params
    from caelum_dask.workflow.runner import SchedulerLost, WorkflowOptions, run
    from caelum_dask.workflow.validation import validate

    wf = load_workflow(file, workflow_name)
    given = parse_params(params, wf.params)
    if not resume:
        validate(wf, given)  # bad input fails before a cluster starts
    options = WorkflowOptions.from_config(params=given, resume=resume, cache=False if no_cache else None,
                                          file=str(file))
    with open_client(scheduler, quiet=as_json) as client:
        try:
            with ProgressDisplay("caelum run", noun="tasks", live=not as_json) as display:
                result = run(wf, client=client, options=options, progress=display)
        except SchedulerLost:
            # the client is still trying to reconnect; closing it makes Dask log that attempt's
            # traceback, which would bury our one line (how to resume) under noise
            logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
            raise
    if as_json:
        print_json(result.to_dict())
    else:
        took = f"{result.duration:.2f}s"
        click.echo(f"run {result.run_id} ({result.workflow}): {result.state} in {took}")
        click.echo(f"tasks: {result.computed} computed, {result.cached} cached, {result.failed} failed, "
                   f"{result.skipped} skipped")
        if result.per_machine:
            click.echo("machines: " + ", ".join(f"{m}: {n}" for m, n in sorted(result.per_machine.items())))
        for name, error in result.errors.items():
            click.echo(f"failed: {name}: {error}")
        for name, value in result.results.items():
            click.echo(f"output {name} = {_short(value)}")
        if not result.ok:
            click.echo(f"see `caelum runs show {result.run_id}`; resume with "
                       f"`caelum run {file} --resume {result.run_id}`")
    sys.exit(0 if result.ok else 1)


@click.group(name="runs")
def runs_group() -> None:
    """Past workflow runs, from the run store (caelum.workflow.store, default ~/.caelum)."""


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return _dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    """``1.23s``, or ``-`` when not known (no estimate recorded, or the task did not run)."""
    return "-" if value is None else f"{value:.2f}s"


@runs_group.command(name="list")
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@json_option
def runs_list(limit: int, as_json: bool) -> None:
    """The most recent runs: id, workflow, state, counts, start time.

    A run still marked running whose client is gone (killed, crashed) is recorded as
    interrupted first, so what this shows is true; `caelum run FILE --resume RUN_ID` finishes it.
    """
    from caelum_dask.workflow.store import RunStore

    with RunStore() as store:
        runs = store.runs(limit)
    if as_json:
        print_json(runs)
        return
    if not runs:
        click.echo("no runs yet; start one with `caelum run FILE.py`")
        return
    for r in runs:
        click.echo(f"{r['id']}  {r['workflow']:<20} {r['state']:<11} computed {r['computed']:>4}  "
                   f"cached {r['cached']:>4}  failed {r['failed']:>3}  {_when(r['started'])}")


@runs_group.command(name="show")
@click.argument("run_id")
@click.option("--tracebacks", is_flag=True, help="Print the traceback of every failed attempt.")
@json_option
def runs_show(run_id: str, tracebacks: bool, as_json: bool) -> None:
    """One run: parameters, every task's state and machine, its attempts' errors, and the
    time the learned durations estimated (per task and for the run) next to the actual time."""
    from caelum_dask.workflow.store import RunStore

    with RunStore() as store:
        run = store.run(run_id)
    if as_json:
        print_json(run)
        return
    click.echo(f"run {run['id']} ({run['workflow']}): {run['state']}, started {_when(run['started'])}, "
               f"finished {_when(run.get('finished'))}")
    click.echo(f"parameters: {json.dumps(run['parameters'])}")
    if run.get("reason"):
        click.echo(f"why: {run['reason']}")
    if run.get("resumed_from"):
        click.echo(f"resumed from: {run['resumed_from']}")
    click.echo(f"tasks: {run['computed']} computed, {run['cached']} cached, {run['failed']} failed, "
               f"{run['skipped']} skipped")
    if run.get("estimated") is not None:
        click.echo(f"time: estimated {_seconds(run.get('estimated'))}, actual {_seconds(run.get('duration'))}")
    for t in run["tasks"]:
        extra = f"  {t['error']}" if t.get("error") else ""
        click.echo(f"  {t['task']:<30} {t['state']:<9} attempts {t['attempts']}  {t.get('machine') or '-'}"
                   f"  estimate {_seconds(t.get('estimated'))} actual {_seconds(t.get('duration'))}{extra}")
    if tracebacks:
        for a in run["attempts"]:
            if a.get("traceback"):
                click.echo(f"--- {a['task']} attempt {a['attempt']} ---\n{a['traceback']}")


COMMANDS = [run_command, runs_group]

"""``caelum bi``: dev analytics reports gathered from every machine."""

from __future__ import annotations

import os

import click

from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option
from caelum_dask.cli.progress import ProgressDisplay


def absolute_roots(roots: tuple[str, ...]) -> list[str]:
    """Relative --roots mean "here": make them absolute. ``~`` stays for each machine to expand."""
    return [r if r.startswith("~") or os.path.isabs(r) else os.path.abspath(r) for r in roots]


@click.group("bi")
def bi() -> None:
    """Business intelligence: git history, test results, code metrics and resource samples
    collected on every machine (one pinned task per machine), aggregated into reports."""


@bi.command("report")
@click.argument("definition", type=click.Path(dir_okay=False))
@click.option("--roots", "roots", multiple=True, metavar="DIR",
              help="Folder to search for git repositories on every machine, in addition to its "
                   "caelum.bi.roots (repeatable).")
@click.option("--since", default=None, metavar="WINDOW",
              help="History window: 90d, 12w, 6m, 1y, an ISO date, or 'all' (default: the report's SINCE).")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Write CSV + Parquet per table, report.xlsx and report.html here "
                   "(default: reports/<report name>).")
@click.option("--per", type=click.Choice(["machine", "worker"]), default="machine", show_default=True,
              help="One collector per machine, or per worker (each worker reading its own roots).")
@scheduler_option
@json_option
def report(definition: str, roots: tuple[str, ...], since: str | None, out: str | None, per: str,
           scheduler: str | None, as_json: bool) -> None:
    """Run the report DEFINITION (a file like bi/weekly_team.py) and export its tables.

    Problems on one machine (a missing root, a folder with no repository, a repository with
    no commits) are listed and the other machines' data is kept.

    \b
    Examples:
      caelum bi report bi/weekly_team.py --since 90d --out reports/weekly
      caelum bi report bi/code_health.py --roots ~/src --since all --json
    Tables, definitions and the files read: docs/bi.md.
    """
    from pathlib import Path

    from caelum_dask.bi.definition import load
    from caelum_dask.bi.report import run_report

    from caelum_dask.bi.dataset import parse_since

    defn = load(definition)  # bad definitions and windows fail before any cluster starts
    parse_since(since)
    target = out or str(Path("reports") / defn.name)
    with open_client(scheduler, quiet=as_json) as client, \
            ProgressDisplay("caelum bi", noun="steps", live=not as_json) as display:
        result = run_report(defn, client=client, roots=absolute_roots(roots), since=since, out=target,
                            per=per, progress=display)  # type: ignore[arg-type]
    for row in result.problems.to_dict("records"):
        click.echo(f"caelum bi: warning: {row['machine']} ({row['worker']}): {row['message']}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    click.echo(f"{result.title}: {len(result.tables)} tables in {result.out} ({result.seconds:.1f}s)")
    for name, frame in result.tables.items():
        click.echo(f"  {name:<18} {len(frame):>7} rows")
    click.echo(f"  html:  {result.files['html']}\n  excel: {result.files['excel']}")


@bi.command("collect")
@click.option("--roots", "roots", multiple=True, metavar="DIR",
              help="Folder to search for git repositories on every machine (repeatable).")
@click.option("--since", default="all", show_default=True, metavar="WINDOW",
              help="History window: 90d, 12w, 6m, 1y, an ISO date, or 'all'.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Also write the raw collected tables (deduplicated) as Parquet here.")
@click.option("--per", type=click.Choice(["machine", "worker"]), default="machine", show_default=True,
              help="One collector per machine, or per worker.")
@scheduler_option
@json_option
def collect_cmd(roots: tuple[str, ...], since: str, out: str | None, per: str, scheduler: str | None,
                as_json: bool) -> None:
    """Run only the collectors: what each machine holds (repositories, commits, problems)."""
    from pathlib import Path

    from caelum_dask.bi.collect import collect
    from caelum_dask.bi.dataset import parse_since

    window = parse_since(since)
    with open_client(scheduler, quiet=as_json) as client:
        data = collect(client, roots=absolute_roots(roots), since=window, per=per)  # type: ignore[arg-type]
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, frame in data.tables.items():
            frame.to_parquet(Path(out) / f"{name}.parquet", index=False)
    repos = data.repos
    clones = repos[["machine", "worker", "repo", "repo_id", "path", "commits", "file_changes", "tags"]] \
        .to_dict(orient="records") if len(repos) else []
    summary = {"collected": data.summary(), "clones": clones,
               "problems": data.problems.to_dict(orient="records"), "out": out}
    if as_json:
        print_json(summary)
        return
    for row in clones:
        click.echo(f"{row['machine']} ({row['worker']}): {row['repo']} {row['commits']} commits  {row['path']}")
    for row in summary["problems"]:
        click.echo(f"{row['machine']} ({row['worker']}): {row['kind']}: {row['message']}")
    click.echo(f"{data.summary()['commits']} distinct commits, {data.summary()['files']} file changes")


@bi.command("tables")
@json_option
def tables_cmd(as_json: bool) -> None:
    """List the built-in tables a report definition can name in TABLES."""
    from caelum_dask.bi.metrics import BUILDERS

    docs = {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in BUILDERS.items()}
    if as_json:
        print_json(docs)
        return
    for name, doc in docs.items():
        click.echo(f"{name:<14} {doc}")


COMMANDS = [bi]

"""``caelum analyze`` and ``caelum codemod``: code analysis and libcst codemods on the cluster."""

from __future__ import annotations

import sys
from typing import Any

import click

from caelum_dask.cli._options import json_option, print_json, scheduler_option
from caelum_dask.cli.progress import ProgressDisplay
from caelum_dask.errors import InvalidInput


@click.command("analyze")
@click.argument("path", type=click.Path())
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Folder for CSV + Parquet per table, summary.json and report.html.")
@click.option("--plugins", "plugins", multiple=True, type=click.Path(),
              help="Analyzer plugin file or folder (repeatable), e.g. analyzers/.")
@click.option("--analyzer", "analyzers", multiple=True,
              help="Built-in analyzers to run (repeatable; default: all of raw, cc, halstead, mi, "
                   "structure, imports).")
@click.option("--include-all", is_flag=True,
              help="Also analyse vendored, generated and huge files (skipped by default).")
@click.option("--no-cache", is_flag=True, help="Ignore and do not update the results cache.")
@click.option("--time-limit", type=float, default=None,
              help="Seconds one file may take before it becomes an error row (config "
                   "caelum.analysis.file-time-limit, default 60).")
@scheduler_option
@json_option
def analyze_command(path: str, out: str | None, plugins: tuple[str, ...], analyzers: tuple[str, ...],
                    include_all: bool, no_cache: bool, time_limit: float | None, scheduler: str | None,
                    as_json: bool) -> None:
    """Analyse the Python files under PATH across the cluster.

    Files are found with .gitignore respected (git ls-files inside a repository); vendored,
    generated and huge files are skipped unless --include-all. Metrics follow radon's
    definitions (raw counts, cyclomatic complexity with ranks A-F, Halstead, maintainability
    index), plus structure, the import graph and any --plugins analyzers. Unchanged files come
    from the cache and are not sent to the cluster. A file that does not parse is an error row;
    the run goes on.
    """
    from pathlib import Path

    from caelum_dask.analysis.engine import analyze
    from caelum_dask.analysis.options import AnalysisOptions

    if not Path(path).exists():
        raise InvalidInput(f"no such file or directory: {path}")
    if time_limit is not None and time_limit <= 0:
        raise InvalidInput(f"--time-limit must be a positive number of seconds (got {time_limit:g})")
    if out:
        _check_out_folder(out)  # before the run, so a bad --out does not waste it
    options = AnalysisOptions.from_config(plugins=plugins, analyzers=analyzers or None, include_all=include_all,
                                          use_cache=not no_cache, time_limit=time_limit, out=out)
    with ProgressDisplay("caelum analyze", noun="files", live=not as_json) as display:
        result = analyze(path, options, scheduler=scheduler, progress=display)
    summary = result.to_dict()
    if as_json:
        print_json(summary)
        return
    _print_summary(summary)


def _check_out_folder(out: str) -> None:
    """Refuse an --out that cannot become a writable folder (a file on its path, no permission)."""
    import os
    from pathlib import Path

    folder = Path(out).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidInput(f"--out {out}: {existing} is a file, not a folder; give a folder for the results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(f"--out {out}: cannot write in {existing} (permission denied); give a folder you can write")


def _print_summary(s: dict[str, Any]) -> None:
    click.echo(f"{s['files']} files ({s['cached']} cached, {s['analysed']} analysed in {s['tasks']} tasks), "
               f"{s['lines']} lines, {s['skipped']} skipped, {s['errors']} with errors")
    click.echo(f"{s['functions']} blocks, mean complexity {s['mean_complexity']}, ranks "
               + " ".join(f"{k}={v}" for k, v in s["ranks"].items()) + f", mean MI {s['mean_mi']}")
    for w in s["worst_functions"][:5]:
        click.echo(f"  {w['rank']} {w['complexity']:>3}  {w['path']}:{w['lineno']} {w['name']}")
    imp = s["imports"]
    click.echo(f"imports: {imp['modules']} modules, {imp['edges']} edges, {imp['cycle_groups']} cycle groups; "
               f"most central: {', '.join(imp['most_central'][:5])}")
    if s["findings"]:
        click.echo("findings: " + ", ".join(f"{k}={v}" for k, v in s["findings"].items()))
    for name, where in s.get("outputs", {}).items():
        if name in ("summary", "report"):
            click.echo(f"{name}: {where}")


@click.command("codemod")
@click.argument("path", type=click.Path())
@click.option("--transform", "transform", required=True, metavar="MODULE:CLASS",
              help="A libcst Codemod class, e.g. mypkg.codemods:RenameThing or path/to/file.py:Class.")
@click.option("--apply", is_flag=True, help="Write the changed files instead of printing a diff.")
@scheduler_option
@json_option
def codemod_command(path: str, transform: str, apply: bool, scheduler: str | None, as_json: bool) -> None:
    """Run a libcst codemod over PATH across the cluster.

    Prints the unified diff that `python -m libcst.tool codemod -x MODULE.CLASS PATH -u 5
    --no-format` prints (same files, same order, same text); with --apply, writes the files.
    """
    from caelum_dask.analysis.codemod import run_codemod
    from caelum_dask.analysis.options import CodemodOptions

    # No progress display: stderr carries libcst.tool's own lines, as `libcst.tool --hide-progress`.
    result = run_codemod(path, options=CodemodOptions.from_config(transform=transform, apply=apply),
                         scheduler=scheduler)
    if as_json:
        print_json(result.to_dict())
    else:
        for filename in result.files:
            if filename in result.skipped:
                click.echo(f"Codemodding {filename}", err=True)
                click.echo(f"Skipped codemodding {filename}: {result.skipped[filename]}\n", err=True)
            elif filename in result.failed:
                click.echo(f"Codemodding {filename}", err=True)
                click.echo(f"Failed to codemod {filename}: {result.failed[filename]}\n", err=True)
            elif not apply and result.diffs.get(filename):
                click.echo(result.diffs[filename])
    n = len(result.files)
    ok = n - len(result.skipped) - len(result.failed)
    click.echo(f"Finished codemodding {n} files!", err=True)
    click.echo(f" - Transformed {ok} files successfully.", err=True)
    click.echo(f" - Skipped {len(result.skipped)} files.", err=True)
    click.echo(f" - Failed to codemod {len(result.failed)} files.", err=True)
    if apply:
        click.echo(f" - Wrote {len(result.written)} changed files.", err=True)
    if result.failed:
        sys.exit(1)


COMMANDS = [analyze_command, codemod_command]

"""``caelum test``: a pytest suite sharded over the cluster."""

from __future__ import annotations

import signal
import sys

import click

from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option
from caelum_dask.cli.progress import ProgressDisplay
from caelum_dask.errors import InvalidInput


def _env_pairs(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("path", type=click.Path(file_okay=False, path_type=str))
@click.option("--shards", default=None, metavar="auto|N",
              help="How many long-lived pytest sessions run the suite; auto: one per worker thread "
                   "of the cluster (default: caelum.testing.sessions, auto).")
@click.option("--dist", type=click.Choice(["load", "loadfile", "loadscope"]), default=None,
              help="load: tests spread freely; loadfile: a file's tests stay together; loadscope: a "
                   "module's or class's tests stay together (their fixtures set up once) "
                   "(default: caelum.testing.dist, load).")
@click.option("--platforms", default=None, metavar="all|LIST",
              help="Run the suite once per platform: 'all' (every platform in the cluster) or e.g. linux,darwin.")
@click.option("--retry-failed", type=int, default=None, metavar="N",
              help="Re-run failed tests up to N times, on another machine when there is one; a test "
                   "that passes on a re-run is reported flaky (default: caelum.testing.retry-failed, 1).")
@click.option("--flaky-fails", is_flag=True, help="Count flaky tests as failures in the exit code.")
@click.option("--junit", "junit", default=None, metavar="FILE", help="Write the merged JUnit XML here.")
@click.option("--python", "python", default=None, metavar="PY",
              help="Interpreter to run pytest with on the workers (default: the worker's own Python).")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="A test that makes no progress for this long is reported hung and its session's "
                   "process tree killed; a fresh session takes the rest (default: caelum.testing.timeout, 300).")
@click.option("--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra environment for the tests (repeatable).")
@click.option("--no-record", is_flag=True, help="Do not update .caelum/test-durations.json.")
@scheduler_option
@json_option
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def test(path: str, shards: str | None, dist: str | None, platforms: str | None, retry_failed: int | None, flaky_fails: bool,
         junit: str | None, python: str | None, timeout: float | None, env: tuple[str, ...], no_record: bool,
         scheduler: str | None, as_json: bool, pytest_args: tuple[str, ...]) -> None:
    """Run the pytest suite in PATH over the cluster's machines.

    The project is shipped to each machine once (git-tracked plus untracked, non-ignored
    files). Every worker slot runs one long-lived pytest session that collects once and then
    takes tests from one queue, longest first by the durations recorded in
    PATH/.caelum/test-durations.json (or pytest-split's .test_durations, or what the
    cluster measured in another clone of the repository), in shrinking
    chunks, with idle sessions stealing at the tail. The counts are pytest's own final
    line. Failed tests are re-run on another machine to tell flaky from broken. A crashed
    or hung test is reported and its session replaced; everything a session started ends
    with it. Anything after `--` goes to pytest, e.g. `caelum test . -- -x -k smoke`
    (`-x`/`--maxfail` stop the whole run). Workers need the project's test dependencies
    installed. `pytest --caelum` runs the same engine from your own pytest command line.

    Exit status as pytest's: 0 passed, 1 tests failed, 2 interrupted (collection errors,
    lost workers), 4 usage error, 5 no tests collected.
    """
    from caelum_dask.testing.report import render
    from caelum_dask.testing.engine import settle
    from caelum_dask.testing.runner import TestOptions, run_tests

    options = TestOptions.from_config(
        shards=shards, dist=dist, platforms=platforms, retry_failed=retry_failed, junit=junit, python=python,
        pytest_args=list(pytest_args), timeout=timeout, env=_env_pairs(env), flaky_fails=flaky_fails,
        record_durations=not no_record)
    options.validate()  # bad options fail before a cluster is started
    from pathlib import Path

    if not Path(path).expanduser().is_dir():
        raise InvalidInput(f"{path}: no such project folder; give the folder that holds the tests")

    signal.signal(signal.SIGTERM, _interrupt)  # a stopped run ends its sessions, as Ctrl-C does
    try:
        with open_client(scheduler, quiet=as_json) as client:
            with ProgressDisplay("caelum test", noun="tests", live=not as_json) as display:
                result = run_tests(path, options, client=client, progress=display)
            if as_json:
                print_json(result.to_dict())
            else:
                click.echo(render(result))
            settle(client, result.run_id)  # the results are out; let the sessions finish exiting
    except KeyboardInterrupt:  # pytest's meaning of 2; the run ended its sessions and their processes
        click.echo("caelum test: interrupted; the run's sessions and their processes were ended", err=True)
        sys.exit(2)
    sys.exit(result.exit_code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


COMMANDS = [test]

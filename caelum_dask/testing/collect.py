"""Collection: which tests exist, asked of pytest itself (``pytest --collect-only -q``).

Collection runs as a Dask task on a worker, in the unpacked snapshot with the Python the
shards will use, so a test that only exists (or only imports) on the workers' platform is
collected as it will run. The node ids come from the shard plugin's ``collected`` event rather
than from parsing ``-q`` output, so the user's own ``-v``/``-q`` flags cannot confuse it;
pytest's output is kept to show collection errors exactly as pytest prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: pytest options whose value is the next argument (so that value is not a test path)
_VALUE_OPTIONS = frozenset({
    "-k", "-m", "-p", "-c", "-o", "-W", "-r", "--deselect", "--ignore", "--ignore-glob",
    "--rootdir", "--confcutdir", "--basetemp", "--maxfail", "--tb", "--durations",
    "--durations-min", "--log-level", "--log-cli-level", "--log-file", "--import-mode",
    "--timeout", "--override-ini", "--junit-prefix", "--capture", "--color", "--code-highlight",
    "--pyargs", "--config-file", "--cov", "--cov-report", "--randomly-seed",
})
#: options caelum owns in a shard (dropped from the user's arguments when sharding)
_DROPPED_WITH_VALUE = frozenset({"--junitxml", "--junit-xml", "-n", "--numprocesses", "--dist",
                                 "--maxprocesses", "--rootdir"})
_DROPPED_FLAGS = frozenset({"--collect-only", "--co", "--lf", "--last-failed", "--ff",
                            "--failed-first", "--sw", "--stepwise", "--nf", "--new-first"})


def split_pytest_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(options, selection)``: the user's pytest options, and their test paths/node ids.

    Collection gets both. Shards get the options only, because they are given explicit node
    ids: passing ``tests/`` again would run the whole folder in every shard.
    """
    options: list[str] = []
    selection: list[str] = []
    expect_value = False
    for arg in args:
        if expect_value:
            options.append(arg)
            expect_value = False
        elif arg.startswith("-"):
            options.append(arg)
            expect_value = arg in _VALUE_OPTIONS or arg in _DROPPED_WITH_VALUE
        else:
            selection.append(arg)
    return options, selection


def shard_options(options: Sequence[str]) -> list[str]:
    """The user's options minus those caelum sets itself for a shard (junit path, xdist, …)."""
    kept: list[str] = []
    skip_next = False
    for arg in options:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _DROPPED_WITH_VALUE:
            skip_next = "=" not in arg
            continue
        if name in _DROPPED_FLAGS:
            continue
        kept.append(arg)
    return kept


def collect_command(python: str, args: Sequence[str]) -> list[str]:
    """The collection command line, run in the snapshot root."""
    return [python, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
            "-p", "_caelum_shard_plugin", "--rootdir", ".", *shard_options(args)]


def run_collection(spec: dict[str, Any]) -> dict[str, Any]:
    """Dask task: collect the snapshot's tests; returns ``{rc, nodeids, output, machine}``.

    ``rc`` is pytest's: 0 collected, 2 collection errors (``output`` shows them as pytest does),
    4 usage error, 5 nothing collected.
    """
    from caelum_dask.testing import shard as shard_mod

    root, _ = shard_mod.snapshot_here(spec["snapshot"])
    options, selection = split_pytest_args(spec.get("pytest_args", []))
    command = collect_command(spec.get("python") or sys.executable, [*options, *selection])
    cache = _cache_file(root, command, spec.get("env") or {})
    if cache.exists():  # same snapshot, interpreter, arguments: same tests (saves a pytest start-up)
        try:
            return {**json.loads(cache.read_text()), "cached": True, **shard_mod.where()}
        except ValueError:
            pass
    events = shard_mod.events_path(root, spec["run_id"], "collect")
    env = shard_mod.shard_environment(spec, events, "collect")
    proc = shard_mod.run_watched(command, Path(root), env, events, spec.get("collect_timeout", 300))
    records = shard_mod.read_events(events)
    events.unlink(missing_ok=True)
    nodeids: list[str] = []
    for record in records:
        if "collected" in record:
            nodeids = record["collected"]
    result = {"rc": proc.rc, "timed_out": proc.timed_out, "nodeids": nodeids, "output": proc.output,
              "command": command}
    if proc.rc == 0 and not proc.timed_out and nodeids:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, cache)
    return {**result, "cached": False, **shard_mod.where()}


def _cache_file(root: Path, command: Sequence[str], env: dict[str, str]) -> Path:
    """Where this machine remembers the collection of one snapshot/command/environment."""
    key = hashlib.sha256(json.dumps([root.name, list(command), sorted(env.items())]).encode()).hexdigest()[:16]
    return root.parent / f"{root.name}.collect-{key}.json"

"""Collectors: one Dask task per machine, pinned to that machine's workers.

The data lives where the repositories and the recorded results are, so collection runs there
(``workers=`` the machine's workers, ``allow_other_workers=False``) and only DataFrames travel.
Keys are ``bi_collect-<run>.<n>`` (Dask's prefix is the step), annotated ``caelum_kind: bi`` so the
dashboard shows them as BI work.

On one host every worker belongs to the same machine in the registry; ``per="worker"`` runs one
collector per worker instead (each reads its own ``caelum.bi.roots``), which is how the tests
model several machines on one box.

How history is read (git revisions, search depth, git processes) is the caller's
:class:`~caelum_dask.bi.options.BIOptions`, resolved where the run starts and passed to every
collector; a collector reads only what describes its machine: its ``caelum.bi.roots`` and its
caelum home.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Literal

import pandas as pd
from distributed import Client, Future

from caelum_dask import config, events, keys
from caelum_dask.bi import gitlog, sampling, sources
from caelum_dask.bi.dataset import Dataset
from caelum_dask.bi.options import BIOptions
from caelum_dask.cluster import machines
from caelum_dask.errors import CaelumError

ALL_SOURCES = ("git", "tests", "metrics", "workflows", "resources")
PROBLEM_COLUMNS = ["machine", "worker", "location", "kind", "message"]


def configured_roots() -> list[str]:
    """``caelum.bi.roots`` on this machine: a list, or one string with os.pathsep separators.

    Read where the collector runs on purpose: the roots are folders of THAT machine.
    """
    value = config.get("bi.roots") or []
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v]
    return [str(v) for v in value]


def _frame(rows: list[dict[str, Any]], columns: list[str], identity: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(
        {c: pd.Series(dtype="object") for c in columns})
    for key, value in identity.items():
        frame[key] = value
    return frame


def _to_time(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for column in columns:
        frame[column] = pd.to_datetime(frame[column].astype("float64"), unit="s", utc=True)
    return frame


def collect_here(machine: str, roots: list[str] | None = None, since: int | None = None,
                 sources_wanted: tuple[str, ...] = ALL_SOURCES, run_id: str = "",
                 options: BIOptions | None = None) -> dict[str, pd.DataFrame]:
    """Run on one machine: read its repositories and recorded results into DataFrames.

    ``roots`` (from ``--roots``) are added to this machine's ``caelum.bi.roots``. Problems (a
    missing root, a folder with no repository, an empty repository, an unreadable file) become
    rows of the ``problems`` table; they never stop the collection. ``options`` are the
    caller's (see the module docstring); without them, this process's configuration.
    """
    options = BIOptions.given(options)
    try:
        from distributed import get_worker
        worker = get_worker().name
    except ValueError:
        worker = socket.gethostname()
    ident = {"machine": machine, "worker": str(worker)}
    all_roots = list(dict.fromkeys(configured_roots() + list(roots or [])))
    problems: list[dict[str, Any]] = []
    repos, commits, files, tags = [], [], [], []
    if "git" in sources_wanted:
        if not all_roots:
            problems.append({"location": "", "kind": "no-roots", "message":
                             "no roots configured on this machine (set caelum.bi.roots or pass --roots)"})
        revs = str(options.git_revs or gitlog.DEFAULT_REVS)
        for item in gitlog.iter_histories(all_roots, since, revs, int(options.max_depth or 1),
                                          int(options.git_threads or 1)):
            if isinstance(item, tuple):
                problems.append(dict(zip(("location", "kind", "message"), item)))
                continue
            repo = {"repo_id": item.repo_id, "repo": item.name}
            repos.append({**repo, "path": item.path, "head": item.head, "commits": len(item.commits),
                          "file_changes": len(item.files), "tags": len(item.tags)})
            for row in item.commits:
                row.update(repo)
            commits += item.commits
            when = {c["commit"]: (c["author"], c["author_time"]) for c in item.commits}
            for row in item.files:
                row.update(repo)
                row["author"], row["author_time"] = when[row["commit"]]
            files += item.files
            for row in item.tags:
                row.update(repo)
            tags += item.tags
    git_ids = ["repo_id", "repo"]
    out = {
        "repos": _frame(repos, [*git_ids, "path", "head", "commits", "file_changes", "tags"], ident),
        "commits": _to_time(_frame(commits, [*gitlog.COMMIT_COLUMNS, *git_ids], ident),
                            "author_time", "commit_time"),
        "files": _to_time(_frame(files, [*gitlog.FILE_COLUMNS, "author", "author_time", *git_ids], ident),
                          "author_time"),
        "tags": _to_time(_frame(tags, ["tag", "commit", "tag_time", *git_ids], ident), "tag_time"),
    }
    home = config.home()
    for name, reader in sources.READERS.items():
        if name in sources_wanted:
            frame, found = reader(home)
            for key, value in ident.items():
                frame[key] = value
            out[name] = frame
            problems += [dict(zip(("location", "kind", "message"), p)) for p in found]
    if "resources" in sources_wanted:
        rows_now = sampling.sample()
        out["resources"] = _to_time(_frame(rows_now, list(rows_now[0]), ident), "time")
    out["problems"] = _frame(problems, PROBLEM_COLUMNS[2:], ident)[PROBLEM_COLUMNS]
    rows = int(sum(len(f) for f in out.values()))
    events.emit(events.BI, "collect-finished", machine=machine, collector=str(worker), run_id=run_id,
                rows=rows, repos=len(repos), commits=len(commits), problems=len(problems))
    return out


def targets(client: Client, per: Literal["machine", "worker"] = "machine") -> list[dict[str, Any]]:
    """Where collectors run: ``{machine, workers:[addresses]}`` for each online machine (or worker)."""
    found = []
    for node in machines(client):
        if node.get("status") == "offline" or not node.get("workers"):
            continue
        addresses = [w["address"] for w in node["workers"]]
        if per == "worker":
            found += [{"machine": node["id"], "workers": [a]} for a in addresses]
        else:
            found.append({"machine": node["id"], "workers": addresses})
    if not found:
        raise CaelumError("no machine with a running worker is in the cluster; start a worker "
                          "with `caelum worker ADDRESS` and try again")
    return found


def submit_collectors(client: Client, roots: list[str] | None = None, since: int | None = None,
                      per: Literal["machine", "worker"] = "machine",
                      sources_wanted: tuple[str, ...] = ALL_SOURCES, run_id: str | None = None,
                      options: BIOptions | None = None) -> tuple[str, list[Future]]:
    """Submit one pinned collector per machine (or worker); returns (run_id, futures).

    ``options`` are resolved here, on the caller, and sent with every collector.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    options = BIOptions.given(options)
    futures = []
    for n, target in enumerate(targets(client, per)):
        with keys.kind("bi"):
            futures.append(client.submit(
                collect_here, target["machine"], roots, since, tuple(sources_wanted), run_id, options,
                key=keys.task_key("bi_collect", run_id, n), workers=target["workers"],
                allow_other_workers=False, pure=False, retries=0))
    return run_id, futures


def collect(client: Client, roots: list[str] | None = None, since: int | None = None,
            per: Literal["machine", "worker"] = "machine",
            sources_wanted: tuple[str, ...] = ALL_SOURCES, options: BIOptions | None = None) -> Dataset:
    """Collect from every machine and return the merged, deduplicated :class:`Dataset`."""
    _run_id, futures = submit_collectors(client, roots, since, per, sources_wanted, options=options)
    return Dataset.merge(client.gather(futures))

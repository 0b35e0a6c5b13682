"""The collected data: one pandas DataFrame per table, merged from every collector and deduplicated.

Every row carries ``machine`` (MachineNode id) and ``worker`` (the collector that read it) and,
for git tables, ``repo_id`` (the root commit hash) and ``repo`` (folder name). The same project
cloned on two machines has the same ``repo_id`` and the same commit hashes, so commits are kept
once (by commit hash) and file changes once (by commit and path); ``repos`` keeps every clone.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from caelum_dask.errors import InvalidInput

TABLES = ("repos", "commits", "files", "tags", "tests", "metrics", "workflows", "resources", "problems")
_SINCE = re.compile(r"^\s*(\d+)\s*([dwhmy])\s*$")
_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}


def parse_since(since: str | int | float | None, now: float | None = None) -> int | None:
    """``90d`` / ``12w`` / ``6m`` / ``1y`` / ``48h`` / an ISO date / ``all`` -> Unix time (or None)."""
    if since is None or (isinstance(since, str) and since.strip().lower() in ("", "all")):
        return None
    if isinstance(since, (int, float)):
        return int(since)
    now = _dt.datetime.now(_dt.timezone.utc).timestamp() if now is None else now
    match = _SINCE.match(since)
    if match:
        return int(now - int(match.group(1)) * _UNITS[match.group(2)])
    try:
        stamp = pd.Timestamp(since)
    except ValueError:
        raise InvalidInput(f"--since {since!r} is not understood; use e.g. 90d, 12w, 6m, 1y, "
                           "2024-01-31 or all") from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.timestamp())


def empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class Dataset:
    """All collected tables. ``problems`` lists what could not be read, machine by machine."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name in TABLES:
            return self.tables.get(name, pd.DataFrame())
        raise AttributeError(name)

    @classmethod
    def merge(cls, parts: list[dict[str, pd.DataFrame]]) -> Dataset:
        """Concatenate the collectors' tables and drop the duplicates a second clone brings."""
        tables: dict[str, pd.DataFrame] = {}
        for name in TABLES:
            frames = [p[name] for p in parts if name in p and len(p[name])]
            if frames:
                tables[name] = pd.concat(frames, ignore_index=True)
            else:
                tables[name] = next((p[name].iloc[0:0] for p in parts if name in p), pd.DataFrame())
        return cls(dedup(tables))

    def summary(self) -> dict[str, Any]:
        return {name: int(len(frame)) for name, frame in self.tables.items()}


def dedup(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Commits once per hash, file changes once per (commit, path), tags once per (repo, tag)."""
    out = dict(tables)
    repos = out.get("repos")
    if repos is not None and len(repos):
        # one name per repository, whatever each clone's folder is called (the shortest, then A-Z)
        names = (repos.assign(n=repos["repo"].str.len()).sort_values(["n", "repo"])
                 .drop_duplicates("repo_id").set_index("repo_id")["repo"])
        for name in ("repos", "commits", "files", "tags"):
            if name in out and len(out[name]):
                out[name] = out[name].assign(repo=out[name]["repo_id"].map(names).fillna(out[name]["repo"]))
    if len(out.get("commits", ())):
        commits = out["commits"]
        source = commits["machine"].astype(str) + "/" + commits["worker"].astype(str)
        clones = source.groupby(commits["commit"]).nunique().rename("seen_on")
        commits = commits.drop_duplicates("commit", ignore_index=True)
        out["commits"] = commits.merge(clones, left_on="commit", right_index=True, how="left")
    if len(out.get("files", ())):
        out["files"] = out["files"].drop_duplicates(["commit", "path", "old_path"], ignore_index=True)
    if len(out.get("tags", ())):
        out["tags"] = out["tags"].drop_duplicates(["repo_id", "tag"], ignore_index=True)
    if len(out.get("tests", ())):
        out["tests"] = out["tests"].drop_duplicates(["run_id", "test"], ignore_index=True)
    if len(out.get("metrics", ())):
        out["metrics"] = out["metrics"].drop_duplicates(ignore_index=True)
    return out

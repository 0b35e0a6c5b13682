"""Aggregations over a :class:`~caelum_dask.bi.dataset.Dataset`, in plain pandas.

Definitions (also in docs/bi.md) follow code-maat (revisions, churn, coupling, main developer),
git-quick-stats and the DORA "Four Keys". Every function returns a DataFrame with fixed
columns, empty when the data it needs was not collected.

The tables that depend on ``caelum.bi`` settings (ownership depth, deploy tags, fix pattern)
take ``options: BIOptions``; the aggregation task passes the caller's (they travel with it),
and a direct call without options uses the configuration of the calling process. Nothing here
reads the configuration of the worker it happens to run on.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import networkx as nx
import numpy as np
import pandas as pd

from caelum_dask.bi.dataset import Dataset
from caelum_dask.bi.options import BIOptions


def week_of(times: pd.Series) -> pd.Series:
    """Monday 00:00 UTC of the week each timestamp falls in."""
    times = pd.to_datetime(times, utc=True)
    return (times - pd.to_timedelta(times.dt.day_of_week, unit="D")).dt.normalize()


def canonical_paths(files: pd.DataFrame) -> pd.Series:
    """Each change's path under the file's LATEST name, following renames (old -> new).

    code-maat counts a renamed file as two; following renames keeps a file's revisions and its
    size (added − deleted over its whole history) together. Chains (a -> b -> c) are resolved.
    """
    renames = files.loc[files["old_path"].notna(), ["repo_id", "old_path", "path", "author_time"]]
    if not len(renames):
        return files["path"]
    latest: dict[tuple[str, str], str] = {}
    for repo_id, old, new, _t in renames.sort_values("author_time").itertuples(index=False):
        latest[(repo_id, old)] = new

    def resolve(repo_id: str, path: str) -> str:
        seen = {path}
        while (repo_id, path) in latest and latest[(repo_id, path)] not in seen:
            path = latest[(repo_id, path)]
            seen.add(path)
        return path

    # Only a path some rename started from can change: resolve those rows alone (iterating all
    # rows in Python took 2.6 s of 2.7 s for churn over 900 000 rows with one rename).
    moved = files["path"].isin(pd.unique(pd.Series([old for _repo, old in latest], dtype=files["path"].dtype)))
    paths = files["path"] if files["path"].dtype != object else files["path"].astype("str")
    if moved.any():
        rows = files.loc[moved]
        paths = paths.copy()
        paths.loc[moved] = [resolve(r, p) for r, p in zip(rows["repo_id"], rows["path"])]
    return paths


def _files(ds: Dataset) -> pd.DataFrame:
    """File changes with ``path`` replaced by the canonical (latest) name of the file."""
    files = ds.files
    if not len(files):
        return pd.DataFrame(columns=["commit", "path", "old_path", "added", "deleted", "binary", "author",
                                     "author_time", "repo_id", "repo"])
    return files.assign(path=canonical_paths(files))


def activity(ds: Dataset) -> pd.DataFrame:
    """Commits, lines added/deleted and files changed per author, week and repository."""
    cols = ["week", "author", "repo", "repo_id", "commits", "merges", "added", "deleted", "files_changed"]
    commits = ds.commits
    if not len(commits):
        return pd.DataFrame(columns=cols)
    per_commit = _files(ds).groupby("commit").agg(added=("added", "sum"), deleted=("deleted", "sum"),
                                                  files_changed=("path", "size"))
    frame = commits.merge(per_commit, left_on="commit", right_index=True, how="left")
    frame[["added", "deleted", "files_changed"]] = frame[["added", "deleted", "files_changed"]].fillna(0)
    frame["week"] = week_of(frame["author_time"])
    out = frame.groupby(["week", "author", "repo", "repo_id"], as_index=False).agg(
        commits=("commit", "size"), merges=("is_merge", "sum"), added=("added", "sum"),
        deleted=("deleted", "sum"), files_changed=("files_changed", "sum"))
    return out.astype({"commits": "int64", "merges": "int64", "added": "int64", "deleted": "int64",
                       "files_changed": "int64"})[cols].sort_values(["week", "repo", "author"], ignore_index=True)


def authors(ds: Dataset) -> pd.DataFrame:
    """Per author over the whole window: commits, lines, active weeks, repositories."""
    act = activity(ds)
    cols = ["author", "commits", "added", "deleted", "active_weeks", "repos"]
    if not len(act):
        return pd.DataFrame(columns=cols)
    out = act.groupby("author", as_index=False).agg(
        commits=("commits", "sum"), added=("added", "sum"), deleted=("deleted", "sum"),
        active_weeks=("week", "nunique"), repos=("repo_id", "nunique"))
    return out.sort_values(["commits", "author"], ascending=[False, True], ignore_index=True)[cols]


def churn(ds: Dataset) -> pd.DataFrame:
    """Per file: revisions (commits touching it), added, deleted, churn = added + deleted."""
    cols = ["repo", "repo_id", "path", "revisions", "added", "deleted", "churn", "net_lines",
            "authors", "binary"]
    files = _files(ds)
    if not len(files):
        return pd.DataFrame(columns=cols)
    out = files.groupby(["repo", "repo_id", "path"], as_index=False).agg(
        revisions=("commit", "nunique"), added=("added", "sum"), deleted=("deleted", "sum"),
        authors=("author", "nunique"), binary=("binary", "any"))
    out["churn"] = out["added"] + out["deleted"]
    out["net_lines"] = out["added"] - out["deleted"]
    return out.sort_values(["churn", "path"], ascending=[False, True], ignore_index=True)[cols]


def _latest_complexity(ds: Dataset) -> pd.DataFrame:
    metrics = ds.metrics
    if not len(metrics):
        return pd.DataFrame(columns=["path", "complexity"])
    latest = metrics.sort_values("time").groupby("path", as_index=False).last()
    return latest[["path", "complexity"]]


def hotspots(ds: Dataset, top: int | None = None) -> pd.DataFrame:
    """Change frequency × complexity (code-maat/Tornhill hotspots).

    ``score = revisions × complexity``; complexity is the latest ``caelum analyze`` figure for
    the file when analysis data exists (matched on the path, or an analysis path ending in
    ``/<path>``), otherwise the file's current size in lines from history (added − deleted).
    Binary files are left out.
    """
    cols = ["repo", "path", "revisions", "complexity", "complexity_source", "score", "churn"]
    ch = churn(ds)
    ch = ch[~ch["binary"].astype(bool)] if len(ch) else ch
    if not len(ch):
        return pd.DataFrame(columns=cols)
    ch = ch.copy()
    ch["complexity"] = ch["net_lines"].clip(lower=0).astype("float64")
    ch["complexity_source"] = "lines"
    comp = _latest_complexity(ds)
    if len(comp):
        by_path = dict(zip(comp["path"].astype(str), comp["complexity"]))
        def lookup(path: str) -> float:
            if path in by_path:
                return by_path[path]
            hits = [v for k, v in by_path.items() if k.endswith("/" + path)]
            return hits[0] if hits else np.nan
        found = ch["path"].map(lookup)
        ch.loc[found.notna(), "complexity"] = found[found.notna()]
        ch.loc[found.notna(), "complexity_source"] = "analysis"
    ch["score"] = ch["revisions"] * ch["complexity"]
    out = ch.sort_values(["score", "path"], ascending=[False, True], ignore_index=True)[cols]
    return out.head(top) if top else out


def coupling(ds: Dataset, min_revisions: int = 2, min_shared: int = 2, max_changeset: int = 30) -> pd.DataFrame:
    """Change coupling (code-maat ``coupling``): files that change in the same commits.

    ``degree = shared / mean(revisions_a, revisions_b) × 100``; commits touching more than
    ``max_changeset`` files (bulk edits) and files with fewer than ``min_revisions`` are ignored.
    """
    cols = ["repo", "path", "coupled", "shared", "revisions_a", "revisions_b", "degree"]
    files = _files(ds)
    if not len(files):
        return pd.DataFrame(columns=cols)
    files = files[["repo", "commit", "path"]].drop_duplicates()
    size = files.groupby("commit")["path"].transform("size")
    files = files[size <= max_changeset]
    revs = files.groupby(["repo", "path"]).size().rename("revisions")
    files = files.join(revs, on=["repo", "path"])
    files = files[files["revisions"] >= min_revisions]
    pairs = files.merge(files, on=["repo", "commit"], suffixes=("_a", "_b"))
    pairs = pairs[pairs["path_a"] < pairs["path_b"]]
    if not len(pairs):
        return pd.DataFrame(columns=cols)
    out = pairs.groupby(["repo", "path_a", "path_b", "revisions_a", "revisions_b"], as_index=False).agg(
        shared=("commit", "nunique"))
    out = out[out["shared"] >= min_shared]
    out["degree"] = (out["shared"] / ((out["revisions_a"] + out["revisions_b"]) / 2) * 100).round(1)
    out = out.rename(columns={"path_a": "path", "path_b": "coupled"})
    return out.sort_values(["degree", "shared"], ascending=False, ignore_index=True)[cols]


def directory_of(paths: pd.Series, depth: int) -> pd.Series:
    """The first ``depth`` folders of each path; files at the top level belong to ``.``."""
    parts = paths.str.split("/")
    dirs = parts.map(lambda p: "/".join(p[:-1][:depth]) or ".")
    return dirs


def ownership(ds: Dataset, depth: int | None = None, options: BIOptions | None = None) -> pd.DataFrame:
    """Main developer and bus factor per directory.

    Contribution = lines added (code-maat ``main-dev``). ``owner_share`` is the owner's share of
    the directory's added lines. Bus factor = the smallest number of authors whose added lines
    together make more than half of the directory's added lines (fewer = riskier).
    """
    cols = ["repo", "directory", "owner", "owner_share", "authors", "lines_added", "bus_factor"]
    files = _files(ds)
    files = files[~files["binary"].astype(bool)] if len(files) else files
    if not len(files):
        return pd.DataFrame(columns=cols)
    depth = int(depth or BIOptions.given(options).ownership_depth or 1)
    files = files.assign(directory=directory_of(files["path"], depth))
    per = files.groupby(["repo", "directory", "author"], as_index=False)["added"].sum()
    per = per.sort_values(["repo", "directory", "added", "author"], ascending=[True, True, False, True])
    rows = []
    for (repo, directory), group in per.groupby(["repo", "directory"], sort=True):
        total = group["added"].sum()
        share = group["added"].cumsum() / total if total else pd.Series([1.0] * len(group), index=group.index)
        bus = int((share.shift(fill_value=0) <= 0.5).sum()) if total else len(group)
        rows.append({"repo": repo, "directory": directory, "owner": group["author"].iloc[0],
                     "owner_share": round(float(group["added"].iloc[0] / total), 4) if total else 1.0,
                     "authors": len(group), "lines_added": int(total), "bus_factor": bus})
    return pd.DataFrame(rows, columns=cols)


def _fix_mask(subjects: pd.Series, options: BIOptions) -> pd.Series:
    pattern = re.compile(str(options.fix_pattern), re.IGNORECASE)
    return subjects.fillna("").map(lambda s: bool(pattern.search(s)))


def releases(ds: Dataset, options: BIOptions | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deployments and, per released commit, its lead time (see :func:`deployments`)."""
    options = BIOptions.given(options)
    cols = ["repo", "tag", "commit", "time", "commits", "fixes", "lead_time_h", "failed"]
    lead_cols = ["repo", "tag", "commit", "lead_time_h"]
    tags, commits = ds.tags, ds.commits
    if not len(tags) or not len(commits):
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=lead_cols)
    pattern = re.compile(str(options.deploy_tags or ".*"))
    tags = tags[tags["tag"].map(lambda t: bool(pattern.search(t)))]
    rows, leads = [], []
    for repo_id, repo_tags in tags.groupby("repo_id"):
        repo_commits = commits[commits["repo_id"] == repo_id].set_index("commit")
        graph = nx.DiGraph()
        graph.add_nodes_from(repo_commits.index)
        for sha, parents in repo_commits["parents"].items():
            graph.add_edges_from((sha, p) for p in str(parents or "").split())
        fixes = _fix_mask(repo_commits["subject"], options)
        released: set[str] = set()
        for _, tag in repo_tags.sort_values(["tag_time", "tag"]).iterrows():
            if tag["commit"] not in graph:
                continue
            reach = nx.descendants(graph, tag["commit"]) | {tag["commit"]}
            new = sorted(c for c in reach - released if c in repo_commits.index)
            released |= reach
            lead = (tag["tag_time"] - repo_commits.loc[new, "author_time"]).dt.total_seconds() / 3600
            leads += [{"repo": tag["repo"], "tag": tag["tag"], "commit": c, "lead_time_h": h}
                      for c, h in zip(new, lead)]
            rows.append({"repo": tag["repo"], "tag": tag["tag"], "commit": tag["commit"],
                         "time": tag["tag_time"], "commits": len(new), "fixes": int(fixes[new].sum()),
                         "lead_time_h": float(lead.median()) if len(new) else np.nan})
    out = pd.DataFrame(rows, columns=cols[:-1])
    out = out.sort_values(["repo", "time", "tag"], ignore_index=True)
    nxt = out.groupby("repo")["fixes"].shift(-1)
    out["failed"] = (nxt > 0).where(nxt.notna(), other=pd.NA).astype("boolean")
    return out[cols], pd.DataFrame(leads, columns=lead_cols)


def deployments(ds: Dataset, options: BIOptions | None = None) -> pd.DataFrame:
    """One row per deployment (a tag matching ``caelum.bi.deploy-tags``), oldest first.

    ``commits``: commits first released by this tag (reachable from it, not from an earlier
    tag). ``lead_time_h``: median hours from those commits' author time to the tag time.
    ``failed``: the NEXT deployment ships a fix or revert commit (subject matches
    ``caelum.bi.fix-pattern``) — the change failed and needed remediation; empty for the last.
    """
    return releases(ds, options)[0]


def delivery(ds: Dataset, options: BIOptions | None = None) -> pd.DataFrame:
    """DORA-style delivery metrics per repository (definitions in docs/bi.md).

    - deployment frequency: deployments per week between the first and the last (≥ 1 week);
    - lead time for changes: median over released commits of (tag time − author time), hours;
    - change-failure rate: failed deployments / deployments that have a successor.
    """
    cols = ["repo", "deployments", "first", "last", "deploys_per_week", "lead_time_h_median",
            "change_failure_rate", "fix_commits", "commits"]
    dep, leads = releases(ds, options)
    if not len(dep):
        return pd.DataFrame(columns=cols)
    rows = []
    for repo, group in dep.groupby("repo"):
        weeks = max((group["time"].max() - group["time"].min()).total_seconds() / (7 * 86400), 1.0)
        judged = group["failed"].dropna()
        lead = leads.loc[leads["repo"] == repo, "lead_time_h"]
        rows.append({"repo": repo, "deployments": len(group), "first": group["time"].min(),
                     "last": group["time"].max(), "deploys_per_week": round(len(group) / weeks, 3),
                     "lead_time_h_median": float(lead.median()) if len(lead) else np.nan,
                     "change_failure_rate": float(judged.astype(float).mean()) if len(judged) else np.nan,
                     "fix_commits": int(group["fixes"].sum()), "commits": int(group["commits"].sum())})
    return pd.DataFrame(rows, columns=cols)


def test_runs(ds: Dataset) -> pd.DataFrame:
    """Per recorded test run: tests, passed, failed, pass rate, total duration."""
    cols = ["run_id", "time", "machine", "tests", "passed", "failed", "skipped", "pass_rate", "duration"]
    tests = ds.tests
    if not len(tests):
        return pd.DataFrame(columns=cols)
    t = tests.assign(p=tests["outcome"].eq("passed"), f=tests["outcome"].isin(["failed", "error"]),
                     s=tests["outcome"].eq("skipped"))
    out = t.groupby("run_id", as_index=False).agg(
        time=("time", "min"), machine=("machine", "first"), tests=("test", "size"), passed=("p", "sum"),
        failed=("f", "sum"), skipped=("s", "sum"), duration=("duration", "sum"))
    out["pass_rate"] = out["passed"] / (out["passed"] + out["failed"]).where(lambda x: x > 0)
    return out.sort_values("time", ignore_index=True)[cols]


def test_health(ds: Dataset) -> pd.DataFrame:
    """Per test over all runs: pass rate, flaky (both passed and failed), durations (slowest first)."""
    cols = ["test", "runs", "passed", "failed", "pass_rate", "flaky", "mean_duration", "max_duration",
            "last_outcome"]
    tests = ds.tests
    if not len(tests):
        return pd.DataFrame(columns=cols)
    t = tests.sort_values("time").assign(p=tests["outcome"].eq("passed"),
                                         f=tests["outcome"].isin(["failed", "error"]))
    out = t.groupby("test", as_index=False).agg(
        runs=("run_id", "nunique"), passed=("p", "sum"), failed=("f", "sum"),
        mean_duration=("duration", "mean"), max_duration=("duration", "max"), last_outcome=("outcome", "last"))
    out["pass_rate"] = out["passed"] / (out["passed"] + out["failed"]).where(lambda x: x > 0)
    out["flaky"] = (out["passed"] > 0) & (out["failed"] > 0)
    return out.sort_values(["max_duration", "test"], ascending=[False, True], ignore_index=True)[cols]


def code_health(ds: Dataset, options: BIOptions | None = None) -> pd.DataFrame:
    """Weekly trend: commits, churn, share of fix/revert commits, mean/max complexity of analysis
    snapshots taken that week (empty when ``caelum analyze`` has recorded nothing)."""
    cols = ["week", "commits", "churn", "fix_commits", "fix_ratio", "mean_complexity", "max_complexity"]
    commits = ds.commits
    frames = []
    if len(commits):
        c = commits.assign(week=week_of(commits["author_time"]),
                           fix=_fix_mask(commits["subject"], BIOptions.given(options)))
        weekly = c.groupby("week").agg(commits=("commit", "size"), fix_commits=("fix", "sum"))
        files = _files(ds)
        if len(files):
            ch = files.assign(week=week_of(files["author_time"]), churn=files["added"] + files["deleted"])
            weekly = weekly.join(ch.groupby("week")["churn"].sum(), how="left")
        frames.append(weekly)
    metrics = ds.metrics
    if len(metrics):
        m = metrics.dropna(subset=["complexity"]).assign(week=week_of(metrics["time"]))
        frames.append(m.groupby("week").agg(mean_complexity=("complexity", "mean"),
                                            max_complexity=("complexity", "max")))
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, axis=1).sort_index().reset_index().rename(columns={"index": "week"})
    out = out.reindex(columns=cols)
    out[["commits", "fix_commits", "churn"]] = out[["commits", "fix_commits", "churn"]].fillna(0).astype("int64")
    out["fix_ratio"] = out["fix_commits"] / out["commits"].where(out["commits"] > 0)
    return out


def workflow_runs(ds: Dataset) -> pd.DataFrame:
    """Per workflow from the run stores: runs, completed, failed, success rate, last state."""
    cols = ["workflow", "runs", "completed", "failed", "success_rate", "last_state", "last_started"]
    runs = ds.workflows
    if not len(runs):
        return pd.DataFrame(columns=cols)
    runs = runs.assign(started=pd.to_datetime(runs["started"], utc=True, errors="coerce", format="mixed"),
                       ok=runs["state"].isin(["completed", "success", "succeeded"]),
                       bad=runs["state"].isin(["failed", "error"])).sort_values("started")
    out = runs.groupby("workflow", as_index=False).agg(
        runs=("run_id", "nunique"), completed=("ok", "sum"), failed=("bad", "sum"),
        last_state=("state", "last"), last_started=("started", "max"))
    out["success_rate"] = out["completed"] / out["runs"]
    return out[cols]


def repositories(ds: Dataset) -> pd.DataFrame:
    """Each repository once (by root commit) with the machines holding a clone."""
    cols = ["repo_id", "repo", "clones", "machines", "commits", "authors", "first_commit", "last_commit"]
    repos = ds.repos
    if not len(repos):
        return pd.DataFrame(columns=cols)
    clones = repos.groupby("repo_id", as_index=False).agg(
        repo=("repo", "first"), clones=("path", "size"),
        machines=("machine", lambda m: ", ".join(sorted(set(m)))))
    commits = ds.commits.groupby("repo_id", as_index=False).agg(
        commits=("commit", "nunique"), authors=("author", "nunique"),
        first_commit=("author_time", "min"), last_commit=("author_time", "max"))
    return clones.merge(commits, on="repo_id", how="left")[cols]


BUILDERS = {
    "repositories": repositories, "activity": activity, "authors": authors, "churn": churn,
    "hotspots": hotspots, "coupling": coupling, "ownership": ownership, "deployments": deployments,
    "delivery": delivery, "test_runs": test_runs, "test_health": test_health, "code_health": code_health,
    "workflow_runs": workflow_runs,
}


def build(name: str, ds: Dataset, options: BIOptions) -> pd.DataFrame:
    """The built-in table ``name``, with ``options`` for the tables that depend on settings."""
    builder: Callable[..., pd.DataFrame] = BUILDERS[name]
    if "options" in inspect.signature(builder).parameters:
        return builder(ds, options=options)
    return builder(ds)

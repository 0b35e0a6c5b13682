"""BI: collectors on several workers with different roots, dedup, aggregations, exports, CLI.

The "machines" here are worker processes on one host, so the registry shows ONE machine; the
collectors run per worker (``per="worker"``), each worker reading its own ``caelum.bi.roots``
(``DASK_CAELUM__BI__ROOTS``) and caelum home (``DASK_CAELUM__HOME``), which is how different
machines look to BI. One test runs the default per-machine mode on the embedded cluster.
"""

from __future__ import annotations

import json
import re
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import numpy as np
import pandas as pd
import pytest
from bi_fixtures import (JUNIT_RUN1, JUNIT_RUN2, clone, git, make_alpha, make_beta, numstat_sums,
                         rev_count)
from harness import REPO, ProcessCluster, run_caelum

from caelum_dask.bi import collect, load, metrics, parse_since, run_report
from caelum_dask.bi.dataset import Dataset
from caelum_dask.bi.export import sheet_names
from caelum_dask.bi.steps import report_step
from caelum_dask.errors import InvalidInput

UTC = "UTC"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bi-world")
    alpha = make_alpha(base / "A" / "src" / "alpha")
    (alpha / "README.md").write_text("work in progress\n")
    git(alpha, "stash", "-q")  # a stash is not history: it must not be counted
    clone(alpha, base / "B" / "code" / "alpha-clone")
    beta = make_beta(base / "B" / "code" / "beta")
    (base / "C" / "plain").mkdir(parents=True)
    (base / "C" / "plain" / "notes.txt").write_text("not a repository\n")
    (base / "C" / "empty").mkdir()
    git(base / "C" / "empty", "init", "-q")
    home_a = base / "homeA"
    (home_a / "tests").mkdir(parents=True)
    (home_a / "tests" / "run1.xml").write_text(JUNIT_RUN1)
    (home_a / "tests" / "run2.xml").write_text(JUNIT_RUN2)
    (home_a / "analysis").mkdir()
    pd.DataFrame({"path": ["/somewhere/alpha/src/main.py"], "complexity": [7.0],
                  "time": ["2024-01-15T00:00:00Z"]}).to_csv(home_a / "analysis" / "files.csv", index=False)
    home_b = base / "homeB"
    home_b.mkdir()
    with sqlite3.connect(home_b / "runs.sqlite") as con:
        con.execute("create table runs (id text, name text, status text, started text, finished text)")
        con.executemany("insert into runs values (?, ?, ?, ?, ?)", [
            ("r1", "code_health", "completed", "2024-01-10T10:00:00+00:00", "2024-01-10T10:05:00+00:00"),
            ("r2", "code_health", "failed", "2024-01-11T10:00:00+00:00", "2024-01-11T10:01:00+00:00"),
            ("r3", "nightly", "completed", "2024-01-11T02:00:00+00:00", "2024-01-11T02:30:00+00:00")])
    (base / "homeC").mkdir()
    (base / "homeC" / "tests").mkdir()
    (base / "homeC" / "tests" / "broken.xml").write_text("<testsuites><testsuite")
    return {"base": base, "alpha": alpha, "beta": beta, "clone": base / "B" / "code" / "alpha-clone",
            "homeA": home_a}


@pytest.fixture(scope="module")
def cluster(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    base = world["base"]
    pc = ProcessCluster(logdir=tmp_path_factory.mktemp("bi-logs"))
    roots = {"A": [str(base / "A")], "B": [str(base / "B" / "code")],
             "C": [str(base / "C" / "plain"), str(base / "C" / "empty"), str(base / "C" / "missing")]}
    homes = {"A": world["homeA"], "B": base / "homeB", "C": base / "homeC"}
    try:
        pc.start_scheduler()
        for name in ("A", "B", "C"):
            pc.env = {"DASK_CAELUM__BI__ROOTS": json.dumps(roots[name]), "DASK_CAELUM__HOME": str(homes[name])}
            pc.start_worker(name)
        client = pc.wait_for_workers(3)
        try:
            yield client, pc.address
        finally:
            client.close()
    finally:
        pc.stop()


@pytest.fixture(scope="module")
def data(cluster: tuple[Any, str]) -> Dataset:
    return collect(cluster[0], since=None, per="worker")


@pytest.fixture(scope="module")
def health(cluster: tuple[Any, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("bi-out") / "health"
    return run_report(REPO / "bi" / "code_health.py", client=cluster[0], since="all", per="worker", out=out)


# -- collection over several workers -------------------------------------------------------------
def test_counts_equal_git_and_clone_counts_once(data: Dataset, world: dict[str, Path]) -> None:
    commits = data.commits
    per_repo = commits.groupby("repo_id")["commit"].nunique()
    alpha_id = git(world["alpha"], "rev-list", "--max-parents=0", "HEAD").strip()
    beta_id = git(world["beta"], "rev-list", "--max-parents=0", "HEAD").strip()
    assert per_repo[alpha_id] == rev_count(world["alpha"]) == rev_count(world["clone"]) == 8
    assert int(git(world["alpha"], "rev-list", "--count", "--all")) > 8  # --all would count the stash
    assert per_repo[beta_id] == rev_count(world["beta"]) == 3
    assert len(commits) == commits["commit"].nunique() == 11
    # the clone was read on B, the original on A: both seen, counted once
    assert set(commits.loc[commits.repo_id == alpha_id, "seen_on"]) == {2}
    repos = metrics.repositories(data).set_index("repo_id")
    assert repos.loc[alpha_id, "clones"] == 2 and repos.loc[alpha_id, "commits"] == 8
    assert set(data.repos["worker"]) == {"A", "B"}


def test_churn_equals_numstat_sums(data: Dataset, world: dict[str, Path]) -> None:
    files = data.files
    for repo in ("alpha", "beta"):
        added, deleted = numstat_sums(world[repo])
        rows = files[files["repo"] == repo]
        assert (int(rows["added"].sum()), int(rows["deleted"].sum())) == (added, deleted)
    churn = metrics.churn(data)
    assert int(churn["churn"].sum()) == sum(sum(numstat_sums(world[r])) for r in ("alpha", "beta"))


def test_merges_empty_commits_renames_binaries(data: Dataset) -> None:
    commits = data.commits.set_index("subject")
    files = data.files
    assert bool(commits.loc["Merge feature", "is_merge"]) and commits.loc["Merge feature", "n_parents"] == 2
    for subject in ("Merge feature", "empty: trigger CI"):
        assert not (files["commit"] == commits.loc[subject, "commit"]).any()
    rename = files[files["old_path"].notna()]
    assert rename[["old_path", "path", "added", "deleted"]].values.tolist() == [["src/app.py", "src/main.py", 1, 0]]
    binary = files[files["path"] == "assets/logo.bin"].iloc[0]
    assert bool(binary["binary"]) and binary["added"] == 0 and binary["deleted"] == 0
    assert commits.loc["tune app, add logo", "author"] == "Bob"
    assert commits.loc["initial app", "author_time"] == pd.Timestamp("2024-01-01T12:00:00Z")


def test_problems_reported_other_machines_kept(data: Dataset, world: dict[str, Path], cluster: tuple[Any, str]) -> None:
    problems = data.problems
    assert set(problems["worker"]) == {"C"}
    by_kind = dict(zip(problems["kind"], problems["message"]))
    assert set(by_kind) == {"missing-root", "no-repositories", "git-error", "unreadable-tests"}
    assert "broken.xml" in by_kind["unreadable-tests"]
    assert "does not exist" in by_kind["missing-root"] and "missing" in by_kind["missing-root"]
    assert "no git repository" in by_kind["no-repositories"] and "plain" in by_kind["no-repositories"]
    assert "has no commits" in by_kind["git-error"]
    assert len(data.commits) == 11  # A's and B's data is all there
    finished = [m for _t, m in cluster[0].get_events("caelum.bi") if m["event"] == "collect-finished"]
    assert {m["collector"] for m in finished} >= {"A", "B", "C"}  # Dask sets "worker" to the address
    assert all(m["rows"] > 0 for m in finished)


# -- hand-checked aggregations ---------------------------------------------------------------------
def test_hotspots_follow_renames_and_use_analysis(data: Dataset, world: dict[str, Path]) -> None:
    hot = metrics.hotspots(data).set_index(["repo", "path"])
    main = hot.loc[("alpha", "src/main.py")]
    # revisions c1 (as app.py), c2, c3 (rename), c4, c5, c8; complexity 7 from the analysis file
    assert (main["revisions"], main["complexity"], main["complexity_source"], main["score"]) == (6, 7.0, "analysis", 42.0)
    util = hot.loc[("alpha", "src/util.py")]
    lines = len((world["alpha"] / "src/util.py").read_text().splitlines())
    assert (util["revisions"], util["complexity"], util["complexity_source"]) == (2, float(lines), "lines")
    assert util["score"] == 12.0
    assert ("alpha", "assets/logo.bin") not in hot.index  # binary files are not hotspots
    assert hot.index[0] == ("alpha", "src/main.py")
    assert hot.loc[("beta", "lib/a.py"), "score"] == 2 * 6  # 2 revisions × 6 lines


def test_ownership_and_bus_factor(data: Dataset) -> None:
    own = metrics.ownership(data).set_index(["repo", "directory"])
    src = own.loc[("alpha", "src")]
    assert (src["owner"], src["owner_share"], src["lines_added"], src["bus_factor"], src["authors"]) == (
        "Alice", 0.6, 25, 1, 3)
    lib = own.loc[("beta", "lib")]
    assert (lib["owner"], lib["owner_share"], lib["bus_factor"]) == ("Dave", 0.4, 2)
    assert ("alpha", "assets") not in own.index
    assert own.loc[("alpha", "."), "owner"] == "Alice"


def test_coupling(data: Dataset) -> None:
    coupling = metrics.coupling(data)
    assert coupling[["repo", "path", "coupled", "shared", "degree"]].values.tolist() == [
        ["alpha", "src/main.py", "src/util.py", 2, 50.0]]


def test_delivery_metrics(data: Dataset) -> None:
    dep = metrics.deployments(data)
    assert dep["tag"].tolist() == ["v1.0", "v1.1", "v1.2"]
    assert dep["commits"].tolist() == [2, 5, 1]
    assert dep["fixes"].tolist() == [0, 1, 0]
    assert dep["failed"].tolist()[:2] == [True, False] and pd.isna(dep["failed"].iloc[2])
    assert dep["lead_time_h"].tolist() == [48.0, 48.0, 24.0]
    d = metrics.delivery(data).iloc[0]
    # lead times (h): v1.0 72, 24; v1.1 (lightweight tag: commit date 01-12 12:00) 96, 72, 48, 24, 0; v1.2 24
    assert d["lead_time_h_median"] == 36.0
    assert d["change_failure_rate"] == 0.5 and d["deployments"] == 3
    assert d["deploys_per_week"] == round(3 / (17 / 7), 3)


def test_test_health(data: Dataset) -> None:
    health = metrics.test_health(data).set_index("test")
    assert bool(health.loc["tests.test_x::test_b", "flaky"]) and health.loc["tests.test_x::test_b", "pass_rate"] == 0.5
    assert not health["flaky"].drop("tests.test_x::test_b").any()
    assert metrics.test_health(data)["test"].iloc[0] == "tests.test_x::test_c"  # slowest first
    runs = metrics.test_runs(data)
    assert runs["run_id"].tolist() == ["run1", "run2"] and runs["pass_rate"].round(4).tolist() == [0.6667, 1.0]


def test_workflow_runs_from_run_store(data: Dataset) -> None:
    runs = metrics.workflow_runs(data).set_index("workflow")
    assert runs.loc["code_health", ["runs", "completed", "failed"]].tolist() == [2, 1, 1]
    assert runs.loc["code_health", "success_rate"] == 0.5 and runs.loc["code_health", "last_state"] == "failed"
    assert runs.loc["nightly", "success_rate"] == 1.0
    assert set(data.workflows["worker"]) == {"B"}


# -- report, exports -------------------------------------------------------------------------------
def _norm(series: pd.Series, like: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(like):
        out = pd.to_datetime(series, utc=True) if not pd.api.types.is_datetime64_any_dtype(series) else series
        out = out.dt.tz_localize(UTC) if getattr(out.dt, "tz", None) is None else out
        return out.dt.tz_convert(UTC).astype(str).where(out.notna(), "")
    if pd.api.types.is_numeric_dtype(like) and not pd.api.types.is_bool_dtype(like):
        return pd.to_numeric(series, errors="coerce").astype("float64").round(6).astype(str)
    return series.map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))


def assert_same_values(original: pd.DataFrame, back: pd.DataFrame) -> None:
    assert list(back.columns) == list(map(str, original.columns)) and len(back) == len(original)
    for name in original.columns:
        left = _norm(original[name].reset_index(drop=True), original[name])
        right = _norm(back[str(name)].reset_index(drop=True), original[name])
        assert left.tolist() == right.tolist(), name


def test_report_exports_read_back(health: Any) -> None:
    assert set(health.tables) == {"repositories", "hotspots", "coupling", "ownership", "code_health",
                                  "test_runs", "test_health", "workflow_runs", "bus_factor_risks"}
    assert len(health.tables["hotspots"]) and len(health.tables["test_health"]) == 3
    out = Path(health.out)
    for name, frame in health.tables.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"), frame.reset_index(drop=True),
                                      check_dtype=False, check_index_type=False)
        assert_same_values(frame, pd.read_csv(out / f"{name}.csv"))
        assert_same_values(frame, pd.read_excel(out / "report.xlsx", sheet_name=sheet_names(list(health.tables))[name]))
    html = (out / "report.html").read_text()
    assert "<title>Code health</title>" in html and "Bokeh" in html and "cdn.bokeh.org" not in html
    assert "does not exist on this machine" in html  # collection notes are in the report
    risks = health.tables["bus_factor_risks"]
    assert set(risks["directory"]) >= {"src", "."} and (risks["bus_factor"] == 1).all()


def test_failing_user_tables_is_one_clear_error(cluster: tuple[Any, str], tmp_path: Path) -> None:
    bad = tmp_path / "boom.py"
    bad.write_text("TABLES = ['churn']\ndef tables(data, built):\n    return {'x': built['nope']}\n")
    with pytest.raises(InvalidInput, match=r"tables\(\) failed: KeyError: 'nope'"):
        run_report(bad, client=cluster[0], since="all", per="worker")


def test_large_path_uses_dask_dataframe(cluster: tuple[Any, str], world: dict[str, Path]) -> None:
    with dask.config.set({"caelum.bi.dask-above-fraction": 0}):
        result = run_report(REPO / "bi" / "weekly_team.py", client=cluster[0], since="all", per="worker")
    churn, activity = result.tables["churn"], result.tables["activity"]
    assert "file_changes" in activity.columns  # the map-reduce schema (docs/bi.md)
    total = sum(sum(numstat_sums(world[r])) for r in ("alpha", "beta"))
    assert int(churn["churn"].sum()) == total
    assert int(activity["file_changes"].sum()) == int(churn["revisions"].sum())


def test_engine_is_picked_by_bytes_and_both_give_the_same_tables(cluster: tuple[Any, str]) -> None:
    from caelum_dask.bi import large
    from caelum_dask.bi.collect import submit_collectors

    client = cluster[0]
    run_id, futures = submit_collectors(client, since=None, per="worker", sources_wanted=("git",))
    parts = client.gather(futures)
    # the clone on B repeats alpha's rows: the dedup keeps each commit once
    expected = large.aggregate_in_pandas(pd.concat([p["files"] for p in parts], ignore_index=True))
    small, small_plan = large.aggregate(client, futures, 0.1, run_id)  # a few KB: one pandas task
    big, big_plan = large.aggregate(client, futures, 0.0, run_id)  # any byte is above 0: map-reduce
    assert (small_plan.engine, big_plan.engine) == ("pandas", "dask")
    assert small_plan.rows == sum(len(p["files"]) for p in parts) and 0 < small_plan.bytes < small_plan.worker_memory
    assert large.plan(client, futures, None, run_id).engine == "pandas"  # null: never the map-reduce
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(small[name], frame)
        pd.testing.assert_frame_equal(big[name], frame)
    assert int(expected["churn"]["revisions"].sum()) == int(expected["activity"]["file_changes"].sum()) > 0
    # a report under the fraction builds churn in pandas with the full schema (renames followed)
    with dask.config.set({"caelum.bi.dask-above-fraction": 0.1}):
        result = run_report(REPO / "bi" / "weekly_team.py", client=client, since="all", per="worker")
    assert "authors" in result.tables["churn"].columns and "file_changes" not in result.tables["activity"].columns


# -- CLI, example, step, per-machine mode -----------------------------------------------------------
@pytest.mark.slow
def test_cli_report_json(cluster: tuple[Any, str], tmp_path: Path) -> None:
    proc = run_caelum("bi", "report", str(REPO / "bi" / "weekly_team.py"), "--since", "all", "--per", "worker",
                      "--out", str(tmp_path / "weekly"), "--json", "--scheduler", cluster[1])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["collected"]["commits"] == 11 and summary["report"] == "weekly_team"
    assert summary["tables"]["busiest_weeks"]["rows"] > 0
    # weekly_team reads git only: the unreadable test file on C is not looked at
    assert {p["kind"] for p in summary["problems"]} == {"missing-root", "no-repositories", "git-error"}
    assert "warning" in proc.stderr and "has no commits" in proc.stderr
    assert Path(summary["files"]["html"]).is_file() and Path(summary["files"]["excel"]).is_file()


@pytest.mark.slow
def test_cli_collect_and_tables(cluster: tuple[Any, str], tmp_path: Path) -> None:
    proc = run_caelum("bi", "collect", "--per", "worker", "--out", str(tmp_path / "raw"), "--json",
                      "--scheduler", cluster[1])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["collected"]["commits"] == 11
    assert sorted((c["worker"], c["repo"]) for c in summary["clones"]) == [("A", "alpha"), ("B", "alpha"), ("B", "beta")]
    assert len(pd.read_parquet(tmp_path / "raw" / "commits.parquet")) == 11
    listing = run_caelum("bi", "tables", "--json")
    assert listing.returncode == 0 and set(json.loads(listing.stdout)) == set(metrics.BUILDERS)


@pytest.mark.parametrize("args, message", [
    (["bi/nope.py"], "does not exist"),
    (["bi/weekly_team.py", "--since", "lately"], "--since 'lately' is not understood"),
])
def test_cli_bad_input(args: list[str], message: str) -> None:
    proc = run_caelum("bi", "report", *args, cwd=REPO)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("caelum: error:")


@pytest.mark.slow
def test_per_machine_mode_step_and_example(client: Any, world: dict[str, Path], tmp_path: Path) -> None:
    data = collect(client, roots=[str(world["alpha"])], since=None)
    finished = [m for _t, m in client.get_events("caelum.bi") if m["event"] == "collect-finished"]
    assert len(finished) == 1  # one machine (this host) -> one pinned collector
    assert len(data.commits) == 8
    summary = client.submit(report_step, str(REPO / "bi" / "weekly_team.py"), roots=[str(world["alpha"])],
                            since="all", out=str(tmp_path / "step"), key="caelum-bi-test-step").result()
    assert summary["collected"]["commits"] == 8 and Path(summary["files"]["html"]).is_file()
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "bi_report.py"), str(world["alpha"]),
                           str(tmp_path / "example")], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO),
                                         "CAELUM_SCHEDULER": client.scheduler.address})
    assert proc.returncode == 0, proc.stderr
    assert "commits: 8" in proc.stdout and (tmp_path / "example" / "report.html").is_file()


@pytest.mark.parametrize("text, message", [
    ("TABLES = ['activity', 'velocity']\n", "unknown table(s) velocity"),
    ("SOURCES = ['git', 'jira']\n", "unknown source(s) jira"),
    ("TABLES = [\n", "bad.py:1: SyntaxError: '[' was never closed — fix the file and run again"),
])
def test_bad_definitions(text: str, message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        load(bad)


def test_excel_sheet_names() -> None:
    names = sheet_names(["a/b:c", "x" * 40, "x" * 39 + "y", "ok"])
    assert names["a/b:c"] == "a_b_c" and names["ok"] == "ok"
    assert len(set(names.values())) == 4 and all(len(n) <= 31 for n in names.values())


def test_parse_since() -> None:
    now = 1_700_000_000
    assert parse_since("90d", now) == now - 90 * 86400
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("all") is None and parse_since(None) is None
    assert parse_since("2024-01-01") == int(pd.Timestamp("2024-01-01", tz="UTC").timestamp())
    with pytest.raises(InvalidInput):
        parse_since("soon")
    assert np.isclose(parse_since("1y", now), now - 365 * 86400)


def test_aggregation_follows_the_callers_configuration(cluster: tuple[Any, str], tmp_path: Path) -> None:
    """The aggregation task runs on a worker; the caller's caelum.bi settings travel with it."""
    definition = tmp_path / "deploys.py"
    definition.write_text('TITLE = "deploys"\nSINCE = "all"\nSOURCES = ["git"]\nTABLES = ["deployments"]\n')
    usual = run_report(definition, client=cluster[0], since="all", per="worker").tables["deployments"]
    assert usual["fixes"].tolist() == [0, 1, 0]
    with dask.config.set({"caelum.bi.fix-pattern": "^no commit subject looks like this$"}):
        mine = run_report(definition, client=cluster[0], since="all", per="worker").tables["deployments"]
    assert mine["fixes"].tolist() == [0, 0, 0]  # the workers' own (default) pattern would say [0, 1, 0]

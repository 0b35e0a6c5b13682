"""Test durations among the scheduler's learned figures (issue #18, self-sizing, item 3).

A run records each test's duration on the scheduler (``test-seconds:<project id>:<nodeid>``);
the scheduler saves its figures in the caelum home and loads them when it starts again; a
second clone of the same repository, with no ``.caelum/`` folder, plans its first run with them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import ContextManager

import pytest
from distributed import Client, LocalCluster

from caelum_dask.learned import durations_file, figure_name, load_figures
from caelum_dask.testing import TestOptions, run_tests
from caelum_dask.testing import durations
from testshard_fixtures import caelum_local_cluster, make_project

SLOW = "tests/test_timed.py::test_slow"
#: one clearly longer test among quick ones: known durations put it first in the queue
TIMED = {"tests/test_timed.py": "\n".join(
    ["import time", ""]
    + [f"def test_quick_{i}():\n    time.sleep(0.02)\n" for i in range(5)]
    + ["def test_slow():\n    time.sleep(0.5)\n"])}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=caelum", "-c", "user.email=caelum@localhost", "-c",
                    "commit.gpgsign=false", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def git_project(root: Path) -> Path:
    make_project(root, TIMED)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "tests")
    return root


def caelum_cluster() -> ContextManager[Client]:
    """A cluster with caelum's scheduler preload (its learning plugin reads this test's home;
    the scheduler saves its figures as it closes)."""
    return caelum_local_cluster()


def test_project_id_is_shared_by_clones_and_names_plain_folders_by_path(tmp_path: Path) -> None:
    project = git_project(tmp_path / "repo")
    _git(tmp_path, "clone", "-q", str(project), "clone")
    root_commit = subprocess.run(["git", "rev-list", "--max-parents=0", "HEAD"], cwd=project, check=True,
                                 capture_output=True, text=True).stdout.split()[0]
    assert durations.project_id(project) == durations.project_id(tmp_path / "clone") == root_commit
    assert durations.project_id(project / "tests") == f"{root_commit}/tests"  # a project inside the repository
    plain = make_project(tmp_path / "plain", TIMED)
    assert durations.project_id(plain) == str(plain.resolve())


def test_plain_dask_scheduler_learns_nothing_and_says_nothing(tmp_path: Path) -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        durations.record(client, "some-project", {SLOW: 0.5})
        assert durations.learned(client, "some-project") == {}
        make_project(tmp_path / "p", {".caelum/test-durations.json": json.dumps({"durations": {SLOW: 2.0}})})
        assert durations.known(tmp_path / "p", client, "some-project") == {SLOW: 2.0}


def test_durations_survive_a_scheduler_restart_and_plan_a_fresh_clone(tmp_path: Path) -> None:
    project = git_project(tmp_path / "repo")
    pid = durations.project_id(project)
    with caelum_cluster() as client:
        assert durations.learned(client, pid) == {}
        first = run_tests(project, TestOptions(shards=2, retry_failed=0), client=client)
        assert first.exit_code == 0 and first.counts["passed"] == 6
        recorded = durations.learned(client, pid)
    measured = {t["nodeid"]: t["duration"] for t in first.tests}
    assert recorded == pytest.approx(measured) and len(recorded) == 6  # one figure per test, as measured
    saved = load_figures(durations_file())
    assert saved[figure_name("test-seconds", pid, SLOW)] == pytest.approx(measured[SLOW])

    _git(tmp_path, "clone", "-q", str(project), "clone")  # another checkout: no .caelum/ folder
    clone = tmp_path / "clone"
    assert not (clone / ".caelum").exists() and durations.project_id(clone) == pid
    with caelum_cluster() as client:  # a new scheduler, the same caelum home
        known = durations.learned(client, pid)
        assert known == pytest.approx(recorded)  # loaded at start: before any test ran on it
        second = run_tests(clone, TestOptions(shards=2, retry_failed=0), client=client)
        assert second.exit_code == 0
        shards = second.platforms[0]["shards"]
        # the engine planned with the scheduler's figures, not the 1 s per unknown test
        assert sum(s["estimate"] for s in shards) == pytest.approx(sum(known.values()), abs=0.01)
        assert SLOW in {s["nodeids"][0] for s in shards if s["nodeids"]}  # longest first

        # the project's file wins where both know a test; the figures fill in the rest
        (clone / ".caelum" / "test-durations.json").write_text(json.dumps({"durations": {SLOW: 42.0}}))
        merged = durations.known(clone, client, pid)
        assert merged[SLOW] == 42.0 and set(merged) == set(known)

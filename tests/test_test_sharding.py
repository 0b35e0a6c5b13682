"""caelum test: sample projects sharded over real Dask clusters, compared with plain pytest."""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import dask.config
import pytest

import psutil

from caelum_dask import events
from caelum_dask.testing import TestOptions, run_tests
from caelum_dask.testing.result import TestRunResult
from caelum_dask.testing import durations as durations_mod
from caelum_dask.testing.collect import maxfail_of, shard_options
from caelum_dask.testing.dispatch import Dispatcher
from caelum_dask.testing.partition import imbalance, scope_of, units_of
from caelum_dask.testing.session import clean_environment
from caelum_dask.testing.snapshot import build_snapshot, ensure_unpacked
from caelum_dask.testing.steps import test_step as shard_test_step
from harness import REPO, run_caelum, wait_for
from testshard_fixtures import BASIC, BROKEN, EMPTY, EXACT, FLAKY, final_counts, make_project, plain_pytest, skewed


def _caelum_json(*args: str, **kwargs) -> tuple[subprocess.CompletedProcess[str], dict]:
    cut = args.index("--") if "--" in args else len(args)  # after "--" everything goes to pytest
    proc = run_caelum("test", *args[:cut], "--json", *args[cut:], **kwargs)
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def _outcomes(summary: TestRunResult | dict) -> dict[str, str]:
    """{nodeid: outcome} of a run_tests result or of a `caelum test --json` document."""
    result = summary if isinstance(summary, TestRunResult) else TestRunResult.from_dict(summary)
    return {t["nodeid"]: t["outcome"] for t in result.tests}


# ---------------------------------------------------------------- pure pieces (no cluster)

def test_units_keep_scopes() -> None:
    ids = ["a.py::t1", "a.py::t2", "b.py::C::t1", "b.py::C::t2", "b.py::t3", "c.py::t[x::y]"]
    assert units_of(ids, "load") == [[i] for i in ids]
    assert units_of(ids, "loadfile") == [ids[:2], ids[2:5], ids[5:]]
    assert units_of(ids, "loadscope") == [ids[:2], ids[2:4], ids[4:5], ids[5:]]
    assert scope_of("c.py::t[x::y]", "loadfile") == "c.py"
    assert imbalance([2.0, 2.0]) == 1.0 and imbalance([3.0, 1.0]) == 1.5


def _drain(dispatcher: Dispatcher) -> dict[str, list[int]]:
    """Play the sessions: each finishes its queue in order, the plan refills them."""
    ran: dict[str, list[int]] = {name: [] for name in dispatcher.sessions}
    for _ in range(1000):
        for order in dispatcher.plan():
            assert order.op == "run"
        busy = [s for s in dispatcher.sessions.values() if s.queued]
        if not busy:
            break
        for slot in busy:  # one test each, round robin
            index = slot.queued[0].ids[0]
            dispatcher.started(slot.name, index)
            dispatcher.finished_test(slot.name, index)
            ran[slot.name].append(index)
    assert dispatcher.complete()
    return ran


def test_dispatcher_hands_out_longest_first_in_shrinking_chunks() -> None:
    ids = [f"t.py::test_{i}" for i in range(40)]
    estimates = {n: (10.0 if i in (5, 30) else 1.0) for i, n in enumerate(ids)}
    dispatcher = Dispatcher(ids, estimates, "load", ordered_by_duration=True)
    dispatcher.expected = 2
    dispatcher.add_session("a", "m1")
    dispatcher.add_session("b", "m2")
    first = dispatcher.plan()
    assert [o.session for o in first] == ["a", "b"]
    assert {first[0].ids[0], first[1].ids[0]} == {5, 30}  # the two long tests start at once, apart
    sizes = [len(o.ids) for o in first]
    ran = _drain(dispatcher)
    assert sorted(ran["a"] + ran["b"]) == list(range(40))  # every test exactly once
    assert max(sizes) > 1 and len(ran["a"]) + len(ran["b"]) == 40
    unknown = Dispatcher(ids, {n: 1.0 for n in ids}, "loadfile", ordered_by_duration=False)
    unknown.add_session("a", "m1")
    [order] = [o for o in unknown.plan() if o.op == "run"]
    assert order.ids == list(range(40)) and order.last  # one file is one unit


def test_dispatcher_steals_from_the_back_never_the_successor() -> None:
    ids = [f"t.py::test_{i}" for i in range(10)]
    dispatcher = Dispatcher(ids, {n: 1.0 for n in ids}, "load", ordered_by_duration=False)
    dispatcher.expected = 1
    dispatcher.add_session("a", "m1")
    [order] = [o for o in dispatcher.plan() if o.op == "run"]
    dispatcher.add_session("b", "m1")  # arrives late: everything is in a's hands
    while dispatcher.pending:
        dispatcher.sessions["a"].queued.extend(dispatcher._take(dispatcher.sessions["a"], 1))
    dispatcher.started("a", 0)
    steals = [o for o in dispatcher.plan() if o.op == "steal"]
    assert len(steals) == 1 and steals[0].session == "a"
    assert 0 not in steals[0].ids and 1 not in steals[0].ids  # running and its successor stay
    assert steals[0].ids == sorted(steals[0].ids) and steals[0].ids[-1] == 9  # from the back
    dispatcher.released("a", steals[0].ids[:-1])  # the last one had started meanwhile
    given = [o for o in dispatcher.plan() if o.session == "b" and o.op == "run"]
    assert given and given[0].ids == steals[0].ids[:-1]


def test_dispatcher_retries_elsewhere_and_requeues_lost_sessions() -> None:
    ids = [f"t.py::test_{i}" for i in range(4)]
    dispatcher = Dispatcher(ids, {n: 1.0 for n in ids}, "load", ordered_by_duration=False, retries=1,
                            allowed_losses=1)
    dispatcher.expected = 2
    dispatcher.add_session("a", "m1")
    dispatcher.add_session("b", "m2")
    dispatcher.plan()
    a, b = dispatcher.sessions["a"], dispatcher.sessions["b"]
    first_a = a.queued[0].ids[0]
    dispatcher.started("a", first_a)
    dispatcher.finished_test("a", first_a)
    assert dispatcher.retry(first_a, "m1") is True
    assert dispatcher.retry(first_a, "m1") is False  # one retry allowed
    for _ in range(3):  # b finishes a test per round; the retry waits for b, never goes to a
        dispatcher.plan()
        assert not any(first_a in u.ids for u in a.queued)
        if any(first_a in u.ids for u in b.queued):
            break
        dispatcher.started("b", b.queued[0].ids[0])
        dispatcher.finished_test("b", b.queued[0].ids[0])
    assert any(first_a in u.ids for u in b.queued)
    running_b = b.queued[0].ids[0]
    dispatcher.started("b", running_b)
    assert dispatcher.lost("b") == []  # first loss: the running test is re-queued, not given up
    assert running_b in [i for u in dispatcher.pending for i in u.ids]
    assert "b" not in dispatcher.sessions
    dispatcher.add_session("b2", "m2")
    dispatcher.plan()
    assert dispatcher.sessions["b2"].queued[0].ids[0] == running_b  # given back to the front
    dispatcher.started("b2", running_b)
    assert dispatcher.lost("b2") == [running_b]  # lost twice: reported, not run a third time


def test_pytest_args_split_for_sessions() -> None:
    args = ["-x", "-k", "fast", "tests/unit", "--junitxml=o.xml", "-n", "4", "--flavour", "sweet", "-q"]
    assert shard_options(args) == ["-x", "-k", "fast", "tests/unit", "--flavour", "sweet", "-q"]  # order kept
    assert maxfail_of(["-x"]) == 1 and maxfail_of(["-qx"]) == 1 and maxfail_of(["--maxfail=3"]) == 3
    assert maxfail_of(["--maxfail", "2", "-v"]) == 2 and maxfail_of(["-k", "x"]) == 0 and maxfail_of(["-kx"]) == 0


def test_durations_mean_for_unknown_and_pytest_split(tmp_path: Path) -> None:
    (tmp_path / ".test_durations").write_text(json.dumps({"t::a": 4.0, "t::b": 2.0}))
    assert durations_mod.load(tmp_path) == {"t::a": 4.0, "t::b": 2.0}
    durations_mod.save(tmp_path, {"t::a": 1.0})
    known = durations_mod.load(tmp_path)
    assert known == {"t::a": 1.0, "t::b": 2.0}  # caelum's own file wins
    assert durations_mod.estimate(["t::a", "t::new"], known) == {"t::a": 1.0, "t::new": 1.0}


def test_snapshot_is_content_addressed_and_respects_git(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"tests/test_x.py": "def test_x(): pass\n", "ignored.log": "x",
                                            ".gitignore": "*.log\n", ".venv/pyvenv.cfg": "home = /usr\n"})
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    first = build_snapshot(project)
    (project / "scratch.log").write_text("more ignored noise")
    (project / ".caelum").mkdir()
    (project / ".caelum" / "test-durations.json").write_text("{}")
    assert build_snapshot(project).digest == first.digest  # ignored and caelum state do not count
    (project / "tests" / "test_y.py").write_text("def test_y(): pass\n")  # untracked, not ignored
    second = build_snapshot(project)
    assert second.digest != first.digest and second.files == first.files + 1
    fetches = []
    target, fetched = ensure_unpacked(second.digest, lambda: fetches.append(1) or second.data, tmp_path / "cache")
    again, fetched_again = ensure_unpacked(second.digest, lambda: fetches.append(1) or second.data, tmp_path / "cache")
    assert (target / "tests" / "test_y.py").exists() and not (target / "ignored.log").exists()
    assert not (target / ".venv").exists()
    assert (fetched, fetched_again, len(fetches)) == (True, False, 1)


def test_a_new_snapshot_reuses_bytecode_of_unchanged_files(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj", {"pkg/__init__.py": "", "pkg/same.py": "VALUE = 1\n",
                                               "pkg/edited.py": "VALUE = 'old'\n"})
    cache = tmp_path / "cache"
    first = build_snapshot(project)
    old, _ = ensure_unpacked(first.digest, lambda: first.data, cache)
    subprocess.run([sys.executable, "-c", "import pkg.same, pkg.edited"], cwd=old, check=True,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    (project / "pkg" / "edited.py").write_text("VALUE = 'new'\n")  # same size would not matter
    second = build_snapshot(project)
    new, _ = ensure_unpacked(second.digest, lambda: second.data, cache)
    tag = sys.implementation.cache_tag
    same_old, same_new = old / "pkg/__pycache__" / f"same.{tag}.pyc", new / "pkg/__pycache__" / f"same.{tag}.pyc"
    assert same_new.exists() and same_new.stat().st_ino == same_old.stat().st_ino  # shared, not recompiled
    assert not (new / "pkg/__pycache__" / f"edited.{tag}.pyc").exists()  # changed: compiled afresh
    out = subprocess.run([sys.executable, "-c", "import pkg.same, pkg.edited; print(pkg.same.VALUE, pkg.edited.VALUE)"],
                         cwd=new, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""}).stdout
    assert out.split() == ["1", "new"]


def test_environment_drops_dask_injected_values_only() -> None:
    base = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "8", "PYTHONHASHSEED": "6640", "HOME": "/h",
            "PYTEST_CURRENT_TEST": "x (call)"}
    env, removed = clean_environment(base, {"EXTRA": "1"})
    assert env == {"MKL_NUM_THREADS": "8", "HOME": "/h", "EXTRA": "1"}  # the user's own 8 stays
    assert removed == ["OMP_NUM_THREADS", "PYTEST_CURRENT_TEST", "PYTHONHASHSEED"]


# ---------------------------------------------------------------- real clusters

def _project_processes(run_id: str) -> list[psutil.Process]:
    """The run's processes still alive once its sessions had time to finish exiting."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CAELUM_TEST_RUN") == run_id:
                found.append(proc)
        except psutil.Error:
            continue
    return psutil.wait_procs(found, timeout=40)[1]


def test_counts_equal_plain_pytest_field_by_field(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "exact", EXACT)
    plain = plain_pytest(project, "-q")
    expected = final_counts(plain.stdout)
    assert expected == {"failed": 4, "passed": 15, "skipped": 5, "xfailed": 1, "xpassed": 1, "error": 3}, plain.stdout
    junit = tmp_path / "out" / "junit.xml"
    args = [str(project), "--scheduler", shard_cluster.scheduler.address, "--retry-failed", "0"]
    proc, summary = _caelum_json(*args, "--junit", str(junit))
    assert proc.returncode == plain.returncode == summary["exit_code"] == 1, proc.stderr
    got = {k: v for k, v in summary["counts"].items() if v and k in expected}
    assert got == expected  # passed, failed, errors, skipped (collection-time too), xfailed, xpassed
    assert not _project_processes(summary["run_id"])
    assert len(summary["platforms"][0]["shards"]) == 2
    assert "OMP_NUM_THREADS" in summary["platforms"][0]["env_removed"]  # the nanny set it; tests never saw it
    cases = {p.get("value"): case for case in ET.parse(junit).getroot().iter("testcase")
             for p in case.iter("property") if p.get("name") == "caelum_nodeid"}
    assert len(cases) == summary["counts"]["total"] == 26
    assert "assert 1 == 2" in cases["tests/test_outcomes.py::test_fail"].find("failure").text

    text = run_caelum("test", *args)  # the final line, word for word as pytest's
    assert text.returncode == 1
    assert final_counts(text.stdout) == expected, text.stdout
    assert "FAILED tests/test_outcomes.py::test_fail - " in text.stdout and "= FAILURES =" in text.stdout
    selected = plain_pytest(project, "-q", "-k", "not many")
    proc, summary = _caelum_json(*args, "--", "-k", "not many")
    assert {k: v for k, v in summary["counts"].items() if v and k != "total"} == final_counts(selected.stdout)
    assert summary["counts"]["deselected"] == 12


def test_recorded_durations_order_the_next_run(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "skewed", skewed())
    slow = {"tests/test_skewed.py::test_slow_a", "tests/test_skewed.py::test_slow_b"}
    first = run_tests(project, TestOptions(shards=2), client=shard_cluster)
    assert first.exit_code == 0 and first.durations_file
    recorded = json.loads((project / ".caelum" / "test-durations.json").read_text())["durations"]
    assert all(recorded[n] >= 0.5 for n in slow)
    second = run_tests(project, TestOptions(shards=2), client=shard_cluster)
    sessions = second.platforms[0]["shards"]
    assert sorted(s["nodeids"][0] for s in sessions) == sorted(slow)  # longest first, one per session
    got = _outcomes(second)
    assert set(got.values()) == {"passed"} and len(got) == 8


def test_sessions_freeze_what_collection_made_unless_configured_off(shard_cluster, tmp_path: Path) -> None:
    """gc.freeze() after collection (caelum.testing.freeze-collected), as the caller configures it."""
    project = make_project(tmp_path / "gcfreeze", {"tests/test_gc.py": """
        import gc

        def test_frozen():
            assert gc.get_freeze_count() > 0

        def test_thawed():
            assert gc.get_freeze_count() == 0
    """})
    frozen = _outcomes(run_tests(project, TestOptions(shards=2), client=shard_cluster))
    assert frozen == {"tests/test_gc.py::test_frozen": "passed", "tests/test_gc.py::test_thawed": "failed"}
    with dask.config.set({"caelum.testing.freeze-collected": False}):
        thawed = _outcomes(run_tests(project, TestOptions(shards=2, retry_failed=0), client=shard_cluster))
    assert thawed == {"tests/test_gc.py::test_frozen": "failed", "tests/test_gc.py::test_thawed": "passed"}


def test_module_fixture_runs_once_per_module_with_loadscope(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "fixture", {k: v for k, v in BASIC.items() if "module" in k})
    log = tmp_path / "fixture.log"
    summary = run_tests(project, TestOptions(dist="loadscope", env={"FIXTURE_LOG": str(log)}),
                        client=shard_cluster)
    assert summary.exit_code == 0 and summary.counts["passed"] == 3
    assert sorted(len(s["nodeids"]) for s in summary.platforms[0]["shards"]) == [0, 3]  # one scope, one session
    assert log.read_text().splitlines() == ["setup"]
    log.unlink()
    plain = run_tests(project, TestOptions(dist="load", env={"FIXTURE_LOG": str(log)}), client=shard_cluster)
    assert plain.exit_code == 0 and 1 <= len(log.read_text().splitlines()) <= 2  # at most once per session


HELPERS = {
    "tests/test_helpers.py": '''
        import os
        import subprocess
        import sys
        import time
        from pathlib import Path

        def _helper(name):
            # what server fixtures do: a helper in its own session, outside the process group
            proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                    start_new_session=True)
            Path(os.environ["HELPER_PIDS"], name).write_text(str(proc.pid))

        def test_before():
            pass

        def test_crash_leaving_an_orphan():
            _helper("orphan")
            os._exit(3)

        def test_after_crash():
            pass

        def test_hang_with_a_helper():
            _helper("hung")
            time.sleep(3600)

        def test_after_hang():
            pass
    ''',
}


def test_crash_and_hang_lose_no_tests_and_leave_no_process(shard_cluster, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    project = make_project(tmp_path / "crashy", HELPERS)
    junit = tmp_path / "crashy.xml"
    summary = run_tests(project, TestOptions(shards=1, timeout=4, retry_failed=0, junit=str(junit),
                                             env={"HELPER_PIDS": str(pids)}), client=shard_cluster)
    tests = {t["nodeid"].split("::")[1]: t for t in summary.platforms[0]["tests"]}
    assert {k: t["outcome"] for k, t in tests.items()} == {
        "test_before": "passed", "test_crash_leaving_an_orphan": "error", "test_after_crash": "passed",
        "test_hang_with_a_helper": "error", "test_after_hang": "passed"}
    assert tests["test_crash_leaving_an_orphan"]["message"].startswith(
        "crashed: the Python interpreter exited with code 3")
    assert tests["test_hang_with_a_helper"]["message"].startswith("hung: no progress for 4s")
    assert tests["test_hang_with_a_helper"]["duration"] >= 4  # it ran until the no-progress limit killed it
    assert summary.exit_code == 1 and summary.counts["error"] == 2 and summary.counts["passed"] == 3
    assert len(summary.platforms[0]["shards"][0]["runs"]) == 3  # two restarts
    cases = ET.parse(junit).getroot().find("testsuite")
    assert cases.get("tests") == "5" and cases.get("errors") == "2"
    helpers = {p.name: int(p.read_text()) for p in pids.iterdir()}
    assert set(helpers) == {"orphan", "hung"}
    for name, pid in helpers.items():  # the orphan was re-parented to init, the other left the group
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
    assert not _project_processes(summary.run_id)


@pytest.mark.slow
def test_flaky_test_passes_on_rerun(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "flaky", FLAKY)
    state = tmp_path / "flaky-state"
    summary = run_tests(project, TestOptions(shards=2, env={"FLAKY_STATE": str(state)}), client=shard_cluster)
    test = next(t for t in summary.platforms[0]["tests"] if t["nodeid"].endswith("test_flaky"))
    assert test["outcome"] == "flaky" and summary.exit_code == 0
    assert "first attempt fails" in test["flaky_failures"][0]["message"]
    state.unlink()
    strict = run_tests(project, TestOptions(shards=2, env={"FLAKY_STATE": str(state)}, flaky_fails=True),
                       client=shard_cluster)
    assert strict.exit_code == 1 and strict.counts["flaky"] == 1
    state.unlink()
    no_retry = run_tests(project, TestOptions(shards=2, retry_failed=0, env={"FLAKY_STATE": str(state)}),
                         client=shard_cluster)
    assert no_retry.counts["failed"] == 1 and no_retry.exit_code == 1


def test_collection_errors_and_empty_suites(shard_cluster, tmp_path: Path) -> None:
    address = shard_cluster.scheduler.address
    broken = make_project(tmp_path / "broken", {**BROKEN, **{k: v for k, v in EXACT.items() if "optional" in k}})
    plain = plain_pytest(broken, "-q")
    proc = run_caelum("test", str(broken), "--scheduler", address)
    assert proc.returncode == plain.returncode == 2
    assert "ERROR collecting tests/test_broken.py" in proc.stdout
    assert "ModuleNotFoundError: No module named 'module_that_does_not_exist'" in proc.stdout
    assert "Interrupted" in proc.stdout
    assert final_counts(proc.stdout) == final_counts(plain.stdout) == {"skipped": 1, "error": 1}
    assert not (broken / ".caelum" / "test-durations.json").exists()
    plain = plain_pytest(broken, "-q", "--continue-on-collection-errors")
    proc, summary = _caelum_json(str(broken), "--scheduler", address, "--", "--continue-on-collection-errors")
    assert proc.returncode == plain.returncode == 1
    assert {k: v for k, v in summary["counts"].items() if v and k != "total"} == final_counts(plain.stdout)
    empty = make_project(tmp_path / "empty", EMPTY)
    proc, summary = _caelum_json(str(empty), "--scheduler", address)
    assert proc.returncode == 5 == summary["exit_code"] and summary["counts"]["total"] == 0


def test_platforms_events_and_workflow_step(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "plat", {"tests/test_p.py": "def test_p():\n    pass\n"})
    summary = run_tests(project, TestOptions(platforms="all"), client=shard_cluster)
    assert [p["platform"] for p in summary.platforms] == [platform.system().lower()]
    assert summary.platforms[0]["counts"]["passed"] == 1
    topics = shard_cluster.get_events(events.TESTS)
    kinds = [(m["event"], m.get("run_id")) for _, m in topics]
    assert ("run-started", summary.run_id) in kinds and ("run-finished", summary.run_id) in kinds
    shard_done = [m for _, m in topics if m["event"] == "shard-finished" and m["run_id"] == summary.run_id]
    assert shard_done and shard_done[0]["passed"] == 1 and shard_done[0]["machine"]
    # the workflow step, run as a Dask task itself (it secedes while its shards run)
    step = shard_cluster.submit(shard_test_step, str(project), shards=1, pure=False).result(timeout=120)
    assert step["exit_code"] == 0 and step["counts"]["passed"] == 1 and step["failed"] == []


def test_cli_bad_input(shard_cluster, tmp_path: Path) -> None:
    address = shard_cluster.scheduler.address
    project = make_project(tmp_path / "ok", {"tests/test_p.py": "def test_p():\n    pass\n"})
    cases = [
        (["test", str(tmp_path / "nope")], "no such project folder"),
        (["test", str(project), "--shards", "0"], "--shards must be"),
        (["test", str(project), "--shards", "many"], "--shards must be"),
        (["test", str(project), "--env", "NOEQUALS"], "expected KEY=VALUE"),
        (["test", str(project), "--scheduler", address, "--junit", "/proc/nope/junit.xml"], "--junit /proc/nope"),
        (["test", str(project), "--scheduler", address, "--platforms", "plan9"], "no machine runs plan9"),
        (["test", str(project), "--scheduler", address, "--python", "/no/such/python"], "--python: cannot run"),
        (["test", str(project), "--scheduler", "tcp://127.0.0.1:1"], "cannot reach the scheduler"),
    ]
    for args, needle in cases:
        proc = run_caelum(*args, env={"DASK_CAELUM__CONNECT_TIMEOUT": "2"})
        assert proc.returncode not in (0, None), args
        assert needle in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
    dist = run_caelum("test", str(project), "--dist", "random")
    assert dist.returncode == 2 and "Invalid value for '--dist'" in dist.stderr


def test_example_runs(shard_cluster, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "shard_tests.py"), "--scheduler",
                           shard_cluster.scheduler.address], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["counts"]["failed"] == 1 and first["counts"]["passed"] == 2 and first["counts"]["skipped"] == 1
    assert second["counts"] == first["counts"]
    firsts = [s["tests"][0] for s in second["shards"] if s["tests"]]
    assert "tests/test_sample.py::test_slow" in firsts  # recorded as the longest: started first


def _marking_project(tmp_path: Path, count: int, pause: float, extra: str = "") -> tuple[Path, Path]:
    """A project whose tests leave ``<pid>-<parent pid>`` files in a marks folder (``MARKS``):
    which worker's session ran a test is known without asking the run."""
    marks = tmp_path / "marks"
    marks.mkdir()
    files = {"tests/test_work.py": "\n".join(
        ["import os, time", "from pathlib import Path", "",
         "def _mark():",
         "    Path(os.environ['MARKS'], f'{os.getpid()}-{os.getppid()}').write_text('')", ""]
        + [f"def test_w{i}():\n    _mark()\n    time.sleep({pause})\n{extra.format(i=i)}" for i in range(count)])}
    return make_project(tmp_path / "work", files), marks


def _marked_parents(marks: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in marks.iterdir()}


def _session_victim(marks: Path, pids: dict[str, int], timeout: float = 120) -> str:
    """The first worker (by name) whose session has started running tests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        victim = next((name for name, pid in pids.items() if pid in _marked_parents(marks)), None)
        if victim is not None:
            return victim
        time.sleep(0.05)
    raise AssertionError("no session started")


@pytest.mark.slow
def test_killed_worker_gives_the_same_results(process_cluster, tmp_path: Path) -> None:
    """kill -9 a worker while its session runs: its tests go to the other; every test once."""
    project, marks = _marking_project(tmp_path, 12, 0.3, "    assert {i} != 5\n")
    process_cluster.env = {"MARKS": str(marks)}
    process_cluster.start_scheduler()
    process_cluster.start_worker("a")
    process_cluster.start_worker("b")
    process_cluster.wait_for_workers(2).close()
    args = ["test", str(project), "--scheduler", process_cluster.address, "--json", "--retry-failed", "0",
            "--no-record"]
    clean = run_caelum(*args, timeout=180)
    assert clean.returncode == 1, clean.stderr
    for path in marks.iterdir():
        path.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = _session_victim(marks, {name: w.pid for name, w in process_cluster.workers.items()})
    process_cluster.kill_worker(victim)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    killed = json.loads(out)
    assert _outcomes(killed) == _outcomes(json.loads(clean.stdout))  # every test reported, once
    assert killed["counts"]["passed"] == 11 and killed["counts"]["failed"] == 1 and killed["counts"]["total"] == 12
    assert killed["platforms"][0]["lost_shards"] == 1
    survivor = next(iter(process_cluster.workers.values()))
    assert survivor.poll() is None
    assert not _project_processes(killed["run_id"])


@pytest.mark.slow
def test_session_moved_off_a_killed_worker_gets_its_work(process_cluster, tmp_path: Path) -> None:
    """kill -9 a session's worker while a third worker is idle: the session starts again there
    and runs tests. (Its old attempt's ``Queue.get`` stays pending on the scheduler and takes
    the next message of its queue, so the new attempt needs a queue of its own: before, its
    first chunk was swallowed and the run waited forever.)"""
    project, marks = _marking_project(tmp_path, 24, 0.5)
    process_cluster.env = {"MARKS": str(marks)}
    process_cluster.start_scheduler()
    for name in ("a", "b", "c"):
        process_cluster.start_worker(name)
    process_cluster.wait_for_workers(3).close()
    pids = {name: w.pid for name, w in process_cluster.workers.items()}
    proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", "test", str(project), "--scheduler",
                             process_cluster.address, "--shards", "2", "--json", "--no-record"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _session_victim(marks, pids)
    process_cluster.kill_worker(victim)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["counts"]["passed"] == summary["counts"]["total"] == 24  # every test once
    ran_on = {name for name, pid in pids.items() if pid in _marked_parents(marks)}
    assert ran_on - {victim} == set(pids) - {victim}, (victim, ran_on, summary["platforms"][0]["shards"])
    assert not _project_processes(summary["run_id"])


@pytest.mark.slow
def test_two_machines_share_one_queue_and_retry_elsewhere(process_cluster, tmp_path: Path) -> None:
    """`caelum scheduler` and two `caelum worker`s on 127.0.0.1 and 127.0.0.2 (two machines to the
    registry) take from one queue; the flaky test's re-run goes to the other machine."""
    state = tmp_path / "flaky-state"
    files = {"tests/test_shared.py": "\n".join(
        ["import time", ""] + [f"def test_s{i}():\n    time.sleep(0.05)\n" for i in range(30)]),
        **FLAKY}
    project = make_project(tmp_path / "shared", files)
    sched = process_cluster._spawn("scheduler", [sys.executable, "-m", "caelum_dask", "scheduler", "--host",
                                                 "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"])
    found = wait_for(lambda: re.search(r"Scheduler at:\s+(tcp://\S+)", process_cluster.log("scheduler"))
                     or (sched.poll() is not None and pytest.fail(process_cluster.log("scheduler"))))
    process_cluster.address = found.group(1)
    for name, host in (("one", "127.0.0.1"), ("two", "127.0.0.2")):  # `caelum worker`, two machines
        process_cluster._spawn(f"worker-{name}", [sys.executable, "-m", "caelum_dask", "worker",
                                                  process_cluster.address, "--nthreads", "1", "--host", host,
                                                  "--dashboard-address", "127.0.0.1:0"])
    process_cluster.wait_for_workers(2).close()
    proc, summary = _caelum_json(str(project), "--scheduler", process_cluster.address, "--env",
                                 f"FLAKY_STATE={state}")
    assert proc.returncode == 0, proc.stderr
    sessions = summary["platforms"][0]["shards"]
    assert len({s["machine"] for s in sessions}) == 2 and all(s["tests"] for s in sessions)
    assert sum(s["tests"] for s in sessions) == 32 + 1  # every test once, plus the flaky one's re-run
    flaky = next(t for t in summary["platforms"][0]["tests"] if t["nodeid"].endswith("test_flaky"))
    assert flaky["outcome"] == "flaky" and flaky["machine"] != flaky["flaky_failures"][0]["machine"]


def test_exitfirst_stops_the_whole_run(shard_cluster, tmp_path: Path) -> None:
    files = {"tests/test_stop.py": "\n".join(
        ["import time", "", "def test_fails_first():\n    assert 0\n"]
        + [f"def test_later_{i}():\n    time.sleep(0.1)\n" for i in range(40)])}
    project = make_project(tmp_path / "stop", files)
    summary = run_tests(project, TestOptions(retry_failed=1, pytest_args=["-x", "-k", "not later_39"]),
                        client=shard_cluster)
    counts = summary.counts
    assert counts["failed"] == 1 and counts["deselected"] == 1 and counts["flaky"] == 0  # no retries after -x
    assert counts["notrun"] > 20  # both sessions stopped, not only the one that failed
    assert counts["passed"] + counts["failed"] + counts["notrun"] == counts["total"] == 40
    assert summary.stopped and summary.exit_code == 1
    assert all(len(s["nodeids"]) < 20 for s in summary.platforms[0]["shards"])


@pytest.mark.slow
def test_shard_that_keeps_killing_its_worker_is_reported_not_lost(tmp_path: Path) -> None:
    """A shard Dask gives up on (KilledWorker) comes back as errors naming why; exit code 2."""
    import dask.config
    from distributed import Client, LocalCluster

    from caelum_dask.cluster import embedded_cluster_kwargs

    project = make_project(tmp_path / "killer", {"tests/test_killer.py": (
        "import os, signal\n\ndef test_kills_its_worker():\n    os.kill(os.getppid(), signal.SIGKILL)\n")})
    kwargs = embedded_cluster_kwargs()
    kwargs.update(n_workers=1, threads_per_worker=1)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False}):
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            summary = run_tests(project, TestOptions(shards=1, retry_failed=0), client=client)
    [test] = summary.platforms[0]["tests"]
    assert test["outcome"] == "error" and "lost: KilledWorker" in test["message"], test
    assert summary.exit_code == 2 and summary.platforms[0]["lost_shards"] == 1


def test_interrupted_run_leaves_no_process(shard_cluster, tmp_path: Path) -> None:
    """Ctrl-C (and SIGTERM) on `caelum test` ends every session and what its tests started."""
    pids = tmp_path / "pids"
    pids.mkdir()
    project = make_project(tmp_path / "stuck", HELPERS)
    for signum in (signal.SIGINT, signal.SIGTERM):
        for path in pids.iterdir():
            path.unlink()
        proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", "test", str(project), "--scheduler",
                                 shard_cluster.scheduler.address, "--env", f"HELPER_PIDS={pids}", "--", "-k", "hang"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 120
        while not (pids / "hung").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (pids / "hung").exists(), proc.stderr
        helper = int((pids / "hung").read_text())
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and "interrupted" in err, err
        gone = psutil.wait_procs([psutil.Process(helper)] if psutil.pid_exists(helper) else [], timeout=10)[1]
        assert not gone, f"helper {helper} survived {signum}"
        assert not [p for p in psutil.process_iter() if _env_of(p).get("HELPER_PIDS") == str(pids)]


def _env_of(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except psutil.Error:
        return {}


def test_a_workflow_step_running_tests_reports_their_progress(shard_cluster, tmp_path: Path) -> None:
    """The workflow's own progress says how far the step's test run is (sub-job progress)."""
    from caelum_dask.progress import ProgressEvent
    from caelum_dask.testing.steps import test_step
    from caelum_dask.workflow import Workflow, run, task

    project = make_project(tmp_path / "sub", {f"tests/test_{i}.py": f"def test_{i}():\n    pass\n" for i in range(3)})
    with Workflow("with-tests") as wf:
        task(test_step, name="suite", cache=False)(str(project), shards=1)
    seen: list[ProgressEvent] = []
    result = run(wf, client=shard_cluster, progress=seen.append)
    assert result.ok and result["suite"]["counts"]["passed"] == 3
    lines = [e.message for e in seen if e.message and e.message.startswith("suite: ")]
    assert lines and lines[-1].startswith("suite: 3/3 tests, 0 failed"), [e.message for e in seen]

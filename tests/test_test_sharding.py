"""caelum test: sample projects sharded over real Dask clusters, compared with plain pytest."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from caelum_dask import events
from caelum_dask.testing import TestOptions, run_tests
from caelum_dask.testing import durations as durations_mod
from caelum_dask.testing.collect import shard_options, split_pytest_args
from caelum_dask.testing.partition import auto_shard_count, imbalance, partition, scope_of
from caelum_dask.testing.session import clean_environment
from caelum_dask.testing.snapshot import build_snapshot, ensure_unpacked
from caelum_dask.testing.steps import test_step as shard_test_step
from conftest import REPO, run_caelum
from testshard_fixtures import (BASIC, BROKEN, CRASHY, EMPTY, FLAKY, make_project, plain_pytest_outcomes,
                                      shard_cluster, skewed)

__all__ = ["shard_cluster"]


def _caelum_json(*args: str, **kwargs) -> tuple[subprocess.CompletedProcess[str], dict]:
    proc = run_caelum("test", *args, "--json", **kwargs)
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def _outcomes(summary: dict) -> dict[str, str]:
    return {t["nodeid"]: t["outcome"] for p in summary["platforms"] for t in p["tests"]}


# ---------------------------------------------------------------- pure pieces (no cluster)

def test_partition_lpt_keeps_scopes_and_balances() -> None:
    ids = ["a.py::t1", "a.py::t2", "b.py::C::t1", "b.py::C::t2", "b.py::t3", "c.py::t[x::y]"]
    est = {"a.py::t1": 5, "a.py::t2": 1, "b.py::C::t1": 2, "b.py::C::t2": 2, "b.py::t3": 3, "c.py::t[x::y]": 3}
    shards = partition(ids, est, 2, "load")
    assert sorted(sum((s.nodeids for s in shards), [])) == sorted(ids)
    assert [round(s.estimate) for s in shards] == [8, 8]
    by_file = partition(ids, est, 3, "loadfile")
    for shard in by_file:
        assert len({scope_of(n, "loadfile") for n in shard.nodeids}) == 1
    assert scope_of("c.py::t[x::y]", "loadfile") == "c.py"
    assert scope_of("b.py::C::t1", "loadscope") == "b.py::C"
    assert scope_of("b.py::t3", "loadscope") == "b.py"
    assert imbalance([2.0, 2.0]) == 1.0 and imbalance([3.0, 1.0]) == 1.5
    assert auto_shard_count(n_units=100, slots=4, total_estimate=400, known_fraction=1.0) == 4
    assert auto_shard_count(n_units=100, slots=4, total_estimate=400, known_fraction=0.0) == 8
    assert auto_shard_count(n_units=3, slots=4, total_estimate=1, known_fraction=0.0) == 3


def test_pytest_args_split_for_shards() -> None:
    options, selection = split_pytest_args(["-x", "-k", "fast", "tests/unit", "--junitxml=o.xml", "-n", "4", "-q"])
    assert selection == ["tests/unit"]
    assert shard_options(options) == ["-x", "-k", "fast", "-q"]


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


def test_environment_drops_dask_injected_values_only() -> None:
    base = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "8", "PYTHONHASHSEED": "6640", "HOME": "/h",
            "PYTEST_CURRENT_TEST": "x (call)"}
    env, removed = clean_environment(base, {"EXTRA": "1"})
    assert env == {"MKL_NUM_THREADS": "8", "HOME": "/h", "EXTRA": "1"}  # the user's own 8 stays
    assert removed == ["OMP_NUM_THREADS", "PYTEST_CURRENT_TEST", "PYTHONHASHSEED"]


# ---------------------------------------------------------------- real clusters

def test_results_equal_plain_pytest_and_junit_complete(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "basic", BASIC)
    plain_rc, plain = plain_pytest_outcomes(project)
    assert plain_rc == 1 and len(plain) == 14, plain
    junit = tmp_path / "out" / "junit.xml"
    proc, summary = _caelum_json(str(project), "--scheduler", shard_cluster.scheduler.address, "--shards", "3",
                                 "--junit", str(junit), "--retry-failed", "0")
    assert proc.returncode == 1 == summary["exit_code"], proc.stderr
    assert _outcomes(summary) == plain
    assert summary["counts"]["failed"] == 2 and summary["counts"]["error"] == 1
    assert len(summary["platforms"][0]["shards"]) == 3
    assert "OMP_NUM_THREADS" in summary["platforms"][0]["env_removed"]  # the nanny set it; tests never saw it

    root = ET.parse(junit).getroot()  # valid XML
    suite = root.find("testsuite")
    cases = {p.get("value"): case for case in suite.iter("testcase") for p in case.iter("property")
             if p.get("name") == "caelum_nodeid"}
    assert set(cases) == set(plain)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("14", "2", "1", "2")
    assert cases["tests/test_basic.py::test_fail"].find("failure") is not None
    assert "assert [1, 2] == [1, 3]" in cases["tests/test_basic.py::test_fail"].find("failure").text

    recorded = json.loads((project / ".caelum" / "test-durations.json").read_text())["durations"]
    assert set(recorded) >= set(plain) - {"tests/test_basic.py::TestGroup::test_method_error"}
    assert recorded["tests/test_basic.py::test_slow"] >= 0.35

    text = run_caelum("test", str(project), "--scheduler", shard_cluster.scheduler.address, "--retry-failed", "0")
    assert text.returncode == 1
    assert "FAILED tests/test_basic.py::test_fail - " in text.stdout and "= FAILURES =" in text.stdout
    assert "2 failed, 9 passed, 1 skipped, 1 xfailed, 1 error in" in text.stdout
    assert "slowest" in text.stdout and "shards" in text.stdout


def test_recorded_durations_balance_the_next_run(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "skewed", skewed())
    slow = {"tests/test_skewed.py::test_slow_a", "tests/test_skewed.py::test_slow_b"}
    first = run_tests(project, TestOptions(shards=2), client=shard_cluster)
    assert first["exit_code"] == 0 and first["durations_file"]
    first_shards = [set(s["nodeids"]) for s in first["platforms"][0]["shards"]]
    assert any(slow <= s for s in first_shards)  # nothing known yet: both slow tests share a shard
    second = run_tests(project, TestOptions(shards=2), client=shard_cluster)
    shards = second["platforms"][0]["shards"]
    assert [len(slow & set(s["nodeids"])) for s in shards] == [1, 1]
    assert imbalance([s["estimate"] for s in shards]) < 1.1
    got = _outcomes(second)
    assert set(got.values()) == {"passed"} and len(got) == 8


def test_module_fixture_runs_once_per_module_with_loadscope(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "fixture", {k: v for k, v in BASIC.items() if "module" in k})
    log = tmp_path / "fixture.log"
    summary = run_tests(project, TestOptions(shards=3, dist="loadscope", env={"FIXTURE_LOG": str(log)}),
                        client=shard_cluster)
    assert summary["exit_code"] == 0 and summary["counts"]["passed"] == 3
    assert len(summary["platforms"][0]["shards"]) == 1  # one scope: one shard
    assert log.read_text().splitlines() == ["setup"]


def test_crash_and_hang_lose_no_tests(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "crashy", CRASHY)
    junit = tmp_path / "crashy.xml"
    summary = run_tests(project, TestOptions(shards=1, timeout=4, retry_failed=0, junit=str(junit)),
                        client=shard_cluster)
    tests = {t["nodeid"].split("::")[1]: t for t in summary["platforms"][0]["tests"]}
    assert {k: t["outcome"] for k, t in tests.items()} == {
        "test_before": "passed", "test_crash": "error", "test_after_crash": "passed", "test_hang": "error",
        "test_after_hang": "passed"}
    assert tests["test_crash"]["message"].startswith("crashed: the Python interpreter exited with code 3")
    assert tests["test_hang"]["message"].startswith("hung: no progress for 4s")
    assert tests["test_hang"]["duration"] >= 4  # it ran until the no-progress limit killed it
    assert summary["exit_code"] == 1
    assert len(summary["platforms"][0]["shards"][0]["runs"]) == 3  # two restarts
    cases = ET.parse(junit).getroot().find("testsuite")
    assert cases.get("tests") == "5" and cases.get("errors") == "2"
    assert {c.get("name") for c in cases.iter("testcase")} == set(tests)


@pytest.mark.slow
def test_flaky_test_passes_on_rerun(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "flaky", FLAKY)
    state = tmp_path / "flaky-state"
    summary = run_tests(project, TestOptions(shards=2, env={"FLAKY_STATE": str(state)}), client=shard_cluster)
    test = next(t for t in summary["platforms"][0]["tests"] if t["nodeid"].endswith("test_flaky"))
    assert test["outcome"] == "flaky" and summary["exit_code"] == 0
    assert "first attempt fails" in test["flaky_failures"][0]["message"]
    state.unlink()
    strict = run_tests(project, TestOptions(shards=2, env={"FLAKY_STATE": str(state)}, flaky_fails=True),
                       client=shard_cluster)
    assert strict["exit_code"] == 1 and strict["counts"]["flaky"] == 1
    state.unlink()
    no_retry = run_tests(project, TestOptions(shards=2, retry_failed=0, env={"FLAKY_STATE": str(state)}),
                         client=shard_cluster)
    assert no_retry["counts"]["failed"] == 1 and no_retry["exit_code"] == 1


def test_collection_errors_and_empty_suites(shard_cluster, tmp_path: Path) -> None:
    address = shard_cluster.scheduler.address
    broken = make_project(tmp_path / "broken", BROKEN)
    proc = run_caelum("test", str(broken), "--scheduler", address)
    assert proc.returncode == 2
    assert "ERROR collecting tests/test_broken.py" in proc.stdout
    assert "ModuleNotFoundError: No module named 'module_that_does_not_exist'" in proc.stdout
    assert "Interrupted" in proc.stdout
    assert not (broken / ".caelum" / "test-durations.json").exists()
    empty = make_project(tmp_path / "empty", EMPTY)
    proc, summary = _caelum_json(str(empty), "--scheduler", address)
    assert proc.returncode == 5 == summary["exit_code"] and summary["counts"]["total"] == 0


def test_platforms_events_and_workflow_step(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "plat", {"tests/test_p.py": "def test_p():\n    pass\n"})
    summary = run_tests(project, TestOptions(platforms="all"), client=shard_cluster)
    assert [p["platform"] for p in summary["platforms"]] == [platform.system().lower()]
    assert summary["platforms"][0]["counts"]["passed"] == 1
    topics = shard_cluster.get_events(events.TESTS)
    kinds = [(m["event"], m.get("run_id")) for _, m in topics]
    assert ("run-started", summary["run_id"]) in kinds and ("run-finished", summary["run_id"]) in kinds
    shard_done = [m for _, m in topics if m["event"] == "shard-finished" and m["run_id"] == summary["run_id"]]
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
    slow_shard = next(s for s in second["shards"] if any("test_slow" in t for t in s["tests"]))
    assert slow_shard["tests"] == ["tests/test_sample.py::test_slow"]  # alone, thanks to recorded durations


@pytest.mark.slow
def test_killed_worker_gives_the_same_results(process_cluster, tmp_path: Path) -> None:
    """kill -9 a worker while its shard runs: Dask re-runs the shard; results equal a clean run."""
    marks = tmp_path / "marks"
    marks.mkdir()
    files = {"tests/test_work.py": "\n".join(
        ["import os, time", "from pathlib import Path", "",
         "def _mark():",
         "    Path(os.environ['MARKS'], f'{os.getpid()}-{os.getppid()}').write_text('')", ""]
        + [f"def test_w{i}():\n    _mark()\n    time.sleep(0.3)\n    assert {i} != 5\n" for i in range(8)])}
    project = make_project(tmp_path / "work", files)
    process_cluster.env = {"MARKS": str(marks)}
    process_cluster.start_scheduler()
    process_cluster.start_worker("a")
    process_cluster.start_worker("b")
    process_cluster.wait_for_workers(2).close()
    args = ["test", str(project), "--scheduler", process_cluster.address, "--shards", "2", "--json",
            "--retry-failed", "0", "--no-record"]
    clean = run_caelum(*args, timeout=180)
    assert clean.returncode == 1, clean.stderr
    for path in marks.iterdir():
        path.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        parents = {int(p.name.split("-")[1]) for p in marks.iterdir()}
        victim = next((name for name, w in process_cluster.workers.items() if w.pid in parents), None)
        time.sleep(0.05)
    assert victim is not None, "no shard started"
    process_cluster.kill_worker(victim)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    killed = json.loads(out)
    assert _outcomes(killed) == _outcomes(json.loads(clean.stdout))
    survivor = next(iter(process_cluster.workers.values()))
    assert survivor.poll() is None
    assert len({s["worker"] for s in killed["platforms"][0]["shards"]}) == 1  # the victim's shard re-ran
    assert set(_outcomes(json.loads(out)).values()) == {"passed", "failed"}


def test_pytest_args_select_at_collection_and_stop_shards(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "args", {k: v for k, v in BASIC.items() if "basic" in k})
    summary = run_tests(project, TestOptions(shards=1, retry_failed=0, pytest_args=["-x", "-k", "not slow"]),
                        client=shard_cluster)
    got = _outcomes(summary)
    assert "tests/test_basic.py::test_slow" not in got and len(got) == 10  # -k applied at collection
    assert got["tests/test_basic.py::test_fail"] == "failed"
    assert got["tests/test_basic.py::test_skip"] == "notrun"  # -x stopped the shard after test_fail
    assert summary["exit_code"] == 1


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
    [test] = summary["platforms"][0]["tests"]
    assert test["outcome"] == "error" and "lost: KilledWorker" in test["message"]
    assert summary["exit_code"] == 2 and summary["platforms"][0]["lost_shards"] == 1

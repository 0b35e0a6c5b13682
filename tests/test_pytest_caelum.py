"""``pytest --caelum``: the user's own pytest command run on a real cluster, next to plain pytest.

Every run is a real ``python -m pytest`` process in a sample project; the cluster is the
in-process LocalCluster of :mod:`testshard_fixtures` (two nanny workers), or the embedded one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import psutil
import pytest

from caelum_dask.testing.pytest_caelum import session_args
from caelum_dask.testing.session import clean_environment
from testshard_fixtures import EXACT, OUTCOME_TESTS, make_project

#: outcomes of every kind, an ini file, a conftest option and a conftest ini key
PROJECT = {
    "pytest.ini": '''
        [pytest]
        testpaths = tests
        markers =
            smoke: quick checks
        addopts = -rA --strict-markers
        flavour_default = vanilla
    ''',
    "conftest.py": EXACT["tests/conftest.py"] + '''
        def pytest_addoption(parser):
            parser.addoption("--flavour", default="plain")
            parser.addini("flavour_default", "a key only this conftest knows")
    ''',
    "tests/test_outcomes.py": '''
        import pytest

        def test_pass():
            pass

        def test_fail():
            print("some output of the failing test")
            assert [1, 2] == [1, 3]

        def test_fail_then_teardown_error(broken_teardown):
            assert 0  # pytest counts this test twice: 1 failed and 1 error

        def test_teardown_error_only(broken_teardown):
            pass

''' + OUTCOME_TESTS + '''
        @pytest.mark.parametrize("n", range(6))
        def test_many(n):
            assert n != 4

        @pytest.mark.smoke
        def test_smoke():
            pass

        def test_options_reach_the_sessions(pytestconfig):
            assert pytestconfig.getoption("flavour") == "sweet"  # the command line's
            assert pytestconfig.getini("flavour_default") == "vanilla"  # the ini file's

        class TestGroup:
            def test_a(self):
                pass

            def test_b(self):
                pass
    ''',
    # modules skipped at collection, shared with the `caelum test` sample
    "tests/test_optional_dep.py": EXACT["tests/test_optional_dep.py"],
    "tests/test_skipped_module.py": EXACT["tests/test_skipped_module.py"],
    "tests/sub/test_deep.py": '''
        def test_deep_pass():
            pass

        def test_deep_fail():
            assert "deep" == "shallow"
    ''',
}

CRASHING = {
    "tests/test_crash.py": '''
        import os

        def test_before():
            pass

        def test_crash():
            os._exit(3)

        def test_after():
            pass
    ''',
}

_FINAL = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
_SUMMARY = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)")


def pytest_run(project: Path, *args: str, cwd: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS`` in the project with the user's environment (Dask's removed)."""
    full_env, _ = clean_environment(dict(os.environ), env)
    full_env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", *args], cwd=cwd or project,
                          capture_output=True, text=True, timeout=300, env=full_env)


def final_counts(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """pytest's final line (``=== 1 failed, 2 passed, 1 error in 0.1s ===``) as counts."""
    line = next((line for line in reversed(proc.stdout.splitlines()) if re.search(r" in [\d.]+s\b", line)), None)
    assert line is not None, proc.stdout + proc.stderr
    return {("error" if word == "errors" else word): int(n) for n, word in _FINAL.findall(line)}


def short_summary(proc: subprocess.CompletedProcess[str]) -> Counter[tuple[str, str]]:
    """The ``-rA`` lines (``FAILED tests/x.py::test_y - …``) as (word, node id), skips aside."""
    return Counter(m.groups() for line in proc.stdout.splitlines() if (m := _SUMMARY.match(line)))


def junit_cases(path: Path) -> Counter[tuple[str, str, tuple[str, ...]]]:
    """Each testcase of a JUnit file: class name, name and what it holds (failure, error, …)."""
    root = ET.parse(path).getroot()
    return Counter((case.get("classname", ""), case.get("name", ""),
                    tuple(sorted(child.tag for child in case if child.tag in ("failure", "error", "skipped"))))
                   for case in root.iter("testcase"))


def test_same_report_exit_code_and_junit_as_plain_pytest(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", PROJECT)
    address = shard_cluster.scheduler.address
    plain = pytest_run(project, "-q", "--flavour", "sweet", f"--junitxml={tmp_path / 'plain.xml'}")
    caelum = pytest_run(project, "-q", f"--caelum={address}", "--flavour", "sweet",
                        f"--junitxml={tmp_path / 'caelum.xml'}")
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert caelum.returncode == plain.returncode, caelum.stdout + caelum.stderr
    expected = {"failed": 5, "passed": 12, "skipped": 5, "xfailed": 1, "xpassed": 1, "error": 3}
    assert final_counts(plain) == expected
    assert final_counts(caelum) == expected
    assert short_summary(caelum) == short_summary(plain)  # -rA from the ini, node ids as pytest's
    assert "SKIPPED [1] tests/test_outcomes.py:" in caelum.stdout  # skip locations are local paths
    assert "some output of the failing test" in caelum.stdout  # captured output travels too
    assert junit_cases(tmp_path / "caelum.xml") == junit_cases(tmp_path / "plain.xml")
    assert "caelum_nodeid" not in (tmp_path / "caelum.xml").read_text()  # caelum's own property stays out
    assert "caelum" not in plain.stdout + plain.stderr  # without --caelum the plugin is silent


def test_selection_subfolder_and_exit_first(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", PROJECT)
    address = shard_cluster.scheduler.address
    selection = ("-k", "many or smoke or options", "--flavour", "sweet")
    plain = pytest_run(project, "-q", *selection)
    caelum = pytest_run(project, "-q", *selection, "--caelum", address)  # the address as a separate word
    assert final_counts(plain) == {"failed": 1, "passed": 7, "skipped": 1, "deselected": 16}
    assert final_counts(caelum) == final_counts(plain), caelum.stdout + caelum.stderr
    assert caelum.returncode == plain.returncode == 1

    # from a subfolder: pytest runs there in the snapshot; node ids stay relative to the rootdir
    sub = project / "tests" / "sub"
    plain = pytest_run(project, "-v", cwd=sub)
    caelum = pytest_run(project, "-v", f"--caelum={address}", "--caelum-sessions=2", cwd=sub)
    assert final_counts(caelum) == final_counts(plain) == {"failed": 1, "passed": 1}, caelum.stdout
    assert short_summary(caelum) == short_summary(plain)
    assert "test_deep.py::test_deep_pass PASSED" in caelum.stdout
    assert "caelum: collected 2 items" in caelum.stdout  # the controller's line (not with -q)

    # -x stops every session; pytest's own "stopping after" line and exit code
    stopped = pytest_run(project, "-q", "-x", "--flavour", "sweet", f"--caelum={address}")
    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    assert re.search(r"!+ stopping after \d+ failures !+", stopped.stdout)
    counts = final_counts(stopped)
    assert 1 <= counts.get("failed", 0) + counts.get("error", 0) and sum(counts.values()) < 27


def test_crashed_interpreter_is_a_failure_that_names_the_crash(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "crash", CRASHING)
    proc = pytest_run(project, "-q", "-rA", f"--caelum={shard_cluster.scheduler.address}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert final_counts(proc) == {"failed": 1, "passed": 2}
    assert re.search(r"^FAILED tests/test_crash.py::test_crash - caelum on .*crashed", proc.stdout, re.M)


def test_usage_errors_are_pytest_usage_errors(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"tests/test_p.py": "def test_p():\n    pass\n"})
    unreachable = pytest_run(project, "-q", "--caelum=tcp://127.0.0.1:1",
                             env={"DASK_CAELUM__CONNECT_TIMEOUT": "1"})
    assert unreachable.returncode == 4
    assert "ERROR: --caelum: cannot reach the scheduler at tcp://127.0.0.1:1" in unreachable.stderr
    bad = pytest_run(project, "-q", "--caelum", "--caelum-sessions=0")
    assert bad.returncode == 4 and "--caelum-sessions must be" in bad.stderr
    with_xdist = pytest_run(project, "-q", "--caelum", "-n", "2")
    assert with_xdist.returncode == 4 and "do not mix" in with_xdist.stderr
    # --collect-only runs nothing, so it collects here as a plain pytest does
    collect = pytest_run(project, "-q", "--caelum=tcp://127.0.0.1:1", "--collect-only")
    assert collect.returncode == 0 and "tests/test_p.py::test_p" in collect.stdout


def test_session_arguments() -> None:
    args = ["--caelum", "tcp://h:1", "-k", "a or b", "--flavour", "sweet", "tests", "-v",
            "--caelum-sessions", "3", "--caelum-dist=loadfile", "--tb", "short"]
    assert session_args(args, ["tests"]) == ["-k", "a or b", "--flavour=sweet", "tests", "-v", "--tb=short"]
    # a bare --caelum takes the next word as its value; when it is a test path it stays one
    assert session_args(["--caelum", "tests/t.py", "-x"], [], keep_value=True) == ["tests/t.py", "-x"]
    assert session_args(["--caelum=tcp://h:1", "-v", "tests"], ["tests"]) == ["-v", "tests"]


def test_plain_pytest_imports_nothing_of_dask() -> None:
    # the plugin module itself imports only pytest and the standard library
    code = ("import sys, pytest, caelum_dask.testing.pytest_caelum; "
            "print(sorted(m for m in ('dask', 'distributed', 'caelum_dask.testing.runner') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


@pytest.mark.slow
def test_embedded_cluster_without_an_address(tmp_path: Path) -> None:
    home = tmp_path / "caelum-home"
    project = make_project(tmp_path / "p", {"tests/test_p.py": "def test_a():\n    pass\n\ndef test_b():\n    pass\n"})
    env = {"DASK_CAELUM__HOME": str(home), "DASK_CAELUM__EMBEDDED__N_WORKERS": "1"}
    proc = pytest_run(project, "--caelum", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "caelum: no scheduler given; starting an embedded cluster" in proc.stdout
    assert final_counts(proc) == {"passed": 2}
    assert not _processes_with(str(home))  # the embedded cluster went with the pytest process


def _processes_with(marker: str) -> list[int]:
    """Processes of ours whose environment names ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if any(marker in value for value in proc.environ().values()):
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found

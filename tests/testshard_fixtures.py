"""Sample pytest projects and a shared cluster for the test-sharding tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dask.config
import pytest
from distributed import Client, LocalCluster

from caelum_dask.cluster import embedded_cluster_kwargs
from caelum_dask.testing.session import clean_environment

BASIC = {
    "tests/test_basic.py": '''
        import os
        import time
        import pytest

        def test_pass():
            assert True

        def test_fail():
            assert [1, 2] == [1, 3]

        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert 0

        def test_slow():
            time.sleep(0.4)

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(n):
            assert n < 3

        def test_no_dask_env():
            # Dask's nanny sets these for its workers; the user's tests must not see them
            assert os.environ.get("OMP_NUM_THREADS") is None
            assert os.environ.get("MKL_NUM_THREADS") is None
            assert "PYTEST_CURRENT_TEST" in os.environ  # pytest's own, set by the shard's pytest

        class TestGroup:
            def test_method(self):
                assert "a" in "abc"

            def test_method_error(self, missing_fixture):
                pass
    ''',
    "tests/test_module_fixture.py": '''
        import os
        import pytest

        @pytest.fixture(scope="module")
        def resource():
            log = os.environ.get("FIXTURE_LOG")
            if log:
                with open(log, "a") as handle:
                    handle.write("setup\\n")
            return {"ready": True}

        def test_one(resource):
            assert resource["ready"]

        def test_two(resource):
            assert resource["ready"]

        def test_three(resource):
            assert resource["ready"]
    ''',
}

CRASHY = {
    "tests/test_crashy.py": '''
        import os
        import time

        def test_before():
            pass

        def test_crash():
            os._exit(3)

        def test_after_crash():
            pass

        def test_hang():
            time.sleep(3600)

        def test_after_hang():
            pass
    ''',
}

FLAKY = {
    "tests/test_flaky.py": '''
        import os
        from pathlib import Path

        def test_flaky():
            marker = Path(os.environ["FLAKY_STATE"])
            if not marker.exists():
                marker.write_text("failed once")
                raise AssertionError("first attempt fails")

        def test_steady():
            pass
    ''',
}

BROKEN = {
    "tests/test_ok.py": "def test_ok():\n    pass\n",
    "tests/test_broken.py": "import module_that_does_not_exist\n\ndef test_never():\n    pass\n",
}

EMPTY = {"tests/helpers.py": "VALUE = 1\n"}

#: setup error, skips, xfail, xpass and strict xpass: shared by the samples that compare counts
OUTCOME_TESTS = '''
        def test_setup_error(missing_fixture):
            pass

        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass

        def test_skip_inside():
            pytest.skip("decided at run time")

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="fixed already")
        def test_xpass():
            pass

        @pytest.mark.xfail(strict=True, reason="strict")
        def test_xpass_strict():
            pass
'''

#: every kind of outcome pytest counts, several of them twice for one test
EXACT = {
    "tests/conftest.py": '''
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown fails")
    ''',
    "tests/test_outcomes.py": '''
        import pytest

        def test_pass():
            pass

        def test_fail():
            assert 1 == 2

        def test_fail_then_teardown_error(broken_teardown):
            assert 0  # pytest counts this test twice: 1 failed and 1 error

        def test_teardown_error_only(broken_teardown):
            pass  # 1 passed and 1 error

''' + OUTCOME_TESTS + '''
        @pytest.mark.parametrize("n", range(12))
        def test_many(n):
            assert n != 7

        class TestGroup:
            def test_a(self):
                pass

            def test_b(self):
                pass
    ''',
    "tests/test_optional_dep.py": '''
        import pytest

        pytest.importorskip("module_nobody_installs_here")

        def test_never_collected():
            pass
    ''',
    "tests/test_skipped_module.py": '''
        import pytest

        pytestmark = pytest.mark.skip(reason="whole module off")

        def test_one():
            pass

        def test_two():
            pass
    ''',
}

_FINAL = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)")


def final_counts(output: str) -> dict[str, int]:
    """pytest's final line (``=== 1 failed, 2 passed, 1 error in 0.1s ===``) as counts."""
    line = next(line for line in reversed(output.splitlines()) if re.search(r" in [\d.]+s", line))
    counts = {}
    for number, word in _FINAL.findall(line):
        word = {"errors": "error", "warning": "warnings"}.get(word, word)
        if word != "warnings":
            counts[word] = int(number)
    return counts


def plain_pytest(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Plain ``python -m pytest`` in the project, with the user's environment."""
    full_env, _ = clean_environment(dict(os.environ), env)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", ".", *args], cwd=project, capture_output=True, text=True, timeout=120,
                          env=full_env)


def skewed(n_fast: int = 6, slow: float = 0.6) -> dict[str, str]:
    """Two slow tests placed so that count-based LPT puts them in the same shard of two."""
    body = ["import time", ""]
    order = ["slow_a", "fast_0", "slow_b"] + [f"fast_{i}" for i in range(1, n_fast)]
    for name in order:
        sleep = f"time.sleep({slow})" if name.startswith("slow") else "pass"
        body += [f"def test_{name}():", f"    {sleep}", ""]
    return {"tests/test_skewed.py": "\n".join(body)}


def make_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


_VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b")
_WORDS = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "XFAIL": "xfailed",
          "XPASS": "xpassed", "ERROR": "error"}


def plain_pytest_outcomes(project: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    """Run plain ``pytest -v`` on the project: (exit code, {nodeid: outcome})."""
    # the user's environment: this process' minus what Dask's in-process nanny put into it
    full_env, _ = clean_environment(dict(os.environ), env)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", "."], cwd=project, capture_output=True, text=True, timeout=120, env=full_env)
    outcomes: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        match = _VERBOSE_LINE.match(line)
        if match:
            nodeid, word = match.groups()
            # a test that fails and then errors in teardown shows twice; an error wins
            if outcomes.get(nodeid) != "error":
                outcomes[nodeid] = _WORDS[word]
    return proc.returncode, outcomes


@contextmanager
def caelum_local_cluster(env: dict[str, str] | None = None) -> Iterator[Client]:
    """An embedded-style cluster: 2 nanny worker processes × 1 thread, caelum's preloads."""
    kwargs = embedded_cluster_kwargs()
    kwargs.update(n_workers=2, threads_per_worker=1)
    kwargs["env"] = {**kwargs.get("env", {}), "CAELUM_WORKER_SLOTS": "2", **(env or {})}
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(**kwargs)
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def shard_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One such cluster per test module, with a caelum home of its own.

    Nanny workers get Dask's OMP_NUM_THREADS=1 etc., which is what the environment tests need.
    """
    home = tmp_path_factory.mktemp("shard-cluster-home")
    with caelum_local_cluster({"DASK_CAELUM__HOME": str(home)}) as client:
        yield client

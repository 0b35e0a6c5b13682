"""Regenerate the golden tests' INPUT files from real runs (manual: ``python tests/golden/make_inputs.py``).

The golden tests (tests/test_golden.py) feed checked-in inputs to the merge, render and
exit-code code; those inputs must look like what a real run produces, so they are made by
one: a tiny project with every outcome (pass, fail, error, skip, xfail, xpass, flaky) run by
``caelum test --json`` on an embedded cluster, the same project's raw pytest JUnit files
(plain ``pytest --junitxml``, a first run and a re-run of the flaky test, as two sessions
would write them), and a project whose collection fails. Paths and hosts are replaced by
stable placeholders so a regenerated file differs only where behaviour did.
Regenerating inputs changes the expected outputs: rerun the tests with
``CAELUM_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs"

CONFTEST = '''
import os


def pytest_runtest_setup(item):
    if os.environ.get("GOLDEN_NODEID_PROPERTY"):  # what caelum's session plugin records
        item.user_properties.append(("caelum_nodeid", item.nodeid))
'''

SAMPLE = '''
import os
from pathlib import Path

import pytest


@pytest.fixture
def broken():
    raise RuntimeError("fixture setup failed")


@pytest.mark.parametrize("n", [1, 2])
def test_passes(n):
    assert n in (1, 2)


def test_fails():
    value = {"answer": 41}
    assert value["answer"] == 42, "the answer drifted"


def test_setup_error(broken):
    pass


def test_skipped():
    pytest.skip("needs a GPU")


@pytest.mark.xfail(reason="known bug #7")
def test_known_bug():
    assert 1 / 0


@pytest.mark.xfail(reason="maybe fixed")
def test_maybe_fixed():
    assert True


def test_flaky():
    marker = Path(os.environ["GOLDEN_FLAKY_DIR"]) / "failed-once"
    if not marker.exists():
        marker.write_text("x")
        raise ConnectionError("flaky backend reset the connection")
'''

BROKEN = {"tests/test_ok.py": "def test_ok():\n    assert True\n",
          "tests/test_broken.py": "import json\n\ndef test_never(:\n    pass\n"}


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _caelum_json(project: Path, home: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "caelum_dask", "test", str(project), "--json", "--no-record",
                           "--retry-failed", "1", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DASK_CAELUM__EMBEDDED__N_WORKERS": "2", "DASK_CAELUM__HOME": str(home)})
    if not proc.stdout.strip():
        raise SystemExit(f"caelum test printed no JSON:\n{proc.stderr}")
    return json.loads(proc.stdout)


def _pytest_junit(project: Path, junit: Path, env: dict[str, str], *args: str) -> str:
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                    f"--junitxml={junit}", *args], cwd=project, capture_output=True, text=True, timeout=300,
                   env={**os.environ, "GOLDEN_NODEID_PROPERTY": "1", **env})
    return junit.read_text()


def _stable(text: str, tmp: Path) -> str:
    """Placeholders for what differs between machines and runs: paths, host names, addresses."""
    text = text.replace(str(tmp), "/tmp/golden")
    text = text.replace(socket.gethostname(), "golden-host")
    text = re.sub(r"tcp://127\.0\.0\.1:\d+", "tcp://127.0.0.1:40000", text)
    text = re.sub(r'timestamp="[^"]*"', 'timestamp="2026-01-01T00:00:00"', text)
    return text


def main() -> None:
    INPUTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        sample = _write(tmp / "sample", {"tests/conftest.py": CONFTEST, "tests/test_sample.py": SAMPLE})
        flaky_dir = tmp / "flaky"
        flaky_dir.mkdir()
        env = {"GOLDEN_FLAKY_DIR": str(flaky_dir)}
        summary = _caelum_json(sample, tmp / "home", "--env", f"GOLDEN_FLAKY_DIR={flaky_dir}")
        (INPUTS / "summary_sample.json").write_text(_stable(json.dumps(summary, indent=1, sort_keys=True), tmp) + "\n")
        (flaky_dir / "failed-once").unlink()
        first = _pytest_junit(sample, tmp / "first.xml", env)
        rerun = _pytest_junit(sample, tmp / "rerun.xml", env, "tests/test_sample.py::test_flaky")
        (INPUTS / "junit_session1.xml").write_text(_stable(first, tmp))
        (INPUTS / "junit_session2.xml").write_text(_stable(rerun, tmp))
        broken = _write(tmp / "broken", BROKEN)
        summary = _caelum_json(broken, tmp / "home")
        (INPUTS / "summary_collection_error.json").write_text(
            _stable(json.dumps(summary, indent=1, sort_keys=True), tmp) + "\n")


if __name__ == "__main__":
    main()

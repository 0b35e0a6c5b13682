"""`caelum run`, `caelum runs`, the ready workflows/ and the networkx example, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import REPO, run_caelum

DEFS = Path(__file__).parent / "workflow_defs"


def _json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_run_fanout_definition_then_cached_rerun() -> None:
    first = run_caelum("run", str(REPO / "workflows" / "fanout.py"), "-p", "n=2000", "-p", "chunks=8", "--json")
    assert first.returncode == 0, first.stderr
    data = _json(first)
    assert data["state"] == "completed" and data["params"] == {"n": 2000, "chunks": 8, "seed": 42}
    summary = data["results"]["combine"]
    assert summary["count"] == 2000 and summary["chunks"] == 8 and 95 < summary["mean"] < 105
    assert data["computed"] == 4 + 8 and data["cached"] == 0 and data["failed"] == 0
    assert sum(data["per_machine"].values()) == 12
    # progress on stderr: the run id at once, then the counts (a final line off a terminal)
    assert f"caelum run: run {data['run_id']} started" in first.stderr
    assert "caelum run: 12/12 tasks, 0 failed" in first.stderr

    again = run_caelum("run", str(REPO / "workflows" / "fanout.py"), "-p", "n=2000", "-p", "chunks=8")
    assert again.returncode == 0, again.stderr
    assert "tasks: 0 computed, 4 cached, 0 failed, 0 skipped" in again.stdout
    assert "output combine = {'count': 2000" in again.stdout

    listed = _json(run_caelum("runs", "list", "--json"))
    assert [r["workflow"] for r in listed] == ["fanout", "fanout"]
    shown = _json(run_caelum("runs", "show", data["run_id"], "--json"))
    assert shown["id"] == data["run_id"] and len(shown["tasks"]) == 12
    assert {t["state"] for t in shown["tasks"]} == {"completed"}
    text = run_caelum("runs", "show", data["run_id"][:17])
    assert text.returncode == 0 and f"run {data['run_id']} (fanout): completed" in text.stdout


@pytest.mark.slow
def test_failed_run_exits_nonzero_and_resume_recomputes_only_what_failed(tmp_path: Path) -> None:
    marker = tmp_path / "fail"
    marker.write_text("x")
    first = run_caelum("run", str(DEFS / "resumable.py"), "-p", f"marker={marker}", "-p", "x=5")
    assert first.returncode == 1
    assert "failed: c: RuntimeError: marker" in first.stdout and "--resume" in first.stdout
    run_id = _json(run_caelum("runs", "list", "--json"))[0]["id"]
    marker.unlink()
    second = run_caelum("run", str(DEFS / "resumable.py"), "--resume", run_id, "--json")
    assert second.returncode == 0, second.stderr
    data = _json(second)
    assert (data["computed"], data["cached"], data["failed"]) == (2, 3, 0)
    assert data["resumed_from"] == run_id and data["results"]["d"] == (5 + 1) * 2 + 100 - 1


@pytest.mark.slow
def test_gpu_step_definition_falls_back_to_cpu() -> None:
    proc = run_caelum("run", str(REPO / "workflows" / "gpu_step.py"), "-p", "size=32", "--json")
    assert proc.returncode == 0, proc.stderr
    data = _json(proc)
    assert data["results"]["report"].startswith("32x32 product on cpu:")
    assert data["tasks"]["multiply"]["state"] == "completed"


@pytest.mark.slow
def test_networkx_example() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "networkx_workflow.py")], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["state"] == "completed" and data["computed"] == 4
    assert data["summary"] == {"evens": 2 * 2550, "odds": 2 * 2500, "count": 100}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no/such/file.py"], "no/such/file.py: does not exist — give the path of the workflow file"),
        (["run", str(DEFS / "broken_syntax.py")], "broken_syntax.py:3: SyntaxError: invalid syntax — fix the file and run again"),
        (["run", str(DEFS / "no_workflow.py")], "defines no workflow"),
        (["run", str(DEFS / "resumable.py"), "-p", "zzz=1"], "unknown parameter(s) 'zzz' for workflow 'resumable'; known: marker, x"),
        (["run", str(DEFS / "resumable.py"), "-p", "x=abc"], "parameter 'x' must be of type int; got 'abc'"),
        (["run", str(DEFS / "resumable.py"), "-p", "novalue"], "parameter 'novalue' is not NAME=VALUE"),
        (["runs", "show", "nope"], "no run 'nope' in the run store"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str) -> None:
    proc = run_caelum(*args)
    assert proc.returncode != 0
    assert proc.stderr.startswith("caelum: error: ") and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_help_and_empty_store() -> None:
    helped = run_caelum("run", "--help")
    assert helped.returncode == 0 and "--resume RUN_ID" in helped.stdout and "-p, --param NAME=VALUE" in helped.stdout
    empty = run_caelum("runs", "list")
    assert empty.returncode == 0 and "no runs yet" in empty.stdout


@pytest.mark.slow
def test_code_health_workflow_runs_analysis_tests_and_report(tmp_path):
    """workflows/code_health.py on a small real git repository, through `caelum run`."""
    import json
    import subprocess

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "calc.py").write_text("def add(a, b):\n    if a and b:\n        return a + b\n    return a or b\n")
    (repo / "test_calc.py").write_text(
        "from pkg.calc import add\n\ndef test_add():\n    assert add(1, 2) == 3\n\ndef test_bad():\n    assert add(0, 0) == 1\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org",
           "GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.org"}
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env=env)
    out = tmp_path / "report"
    result = run_caelum("run", str(REPO / "workflows" / "code_health.py"), "-p", f"path={repo}",
                        "-p", f"out={out}", "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["results"]["summarise"]
    assert summary["files"] == 3 and summary["functions"] == 3
    assert summary["tests"]["passed"] == 1 and summary["tests"]["failed"] == 1
    assert summary["failed_tests"] == ["test_calc.py::test_bad"]
    assert summary["tables"]["repositories"] == 1 and summary["tables"]["test_runs"] >= 1
    assert (out / "report.html").exists() and (out / "hotspots.parquet").exists()

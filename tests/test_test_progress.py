"""Live progress of `caelum test`: the CLI's progress display, MCP notifications, the dashboard."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import pytest
from mcp import Client

from caelum_dask.cli.progress import ProgressDisplay, ProgressState, format_seconds, progress_text
from caelum_dask.dashboard.data import tests as testdata
from caelum_dask.mcp_server import build_server
from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.tools_testing import ProgressNotifier
from caelum_dask.progress import status
from caelum_dask.testing.engine import TestProgress
from harness import run_caelum
from testshard_fixtures import make_project

ANSI = re.compile(r"\x1b\[")


class FakeClock:
    """A clock the test moves by hand: throttling is checked without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _progress(done: int, total: int, failed: int = 0) -> TestProgress:
    eta = None if not done else (total - done) * 0.25
    return TestProgress(done=done, total=total, failed=failed, running=2, sessions=2,
                        elapsed=done * 0.25, eta=eta)


def _drive(display: ProgressDisplay, clock: FakeClock, total: int, step: float) -> None:
    """Feed a whole run the way the engine does: a progress event per step, tests finishing."""
    display(TestProgress(done=0, total=0, failed=0, running=0, sessions=0, elapsed=0.0, eta=None).event("r"))
    display(status("test", "[all] collected 40 tests on host-a"))
    for done in range(total + 1):
        clock.now += step
        display(_progress(done, total, failed=min(done // 10, 3)).event("r"))


# ------------------------------------------------------------------ the CLI's progress display

def test_plain_output_is_throttled_with_a_final_line() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with ProgressDisplay("caelum test", noun="tests", stream=stream, interval=5.0, clock=clock) as display:
        assert not display.live  # a StringIO is no terminal
        _drive(display, clock, total=40, step=0.25)  # 41 updates over about 10 s
    lines = stream.getvalue().splitlines()
    assert lines[0] == "caelum test: [all] collected 40 tests on host-a"  # "[all]" stays text
    progress_lines = [line for line in lines[1:-1] if " tests, " in line]
    assert 1 <= len(progress_lines) <= 3, lines  # every ~5 s of 10 s, not once per test
    assert all(line.startswith("caelum test: ") and "ETA" in line for line in progress_lines)
    assert lines[-1] == "caelum test: 40/40 tests, 3 failed in 10s"
    assert not ANSI.search(stream.getvalue())


def test_a_short_run_prints_only_its_final_line() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with ProgressDisplay("caelum test", noun="tests", stream=stream, interval=5.0, clock=clock) as display:
        _drive(display, clock, total=12, step=0.1)
    assert stream.getvalue().splitlines()[1:] == ["caelum test: 12/12 tests, 1 failed in 1s"]


def test_nothing_to_count_means_no_progress_lines() -> None:
    stream, clock = io.StringIO(), FakeClock()
    with ProgressDisplay("caelum test", noun="tests", stream=stream, interval=5.0, clock=clock) as display:
        display.status("snapshot abc: 3 files")
        for _ in range(4):  # still collecting: the engine reports total 0
            clock.now += 10
            display(TestProgress(0, 0, 0, 0, 2, 0.0, None).event("r"))
    assert stream.getvalue() == "caelum test: snapshot abc: 3 files\n"


def test_a_terminal_gets_one_bar_and_the_same_final_line() -> None:
    stream, clock = TtyStream(), FakeClock()
    with ProgressDisplay("caelum test", noun="tests", stream=stream, interval=5.0, clock=clock) as display:
        assert display.live
        _drive(display, clock, total=40, step=0.25)
    out = stream.getvalue()
    assert "[all] collected 40 tests on host-a" in out
    assert out.rstrip().endswith("caelum test: 40/40 tests, 3 failed in 10s")
    assert "40/40 tests, 0 failed, ETA" not in out  # no plain progress lines under a bar


def test_json_mode_stays_plain_on_a_terminal() -> None:
    stream, clock = TtyStream(), FakeClock()
    with ProgressDisplay("caelum test", noun="tests", stream=stream, live=False, clock=clock) as display:
        assert not display.live
        _drive(display, clock, total=5, step=0.1)
    assert not ANSI.search(stream.getvalue())
    assert stream.getvalue().splitlines()[-1] == "caelum test: 5/5 tests, 0 failed in 1s"


def test_progress_text_and_durations() -> None:
    assert progress_text(ProgressState(12, 40, 1, 3.2), "tests") == "12/40 tests, 1 failed, ETA 3s"
    assert progress_text(ProgressState(3, None, 0, None), "files") == "3 files, 0 failed"
    assert [format_seconds(s) for s in (0.4, 59, 125, 3725)] == ["0s", "59s", "2m05s", "1h02m"]


# ------------------------------------------------------------------ MCP notifications (no cluster)

def test_mcp_notifier_sends_counts_never_backwards_and_always_the_last() -> None:
    sent: list[tuple[float, float | None, str | None]] = []
    notifier = ProgressNotifier(lambda done, total, message: sent.append((done, total, message)), interval=3600)
    notifier.status("snapshot abc")
    notifier.progress(TestProgress(0, 0, 0, 0, 0, 0.0, None))  # nothing collected: nothing to say
    notifier.progress(_progress(4, 10, failed=1))
    notifier.progress(_progress(4, 10, failed=1))  # unchanged: not resent
    notifier.progress(_progress(5, 10, failed=1))  # too soon: throttled
    notifier.status("still going")
    notifier.progress(_progress(10, 10, failed=1))  # the end always goes out
    assert sent == [(0, None, "snapshot abc"), (4, 10, "4/10 tests, 1 failed, ETA 2s"),
                    (4, 10, "still going"), (10, 10, "10/10 tests, 1 failed, ETA 0s")]


# ------------------------------------------------------------------ the dashboard's tests page data

def test_dashboard_run_fills_from_progress_events() -> None:
    runs = testdata.TestRuns()
    runs.apply({"event": "run-started", "run_id": "t1", "shards": 2, "tests": None})
    run = runs.get("t1")
    table = testdata.runs_source(runs)
    assert table["done"] == ["…"] and table["tests"] == [None] and table["state"] == ["running"]
    version = runs.version
    runs.apply({"event": "progress", "run_id": "t1", "done": 12, "total": 40, "failed": 2, "running": 2,
                "sessions": 2, "elapsed": 3.0, "eta": 7.4})
    assert runs.version > version and run.tests == 40
    table = testdata.runs_source(runs)
    assert table["done"] == ["12/40"] and table["eta"] == ["7s"] and table["failed"] == [2]
    assert testdata.progress_text(run) == "run t1: running, 12/40 tests done, 2 failed, ETA 7s"
    runs.apply({"event": "progress", "run_id": "t1", "done": 40, "total": 40, "failed": 3, "running": 0,
                "sessions": 2, "elapsed": 9.0, "eta": 0.0})
    runs.apply({"event": "shard-finished", "run_id": "t1", "shard": "all-0", "worker": "w1", "machine": "a",
                "passed": 20, "failed": 1, "skipped": 0, "errors": 0, "duration": 4.0})
    runs.apply({"event": "shard-finished", "run_id": "t1", "shard": "all-1", "worker": "w2", "machine": "b",
                "passed": 17, "failed": 1, "skipped": 1, "errors": 1, "duration": 4.5})
    runs.apply({"event": "run-finished", "run_id": "t1", "exit_code": 1, "passed": 37, "failed": 2})
    table = testdata.runs_source(runs)
    assert table["state"] == ["failed"] and table["done"] == ["40/40"] and table["eta"] == [""]
    assert table["failed"] == [2] and table["errors"] == [1] and table["shards"] == ["2/2"]
    assert testdata.progress_text(run) == "run t1: failed, 40/40 tests, 2 shards finished"


def test_dashboard_run_without_progress_events_keeps_the_old_rows() -> None:
    runs = testdata.TestRuns()
    runs.apply({"event": "run-started", "run_id": "t2", "shards": 1, "tests": 3})
    runs.apply({"event": "shard-finished", "run_id": "t2", "shard": 0, "worker": "w", "machine": "a",
                "passed": 3, "failed": 0, "skipped": 0, "errors": 0, "duration": 1.0})
    runs.apply({"event": "run-finished", "run_id": "t2", "exit_code": 0, "passed": 3, "failed": 0})
    table = testdata.runs_source(runs)
    assert table["done"] == ["3/3"] and table["passed"] == [3] and table["state"] == ["passed"]


# ------------------------------------------------------------------ end to end on a real cluster

def _twenty_tests(root: Path) -> Path:
    body = ["import pytest", "", "@pytest.mark.parametrize('n', range(19))", "def test_many(n):",
            "    assert n >= 0", "", "def test_broken():", "    assert 1 == 2", ""]
    return make_project(root, {"tests/test_twenty.py": "\n".join(body)})


@pytest.mark.slow
def test_cli_prints_one_final_progress_line_and_pure_json(shard_cluster, tmp_path: Path) -> None:
    project = _twenty_tests(tmp_path / "twenty")
    proc = run_caelum("test", str(project), "--json", "--retry-failed", "0", "--no-record",
                      "--scheduler", shard_cluster.scheduler.address)
    summary = json.loads(proc.stdout)  # stdout is the JSON document and nothing else
    assert proc.returncode == summary["exit_code"] == 1, proc.stderr
    assert summary["counts"]["total"] == 20 and summary["counts"]["failed"] == 1
    lines = proc.stderr.splitlines()
    assert "caelum test: 20/20 tests, 1 failed in " in [line[:len("caelum test: 20/20 tests, 1 failed in ")]
                                                        for line in lines], proc.stderr
    assert sum(1 for line in lines if " tests, " in line) <= 5, proc.stderr  # no line per test
    assert not ANSI.search(proc.stderr)


@pytest.mark.slow
def test_mcp_run_tests_sends_test_progress(shard_cluster, tmp_path: Path) -> None:
    project = _twenty_tests(tmp_path / "twenty-mcp")
    handle = ClusterHandle(shard_cluster.scheduler.address)
    server = build_server(handle=handle)
    notes: list[tuple[float, float | None, str | None]] = []

    async def go():
        async def on_progress(done, total, message):
            notes.append((done, total, message))

        async with Client(server) as mcp:
            return await mcp.call_tool("run_tests", {"path": str(project), "retry_failed": 0},
                                       progress_callback=on_progress)

    try:
        result = asyncio.run(go())
    finally:
        handle.close()
    assert not result.is_error, result.content
    assert result.structured_content["counts"]["total"] == 20
    counted = [n for n in notes if n[1] is not None]
    assert counted and all(total == 20 for _, total, _ in counted), notes
    assert counted[-1][0] == 20 and counted[-1][2].startswith("20/20 tests, 1 failed"), notes
    assert [done for done, _, _ in notes] == sorted(done for done, _, _ in notes)  # never backwards
    assert any("collected 20 tests" in (message or "") for _, _, message in notes)

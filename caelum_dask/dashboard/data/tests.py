"""Tests page data: a sharded test run's shards per machine, pass/fail counts and durations.

Fed by ``caelum.tests`` events::

    run-started    {run_id, shards, tests}      (tests: None until the sessions have collected)
    progress       {run_id, done, total, failed, running, sessions, elapsed, eta}  (≤ 1 a second)
    shard-finished {run_id, shard, worker, machine, passed, failed, skipped, errors, duration}
    run-finished   {run_id, exit_code, passed, failed, ...}

``progress`` is what lets the page fill while the run goes: shards only report at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caelum_dask.dashboard.data.recent import RecentRuns

OUTCOMES: tuple[str, ...] = ("passed", "failed", "skipped", "errors")
PROGRESS_FIELDS: tuple[str, ...] = ("done", "total", "failed", "running", "sessions", "elapsed", "eta")
OUTCOME_COLOURS: dict[str, str] = {
    "passed": "#2ca02c", "failed": "#d62728", "skipped": "#f7e17c", "errors": "#9467bd",
}


@dataclass
class TestRun:
    """One sharded test run as its events describe it."""

    __test__ = False  # not a pytest class

    run_id: str
    shards_expected: int | None = None
    tests: int | None = None
    shards: list[dict[str, Any]] = field(default_factory=list)
    finished: dict[str, Any] | None = None
    started: str = ""
    version: int = 0
    #: the latest ``progress`` event: done, total, failed, running, sessions, elapsed, eta
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if self.finished is None:
            return "running"
        return "passed" if self.finished.get("exit_code") in (0, None) and not self.finished.get("failed") else "failed"

    @property
    def done_text(self) -> str:
        """``12/40`` while the tests run (``…`` before any progress), then all of them."""
        done, total = self.progress.get("done"), self.progress.get("total") or self.tests
        if done is None:
            return "…" if self.finished is None else (f"{total}/{total}" if total else "")
        return f"{done}/{total if total else '?'}"

    @property
    def live(self) -> bool:
        """Running with no shard reported yet: the counts come from ``progress`` alone."""
        return self.finished is None and not self.shards


class TestRuns(RecentRuns[TestRun]):
    """Test runs seen on ``caelum.tests``, most recent last."""

    __test__ = False  # not a pytest class
    run_class = TestRun

    def apply(self, msg: Any) -> None:
        if not isinstance(msg, dict) or "run_id" not in msg:
            return
        event = msg.get("event")
        run = self._run(str(msg["run_id"]))
        if event == "run-started":
            run.shards_expected = msg.get("shards")
            run.tests = msg.get("tests")
            run.started = str(msg.get("time") or "")
        elif event == "progress":
            run.progress = {k: msg.get(k) for k in PROGRESS_FIELDS}
            if msg.get("total"):
                run.tests = int(msg["total"])
        elif event == "shard-finished":
            run.shards.append({k: msg.get(k) for k in ("shard", "worker", "machine", "duration", *OUTCOMES)})
        elif event == "run-finished":
            run.finished = dict(msg)
        else:
            return
        run.version += 1
        self.version += 1


def runs_source(runs: TestRuns) -> dict[str, list[Any]]:
    """One row per run, most recent first; ``done`` and ``eta`` are live while the run goes."""
    columns = ("run_id", "state", "done", "eta", "shards", "tests", *OUTCOMES, "duration")
    out: dict[str, list[Any]] = {k: [] for k in columns}
    for run in reversed(runs.runs.values()):
        out["run_id"].append(run.run_id)
        out["state"].append(run.state)
        out["done"].append(run.done_text)
        out["eta"].append(_eta_text(run))
        out["shards"].append(f"{len(run.shards)}/{run.shards_expected if run.shards_expected is not None else '?'}")
        out["tests"].append(run.tests)
        for outcome in OUTCOMES:
            out[outcome].append(sum(int(s.get(outcome) or 0) for s in run.shards))
        if run.live:  # failures so far (failed and errors); the shards' split comes at the end
            out["failed"][-1] = int(run.progress.get("failed") or 0)
        out["duration"].append(round(sum(float(s.get("duration") or 0) for s in run.shards), 2))
    return out


def _eta_text(run: TestRun) -> str:
    """``12s`` left while running (once there is an estimate), else empty."""
    eta = run.progress.get("eta")
    if run.finished is not None or eta is None:
        return ""
    return f"{float(eta):.0f}s"


def progress_text(run: TestRun) -> str:
    """The page's one-line summary of a run: live counts while it goes, shards at the end."""
    if run.finished is None:
        text = f"run {run.run_id}: running, {run.done_text} tests done, {int(run.progress.get('failed') or 0)} failed"
        eta = _eta_text(run)
        return f"{text}, ETA {eta}" if eta else text
    tests = f"{run.done_text} tests, " if run.done_text else ""
    return f"run {run.run_id}: {run.state}, {tests}{len(run.shards)} shards finished"


def shards_source(run: TestRun) -> dict[str, list[Any]]:
    """One row per finished shard, sorted by machine then shard."""
    rows = sorted(run.shards, key=lambda s: (str(s.get("machine")), str(s.get("shard"))))
    out: dict[str, list[Any]] = {k: [] for k in ("shard", "machine", "worker", *OUTCOMES, "duration", "label")}
    for shard in rows:
        for key in ("shard", "machine", "worker"):
            out[key].append(str(shard.get(key) if shard.get(key) is not None else ""))
        for outcome in OUTCOMES:
            out[outcome].append(int(shard.get(outcome) or 0))
        out["duration"].append(float(shard.get("duration") or 0.0))
        out["label"].append(f"{shard.get('shard')} @ {shard.get('machine')}")
    return out


def machines_source(run: TestRun) -> dict[str, list[Any]]:
    """Per machine: shards, outcome counts (for ``hbar_stack``) and total shard time."""
    totals: dict[str, dict[str, float]] = {}
    for shard in run.shards:
        machine = str(shard.get("machine") or "?")
        row = totals.setdefault(machine, {"shards": 0, "duration": 0.0, **{o: 0 for o in OUTCOMES}})
        row["shards"] += 1
        row["duration"] += float(shard.get("duration") or 0.0)
        for outcome in OUTCOMES:
            row[outcome] += int(shard.get(outcome) or 0)
    machines = sorted(totals)
    out: dict[str, list[Any]] = {"machine": machines}
    for key in ("shards", "duration", *OUTCOMES):
        out[key] = [round(totals[m][key], 3) if key == "duration" else int(totals[m][key]) for m in machines]
    return out

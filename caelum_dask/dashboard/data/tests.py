"""Tests page data: a sharded test run's shards per machine, pass/fail counts and durations.

Fed by ``caelum.tests`` events::

    run-started    {run_id, shards, tests}
    shard-finished {run_id, shard, worker, machine, passed, failed, skipped, errors, duration}
    run-finished   {run_id, exit_code, passed, failed, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caelum_dask.dashboard.data.recent import RecentRuns

OUTCOMES: tuple[str, ...] = ("passed", "failed", "skipped", "errors")
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

    @property
    def state(self) -> str:
        if self.finished is None:
            return "running"
        return "passed" if self.finished.get("exit_code") in (0, None) and not self.finished.get("failed") else "failed"


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
        elif event == "shard-finished":
            run.shards.append({k: msg.get(k) for k in ("shard", "worker", "machine", "duration", *OUTCOMES)})
        elif event == "run-finished":
            run.finished = dict(msg)
        else:
            return
        run.version += 1
        self.version += 1


def runs_source(runs: TestRuns) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {k: [] for k in ("run_id", "state", "shards", "tests", *OUTCOMES, "duration")}
    for run in reversed(runs.runs.values()):
        out["run_id"].append(run.run_id)
        out["state"].append(run.state)
        out["shards"].append(f"{len(run.shards)}/{run.shards_expected if run.shards_expected is not None else '?'}")
        out["tests"].append(run.tests)
        for outcome in OUTCOMES:
            out[outcome].append(sum(int(s.get(outcome) or 0) for s in run.shards))
        out["duration"].append(round(sum(float(s.get("duration") or 0) for s in run.shards), 2))
    return out


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

"""Tasks page data: tasks per machine, over time, by kind.

The kind of a task is its ``caelum_kind`` annotation (set by every engine, see
:mod:`caelum_dask.keys`: keys follow Dask's ``<step>-<token>`` convention, so the kind cannot
be read from them); keys of the older ``caelum-wf-`` / ``caelum-analyze-`` / ``caelum-test-`` /
``caelum-llm-`` / ``caelum-bi-`` form are still recognised; anything else is ``other`` (plain
Dask work). :class:`TaskCounter` is fed by the scheduler plugin's transition hook.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

PREFIXES: tuple[tuple[str, str], ...] = (
    ("caelum-wf-", "workflow"),
    ("caelum-analyze-", "analysis"),
    ("caelum-test-", "test"),
    ("caelum-llm-", "llm"),
    ("caelum-bi-", "bi"),
)
KINDS: tuple[str, ...] = tuple(kind for _, kind in PREFIXES) + ("other",)
KIND_COLOURS: dict[str, str] = {
    "workflow": "#1f77b4",
    "analysis": "#ff7f0e",
    "test": "#2ca02c",
    "llm": "#9467bd",
    "bi": "#8c564b",
    "other": "#c7c7c7",
}
ALL_MACHINES = "all machines"


def task_kind(key: Any) -> str:
    """The kind of a Dask key (str, or tuple whose first element is the name)."""
    name = key[0] if isinstance(key, tuple) and key else key
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if not isinstance(name, str):
        return "other"
    for prefix, kind in PREFIXES:
        if name.startswith(prefix):
            return kind
    return "other"


def _zero() -> dict[str, int]:
    return {kind: 0 for kind in KINDS}


@dataclass
class TaskCounter:
    """Running / completed / failed tasks per machine and kind, plus a history of running."""

    maxlen: int = 600
    running: dict[str, dict[str, int]] = field(default_factory=dict)
    completed: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: dict[str, dict[str, int]] = field(default_factory=dict)
    hostnames: dict[str, str] = field(default_factory=dict)
    _where: dict[Any, tuple[str, str]] = field(default_factory=dict)  # key -> (machine, kind)
    history: deque[tuple[float, dict[str, dict[str, int]]]] = field(default_factory=deque)

    def transition(self, key: Any, start: str, finish: str, machine: str | None, kind: str | None = None) -> None:
        """Account one scheduler transition; ``machine`` is where the task runs or ran.

        ``kind`` is the task's ``caelum_kind`` annotation (:mod:`caelum_dask.keys`); without
        one, the key's legacy ``caelum-<kind>-`` prefix decides, else ``other``.
        """
        if finish == "processing":
            if machine is None:
                return
            kind = kind if kind in KINDS else task_kind(key)
            self._leave(key)
            self._where[key] = (machine, kind)
            self.running.setdefault(machine, _zero())[kind] += 1
        elif start == "processing":
            where = self._leave(key)
            if where is None:
                return
            machine_of, kind = where
            if finish == "memory":
                self.completed.setdefault(machine_of, _zero())[kind] += 1
            elif finish == "erred":
                self.failed.setdefault(machine_of, _zero())[kind] += 1

    def _leave(self, key: Any) -> tuple[str, str] | None:
        where = self._where.pop(key, None)
        if where is not None:
            counts = self.running.get(where[0])
            if counts is not None:
                counts[where[1]] = max(0, counts[where[1]] - 1)
        return where

    def snapshot(self, now: float) -> None:
        """Record the running counts now (called once per sampling tick)."""
        self.history.append((now * 1000.0, {m: dict(c) for m, c in self.running.items() if any(c.values())}))
        while len(self.history) > self.maxlen:
            self.history.popleft()

    def machine_names(self) -> list[str]:
        names = set(self.running) | set(self.completed) | set(self.failed)
        return sorted(names, key=lambda m: self.hostnames.get(m, m))


def per_machine_source(counter: TaskCounter, which: str = "completed") -> dict[str, list[Any]]:
    """``machine`` plus one column per kind, for a stacked bar per machine (``hbar_stack``)."""
    table = getattr(counter, which)
    machines = counter.machine_names()
    out: dict[str, list[Any]] = {"machine": machines,
                                 "hostname": [counter.hostnames.get(m, m) for m in machines]}
    for kind in KINDS:
        out[kind] = [table.get(m, {}).get(kind, 0) for m in machines]
    out["total"] = [sum(table.get(m, {}).values()) for m in machines]
    return out


def running_timeseries(counter: TaskCounter, machine: str = ALL_MACHINES) -> dict[str, list[Any]]:
    """``time`` plus one column per kind: tasks running on ``machine`` (or all) at each sample."""
    out: dict[str, list[Any]] = {"time": [t for t, _ in counter.history]}
    for kind in KINDS:
        column = []
        for _, counts in counter.history:
            if machine == ALL_MACHINES:
                column.append(sum(c.get(kind, 0) for c in counts.values()))
            else:
                column.append(counts.get(machine, {}).get(kind, 0))
        out[kind] = column
    return out


def totals_text(counter: TaskCounter) -> str:
    done = sum(sum(c.values()) for c in counter.completed.values())
    failed = sum(sum(c.values()) for c in counter.failed.values())
    running = sum(sum(c.values()) for c in counter.running.values())
    if not (done or failed or running):
        return "no tasks yet: submit work (`caelum analyze PATH`, `caelum test PATH`, `caelum run FILE`)"
    return f"{running} running, {done} completed, {failed} failed since the scheduler started"

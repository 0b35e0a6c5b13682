"""One progress event for every long job: analysis, codemods, tests, workflows, BI, LLM, deploy.

Why one type: a job's progress has three readers — the CLI's bar (cli/progress.py), MCP's
``notifications/progress`` (mcp_server/progress.py) and scripts — and each engine used to call
its own callback signature (``(done, total)``, ``(message)``, ``(done, total, failed)``, a
dict of counts), so every front door had to learn every engine. Engines now take one
``progress: ProgressCallback | None`` and call it with :class:`ProgressEvent`; library code
never prints.

An event is either a *status line* (``message`` set, nothing counted: "snapshot abc: 12
files", "host a: started") or a *count* (``done``/``total``, with failures, running items and
an ETA when the engine can estimate one); it may be both. ``detail`` holds what one job alone
knows (a workflow's per-state counts, a test run's sessions) for readers that want it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: the unit each job counts, as a progress bar labels it
NOUNS: dict[str, str] = {
    "analyze": "files", "codemod": "files", "test": "tests", "workflow": "tasks",
    "bi": "steps", "llm": "requests", "deploy": "hosts",
}


@dataclass(frozen=True)
class ProgressEvent:
    """How far one job is, or one thing it wants said (see the module docstring)."""

    job: str
    done: int = 0
    total: int | None = None  # None: not known yet (tests still collecting, files still listed)
    failed: int = 0
    running: int = 0
    eta: float | None = None  # seconds left; None when nothing can be estimated yet
    message: str | None = None
    run_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        """Whether the event carries counts (not only a status line)."""
        return self.total is not None or self.done > 0 or self.message is None

    @property
    def noun(self) -> str:
        return NOUNS.get(self.job, "items")

    def text(self) -> str:
        """One line for a log or an MCP message: ``12/40 tests, 1 failed, 2 running, ETA 3s``."""
        if not self.counted:
            return self.message or ""
        done = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        parts = [f"{done} {self.noun}", f"{self.failed} failed"]
        if self.running:
            parts.append(f"{self.running} running")
        if self.eta is not None:
            parts.append(f"ETA {max(0, round(self.eta))}s")
        line = ", ".join(parts)
        return f"{line} — {self.message}" if self.message else line

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON (the shape MCP and ``--json`` streams use)."""
        return {"job": self.job, "done": self.done, "total": self.total, "failed": self.failed,
                "running": self.running, "eta": None if self.eta is None else round(self.eta, 3),
                "message": self.message, "run_id": self.run_id, "detail": dict(self.detail)}


#: what every engine's ``progress=`` parameter takes
ProgressCallback = Callable[[ProgressEvent], None]


def status(job: str, message: str, **fields: Any) -> ProgressEvent:
    """A status-line event (nothing counted)."""
    return ProgressEvent(job=job, message=message, **fields)


def reporter(job: str, callback: ProgressCallback | None) -> Callable[[str], None]:
    """A ``say(message)`` function for an engine's status lines (a no-op without a callback)."""
    if callback is None:
        return _quiet
    return lambda message: callback(status(job, message))


def _quiet(message: str) -> None:
    pass


__all__ = ["NOUNS", "ProgressCallback", "ProgressEvent", "reporter", "status"]

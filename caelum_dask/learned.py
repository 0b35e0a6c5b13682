"""Learned task durations: what the scheduler measured survives its restart.

Dask's scheduler keeps, per task prefix (``key_split`` of the key: ``load-data-<token>`` ->
``load-data``), an average of how long its tasks ran (``TaskPrefix.duration_average``), and
uses it for work stealing, queuing and ``Adaptive``'s estimate of the work queued. It starts
from nothing after every restart, so the first tasks of each kind are planned blind (Dask's
``distributed.scheduler.unknown-task-duration``, 0.5 s), unless
``distributed.scheduler.default-task-durations`` says otherwise.

This scheduler plugin closes the loop: at start it loads the averages saved in
``<caelum home>/learned/task-durations.json`` into ``default-task-durations`` (values the user
configured there win), which Dask reads when it first meets a prefix; every
``caelum.learning.save-interval`` and when the scheduler closes it saves the current averages
(prefixes not seen in this session keep their saved value). Its ``caelum_learned_durations``
handler returns what it knows, for ``caelum status`` and tests.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from caelum_dask import config

logger = logging.getLogger(__name__)

PLUGIN_NAME = "caelum-learned-durations"
HANDLER = "caelum_learned_durations"
DEFAULTS_KEY = "distributed.scheduler.default-task-durations"


def durations_file() -> Path:
    """Where this machine's scheduler keeps what it learned."""
    return config.home() / "learned" / "task-durations.json"


def load(path: Path) -> dict[str, float]:
    """Saved averages (seconds per prefix); nothing when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    durations = data.get("durations", {}) if isinstance(data, dict) else {}
    return {str(k): float(v) for k, v in durations.items() if isinstance(v, (int, float)) and v > 0}


def save(path: Path, durations: dict[str, float]) -> None:
    """Write atomically (a scheduler killed mid-write leaves the previous file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".task-durations-")
    with os.fdopen(fd, "w") as out:
        json.dump({"version": 1, "durations": dict(sorted(durations.items()))}, out, indent=1)
    os.replace(tmp, path)


class LearnedDurations(SchedulerPlugin):
    """Loads saved per-prefix durations into Dask's defaults at start; saves what it measures."""

    name = PLUGIN_NAME

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or durations_file()
        self.known: dict[str, float] = {}
        self.scheduler: Any = None
        self._callback: PeriodicCallback | None = None
        self._configured: dict[str, Any] | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.known = load(self.path)
        configured = dict(dask.config.get(DEFAULTS_KEY, default={}) or {})
        self._configured = configured
        dask.config.set({DEFAULTS_KEY: {**self.known, **configured}})  # the user's own values win
        scheduler.handlers[HANDLER] = self.handle_durations
        interval = parse_timedelta(config.get("learning.save-interval"))
        self._callback = PeriodicCallback(self.save_now, interval * 1000)
        self._callback.start()
        if self.known:
            logger.info("caelum: %d learned task durations loaded from %s", len(self.known), self.path)

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
        self.save_now()
        if self._configured is not None:  # an in-process (embedded) scheduler leaves the config as it was
            dask.config.set({DEFAULTS_KEY: self._configured})

    def measured(self) -> dict[str, float]:
        """The scheduler's current averages (prefixes with at least one finished task)."""
        if self.scheduler is None:
            return {}
        return {name: float(prefix.duration_average) for name, prefix in self.scheduler.task_prefixes.items()
                if prefix.duration_average and prefix.duration_average > 0}

    def save_now(self) -> None:
        measured = self.measured()
        if not measured:
            return
        self.known = {**self.known, **measured}
        try:
            save(self.path, self.known)
        except OSError as exc:  # a read-only home must not take the scheduler down
            logger.warning("caelum: cannot save learned task durations to %s: %s", self.path, exc)

    def handle_durations(self) -> dict[str, float]:
        return {**self.known, **self.measured()}


def install(scheduler: Any) -> None:
    """Scheduler extension hook (see caelum_dask.scheduler): learn when configured to."""
    if config.get("learning.durations"):
        scheduler.add_plugin(LearnedDurations())


__all__ = ["HANDLER", "LearnedDurations", "durations_file", "install", "load", "save"]

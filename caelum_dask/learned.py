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
handler returns what it knows, for ``caelum status``, workflow estimates and tests.

Besides the per-prefix durations it keeps *figures*: per-kind rates that a prefix average
cannot express because the work of one task varies (analysis seconds per byte of source per
analyzer set, LLM tokens per second per model and machine), and per-test durations
(``test-seconds:<project id>:<nodeid>``, so that a fresh clone of a repository is balanced by
what the cluster measured in another; see :mod:`caelum_dask.testing.durations`). A task annotated with
``caelum_learn={"figure": name, "amount": n}`` adds ``compute seconds / n`` to figure
``name`` when it finishes (the scheduler sees its compute time; nothing runs on the worker);
a client adds a figure it measured itself with the ``caelum_learned_record`` handler. Figures
are mixed like Dask's own averages (half the old value, half the new sample), saved in the
same file and read back with ``caelum_learned_figures``.
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
FIGURES_HANDLER = "caelum_learned_figures"
RECORD_HANDLER = "caelum_learned_record"
DEFAULTS_KEY = "distributed.scheduler.default-task-durations"
#: the task annotation that makes the scheduler learn a figure from the task's compute time
LEARN = "caelum_learn"


def durations_file() -> Path:
    """Where this machine's scheduler keeps what it learned."""
    return config.home() / "learned" / "task-durations.json"


def _section(path: Path, name: str) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    values = data.get(name, {}) if isinstance(data, dict) else {}
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float)) and v > 0}


def load(path: Path) -> dict[str, float]:
    """Saved averages (seconds per prefix); nothing when the file is missing or unreadable."""
    return _section(path, "durations")


def load_figures(path: Path) -> dict[str, float]:
    """Saved per-kind figures (see the module docstring); nothing when missing or unreadable."""
    return _section(path, "figures")


def save(path: Path, durations: dict[str, float], figures: dict[str, float] | None = None) -> None:
    """Write atomically (a scheduler killed mid-write leaves the previous file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".task-durations-")
    with os.fdopen(fd, "w") as out:
        json.dump({"version": 1, "durations": dict(sorted(durations.items())),
                   "figures": dict(sorted((figures or {}).items()))}, out, indent=1)
    os.replace(tmp, path)


def mix(old: float | None, sample: float) -> float:
    """Dask's own averaging (``TaskPrefix.add_duration``): half the old value, half the sample."""
    return sample if not old else 0.5 * old + 0.5 * sample


def figure_name(kind: str, *parts: str) -> str:
    """``kind:part:part`` — e.g. ``llm-tokens-per-second:llama3:alice@10.0.0.2``."""
    return ":".join((kind, *parts))


def compute_seconds(startstops: Any) -> float:
    """Seconds a finished task spent computing, from the worker's ``startstops``."""
    total = 0.0
    for entry in startstops or ():
        if isinstance(entry, dict) and entry.get("action") == "compute":
            total += float(entry.get("stop", 0)) - float(entry.get("start", 0))
    return total


class LearnedDurations(SchedulerPlugin):
    """Loads saved per-prefix durations into Dask's defaults at start; saves what it measures."""

    name = PLUGIN_NAME

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or durations_file()
        self.known: dict[str, float] = {}
        self.figures: dict[str, float] = {}
        self._figures_changed = False
        self.scheduler: Any = None
        self._callback: PeriodicCallback | None = None
        self._configured: dict[str, Any] | None = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.known = load(self.path)
        self.figures = load_figures(self.path)
        configured = dict(dask.config.get(DEFAULTS_KEY, default={}) or {})
        self._configured = configured
        dask.config.set({DEFAULTS_KEY: {**self.known, **configured}})  # the user's own values win
        scheduler.handlers[HANDLER] = self.handle_durations
        scheduler.handlers[FIGURES_HANDLER] = self.handle_figures
        scheduler.handlers[RECORD_HANDLER] = self.handle_record
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

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """A finished task annotated with :data:`LEARN` adds its compute seconds per amount."""
        if start != "processing" or finish != "memory" or self.scheduler is None:
            return
        ts = self.scheduler.tasks.get(key)
        learn = (getattr(ts, "annotations", None) or {}).get(LEARN) if ts is not None else None
        if not isinstance(learn, dict) or not learn.get("figure") or not learn.get("amount"):
            return
        seconds = compute_seconds(kwargs.get("startstops"))
        if seconds > 0:
            self.record({str(learn["figure"]): seconds / float(learn["amount"])})

    def record(self, samples: dict[str, float]) -> None:
        """Mix each positive sample into its figure."""
        for name, value in samples.items():
            if isinstance(value, (int, float)) and value > 0:
                self.figures[name] = mix(self.figures.get(name), float(value))
                self._figures_changed = True

    def save_now(self) -> None:
        measured = self.measured()
        if not measured and not self._figures_changed:
            return
        self.known = {**self.known, **measured}
        self._figures_changed = False
        try:
            save(self.path, self.known, self.figures)
        except OSError as exc:  # a read-only home must not take the scheduler down
            logger.warning("caelum: cannot save learned task durations to %s: %s", self.path, exc)

    def handle_durations(self) -> dict[str, float]:
        return {**self.known, **self.measured()}

    def handle_figures(self, prefix: str = "") -> dict[str, float]:
        """The figures whose names start with ``prefix`` (all by default)."""
        return {k: v for k, v in self.figures.items() if k.startswith(prefix)}

    def handle_record(self, samples: dict[str, float] | None = None) -> int:
        """Figures a client measured itself (LLM tokens per second); returns how many."""
        self.record(dict(samples or {}))
        return len(samples or {})


# -- the client side -------------------------------------------------------------------------
_HAS_PLUGIN: dict[tuple[str, str], bool] = {}


def _has_plugin(client: Any) -> bool:
    """Whether the client's scheduler runs the learning plugin (asked once per client).

    Calling a handler the scheduler does not have makes it log a traceback for every call; a
    plain ``LocalCluster`` or ``dask scheduler`` without the caelum preload has none.
    """
    key = (str(getattr(client, "id", "")), str(getattr(client.scheduler, "address", "")))
    if key not in _HAS_PLUGIN:
        try:
            _HAS_PLUGIN[key] = bool(client.run_on_scheduler(
                lambda dask_scheduler: FIGURES_HANDLER in dask_scheduler.handlers))
        except Exception:  # noqa: BLE001 - unreachable: nothing learned
            return False
    return _HAS_PLUGIN[key]


def _ask(client: Any, handler: str, **kwargs: Any) -> Any:
    """Call one of the plugin's handlers; ``None`` when the scheduler has no learning plugin."""
    if not _has_plugin(client):
        return None
    try:
        return client.sync(getattr(client.scheduler, handler), **kwargs)
    except Exception:  # noqa: BLE001 - learning off or the scheduler gone: "nothing learned"
        return None


def known_durations(client: Any) -> dict[str, float]:
    """Seconds per task prefix the scheduler knows (learned or measured); ``{}`` if none."""
    answer = _ask(client, HANDLER)
    return {str(k): float(v) for k, v in answer.items()} if isinstance(answer, dict) else {}


def unknown_duration(client: Any) -> float:
    """The scheduler's ``distributed.scheduler.unknown-task-duration``, in seconds."""
    def read(dask_scheduler: Any = None) -> float:
        return float(parse_timedelta(dask.config.get("distributed.scheduler.unknown-task-duration")))

    try:
        return float(client.run_on_scheduler(read))
    except Exception:  # noqa: BLE001 - run_on_scheduler refused: the client's own Dask default
        return read()


def known_figures(client: Any, prefix: str = "") -> dict[str, float]:
    """The figures whose names start with ``prefix``; ``{}`` without the learning plugin."""
    answer = _ask(client, FIGURES_HANDLER, prefix=prefix)
    return {str(k): float(v) for k, v in answer.items()} if isinstance(answer, dict) else {}


def record_figures(client: Any, samples: dict[str, float]) -> None:
    """Add measured samples to the scheduler's figures (nothing happens without the plugin)."""
    if samples:
        _ask(client, RECORD_HANDLER, samples=samples)


def install(scheduler: Any) -> None:
    """Scheduler extension hook (see caelum_dask.scheduler): learn when configured to."""
    if config.get("learning.durations"):
        scheduler.add_plugin(LearnedDurations())


__all__ = ["HANDLER", "LEARN", "LearnedDurations", "durations_file", "figure_name", "install", "known_durations",
           "known_figures", "load", "load_figures", "mix", "record_figures", "save", "unknown_duration"]

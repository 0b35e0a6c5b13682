"""The dashboard's scheduler plugin: what the pages show, gathered as it happens.

Pages are opened late and closed early, but a time series or a workflow run must be known
from its start. So one SchedulerPlugin keeps the models of every page, fed by Dask's own
hooks on the scheduler: ``log_event`` for the ``caelum.*`` event topics (no client round
trip — events are read on the scheduler itself), ``transition`` for tasks per machine, and
a periodic sample of worker heartbeat metrics and the registry for utilisation.
"""

from __future__ import annotations

import time
from typing import Any

import dask.utils
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from caelum_dask import config, events
from caelum_dask.dashboard.data.llm import LLMState
from caelum_dask.dashboard.data.tasks import TaskCounter
from caelum_dask.dashboard.data.tests import TestRuns
from caelum_dask.dashboard.data.utilisation import UtilisationHistory, machine_sample
from caelum_dask.dashboard.data.workflows import WorkflowRuns
from caelum_dask.keys import KIND
from caelum_dask.registry import PLUGIN_NAME as REGISTRY_NAME

PLUGIN_NAME = "caelum-dashboard"


class DashboardState(SchedulerPlugin):
    """Models of the caelum pages, kept up to date on the scheduler."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        history = int(config.get("dashboard.history"))
        keep = int(config.get("dashboard.keep-runs"))
        self.workflows = WorkflowRuns(keep=keep)
        self.tests = TestRuns(keep=keep)
        self.llm = LLMState()
        self.tasks = TaskCounter(maxlen=history)
        self.utilisation = UtilisationHistory(maxlen=history)
        self.scheduler: Any = None
        self._machine_of: dict[str, str] = {}
        self._callback: PeriodicCallback | None = None
        self.bokeh_app: Any = None  # the mounted Bokeh server (see caelum_dask.dashboard.server)
        self._feeds = {
            events.WORKFLOWS: self.workflows.apply,
            events.TESTS: self.tests.apply,
            events.LLM: self.llm.apply,
        }

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        for topic, feed in self._feeds.items():  # events logged before we were installed
            for _, msg in scheduler.get_events(topic):
                feed(msg)
        interval = dask.utils.parse_timedelta(config.get("dashboard.sample-interval"))
        self._callback = PeriodicCallback(self.sample, interval * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
        if self.bokeh_app is not None:
            self.bokeh_app.stop()
            self.bokeh_app = None

    # -- Dask hooks --------------------------------------------------------------------------
    def log_event(self, topic: str, msg: Any) -> None:
        feed = self._feeds.get(topic)
        if feed is not None:
            feed(msg)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish != "processing" and start != "processing":
            return
        machine = kind = None
        if finish == "processing" and self.scheduler is not None:
            ts = self.scheduler.tasks.get(key)
            if ts is not None and ts.processing_on is not None:
                machine = self.machine_of(ts.processing_on.address)
                kind = (ts.annotations or {}).get(KIND)
        self.tasks.transition(key, start, finish, machine, kind)

    # -- helpers -----------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        return self.scheduler.plugins.get(REGISTRY_NAME) if self.scheduler is not None else None

    def machine_of(self, worker: str) -> str:
        """The registry's machine id of a worker (the worker address when it has none)."""
        mid = self._machine_of.get(worker)
        if mid is None:
            registry = self.registry
            if registry is not None:
                for node in registry.machines.values():
                    for address in node.workers:
                        self._machine_of[address] = node.id
                        self.tasks.hostnames[node.id] = node.hostname
            mid = self._machine_of.setdefault(worker, worker)
        return mid

    def nodes(self) -> list[dict[str, Any]]:
        """The registry's MachineNodes as dicts (empty without a registry)."""
        registry = self.registry
        if registry is None:
            return []
        return [_as_dict(node) for node in list(registry.machines.values())]

    def sample(self) -> None:
        """One utilisation row and one task-count row (the sampling tick)."""
        if self.scheduler is None:
            return
        now = time.time()
        metrics = {address: ws.metrics for address, ws in self.scheduler.workers.items()}
        nodes = self.nodes()
        samples = {n["id"]: machine_sample(n, metrics) for n in nodes if n.get("status") != "offline"}
        self.utilisation.add(now, samples, {n["id"]: n["hostname"] for n in nodes})
        self.tasks.snapshot(now)


def _as_dict(node: Any) -> dict[str, Any]:
    """MachineNode.to_dict() without its deep copy: pages only read, and it runs every tick."""
    data = dict(vars(node))
    data["workers"] = [dict(vars(w)) for w in node.workers.values()]
    return data


def get_state(scheduler: Any) -> DashboardState | None:
    return scheduler.plugins.get(PLUGIN_NAME)

"""Adaptive host groups: a controller on the scheduler that starts and retires workers over SSH.

A worker entry of the cluster file with ``adaptive: {minimum, maximum, idle_after}`` is a host
group whose size follows the queued work. ``caelum up`` starts its ``minimum`` slots and then
registers :class:`AdaptiveHosts` on the scheduler (a Dask ``SchedulerPlugin`` that carries the
validated cluster file); ``caelum down`` stops it before stopping any process.

Why on the scheduler: the scheduler is the only process that sees the queue at every moment and
outlives ``caelum up``, so the decisions are made there, with Dask's own logic rather than ours:
:class:`Controller` is a ``distributed.deploy.adaptive_core.AdaptiveCore`` whose ``target()`` is
the scheduler's ``adaptive_target()`` (queued work and the task-duration estimates) and whose
``workers_to_close()`` is the scheduler's ``workers_to_close()`` (idle workers holding the least
data); ``AdaptiveCore.adapt()`` turns them into "up n" / "down these" recommendations. Only the
two actions are ours: :meth:`Controller.scale_up` starts ``caelum worker`` on a free slot of a
declared host through the launcher's SSH code (:class:`~caelum_dask.deploy.launcher.DetachedWorker`,
detached, with a pid file), and :meth:`Controller.scale_down` retires the workers with
``Scheduler.retire_workers`` (their data moves first) and then stops the remote processes.

Which workers may be retired is said through the plugin hook Dask consults for exactly this,
``valid_workers_downscaling``: only adaptive slots, only after ``idle_after`` seconds without a
task, and never below a group's ``minimum``. Fixed workers of the file are never touched.

Every decision is an event on the ``caelum.scaling`` topic (:data:`caelum_dask.events.SCALING`),
logged on the scheduler: ``caelum events caelum.scaling`` and the dashboard's machines page show
them.

SSH from the scheduler host uses the cluster file's ``ssh`` options as given (key paths are
expanded on the scheduler host), so the scheduler's user needs the same keys and known_hosts as
the user who ran ``caelum up`` (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

import dask.config
from dask.utils import parse_timedelta
from distributed.deploy.adaptive_core import AdaptiveCore
from distributed.diagnostics.plugin import SchedulerPlugin

from caelum_dask import events
from caelum_dask.deploy import ssh
from caelum_dask.deploy.schema import ClusterSpec, HostProcess

logger = logging.getLogger(__name__)

#: the scheduler plugin's name: one controller per scheduler
PLUGIN_NAME = "caelum-adaptive"
#: ticks a started slot may stay unseen by the scheduler before it counts as lost
LOST_AFTER_TICKS = 3


def _event(scheduler: Any, event: str, **fields: Any) -> None:
    events.emit(events.SCALING, event, sink=scheduler, **fields)


class Controller(AdaptiveCore):
    """Dask's adaptive decisions over the slots of the cluster file's adaptive groups.

    ``plan`` is every slot started or starting, ``requested`` the slots whose start finished,
    ``observed`` the slots the scheduler has as workers now (by worker name). Workers that are
    not slots (fixed entries, a worker somebody started by hand) count towards Dask's target but
    are never started or retired here.
    """

    def __init__(self, scheduler: Any, spec: ClusterSpec, interval: float, target_duration: float) -> None:
        self.groups = spec.adaptive_groups()
        super().__init__(minimum=sum(g.adaptive.minimum for g in self.groups if g.adaptive),
                         maximum=sum(g.adaptive.maximum for g in self.groups if g.adaptive),
                         wait_count=1)  # damping is idle_after (see closable), not a count of ticks
        self.scheduler = scheduler
        self.spec = spec
        self.interval = interval
        self.target_duration = target_duration
        self.slots: dict[str, tuple[HostProcess, HostProcess]] = {
            slot.name: (group, slot) for group in self.groups for slot in group.slots()}
        self.running: set[str] = set()
        self.starting: dict[str, asyncio.Task[None]] = {}
        self.stopping: set[str] = set()
        self.idle_since: dict[str, float] = {}
        self.unseen: dict[str, int] = {}
        self.loop_task: asyncio.Task[None] | None = None

    # -- AdaptiveCore's state ------------------------------------------------------------------

    @property
    def plan(self) -> set[Any]:
        return self.running | set(self.starting)

    @property
    def requested(self) -> set[Any]:
        return set(self.running)

    @property
    def observed(self) -> set[Any]:
        return {str(ws.name) for ws in self.scheduler.workers.values() if str(ws.name) in self.slots}

    def others(self) -> int:
        """Workers that are not adaptive slots (they count in Dask's target; never ours to change)."""
        return sum(1 for ws in self.scheduler.workers.values() if str(ws.name) not in self.slots)

    async def target(self) -> int:
        """Dask's target for the whole cluster, less the workers that are not slots."""
        total = self.scheduler.adaptive_target(target_duration=self.target_duration)
        return max(0, total - self.others())

    async def workers_to_close(self, target: int) -> list[Any]:
        """Dask's choice of idle workers, among the slots :meth:`closable` allows."""
        names = self.scheduler.workers_to_close(target=target + self.others(), attribute="name")
        return [str(name) for name in names if str(name) in self.slots]

    # -- which workers may go -------------------------------------------------------------------

    def closable(self, workers: Iterable[Any]) -> list[Any]:
        """The ``valid_workers_downscaling`` answer: idle slots above their group's minimum.

        A slot qualifies after ``idle_after`` seconds without a task; per group the newest slots
        go first and at most ``observed - minimum`` of them, so a group never drops below its
        minimum whatever Dask (or anybody calling ``workers_to_close``) asks for.
        """
        now = time.monotonic()
        workers = list(workers)
        allowed: set[str] = set()
        for group in self.groups:
            options = group.adaptive
            assert options is not None
            # the newest slots above the minimum, whether idle yet or not: the oldest ones (the
            # minimum, started by `caelum up`) are never the ones that go
            group_slots = sorted((str(ws.name) for ws in self.scheduler.workers.values()
                                  if self.slots.get(str(ws.name), (None,))[0] is group),
                                 key=lambda name: int(name.rsplit("-", 1)[1]), reverse=True)
            newest = group_slots[:max(0, len(group_slots) - options.minimum)]
            allowed.update(name for name in newest
                           if now - self.idle_since.get(name, now) >= options.idle_after)
        return [ws for ws in workers if str(ws.name) in allowed]

    def observe(self) -> None:
        """Once per tick: when each slot went idle, and slots that vanished without us."""
        now = time.monotonic()
        seen = set()
        for ws in self.scheduler.workers.values():
            name = str(ws.name)
            if name not in self.slots:
                continue
            seen.add(name)
            if ws.processing:
                self.idle_since.pop(name, None)
            else:
                self.idle_since.setdefault(name, now)
        for name in list(self.running - seen - self.stopping):
            self.unseen[name] = self.unseen.get(name, 0) + 1
            if self.unseen[name] >= LOST_AFTER_TICKS:
                self.running.discard(name)
                self.unseen.pop(name, None)
                _event(self.scheduler, "lost", worker=name, host=self.slots[name][1].host)
        for name in seen:
            self.unseen.pop(name, None)
            self.running.add(name)  # adopt: started by `caelum up`, or before a restart of the controller
        for name in set(self.idle_since) - seen:
            del self.idle_since[name]

    # -- the two actions ------------------------------------------------------------------------

    async def scale_up(self, n: int) -> None:
        """Start workers on free slots (file order) until ``n`` are planned; returns at once."""
        free = [name for name in self.slots if name not in self.plan and name not in self.stopping]
        chosen = free[:max(0, n - len(self.plan))]
        if not chosen:
            return
        _event(self.scheduler, "scale-up", target=n, workers=chosen, hosts=[self.slots[c][1].host for c in chosen],
               running=len(self.observed), queued=len(self.scheduler.queued) + len(self.scheduler.unrunnable))
        for name in chosen:
            self.starting[name] = asyncio.create_task(self._start(name))

    async def _start(self, name: str) -> None:
        from caelum_dask.deploy.launcher import DetachedWorker, LaunchFailed

        group, slot = self.slots[name]
        began = time.monotonic()
        worker = DetachedWorker(self.spec, slot, timeout=self.spec.join_timeout)
        try:
            await worker
            await worker.close()
        except (LaunchFailed, ssh.SSHFailure, OSError) as exc:
            _event(self.scheduler, "start-failed", worker=name, host=slot.host, reason=str(exc)[:500])
        else:
            self.running.add(name)
            _event(self.scheduler, "started", worker=name, host=slot.host, group=group.name,
                   seconds=round(time.monotonic() - began, 3), pid=worker.outcome.get("pid"))
        finally:
            self.starting.pop(name, None)

    async def scale_down(self, workers: Iterable[Any]) -> None:
        """Retire the workers through the scheduler (data moves first), then stop their processes."""
        names = [str(w) for w in workers if str(w) in self.slots and str(w) not in self.stopping]
        if not names:
            return
        self.stopping.update(names)
        try:
            _event(self.scheduler, "scale-down", workers=names, hosts=[self.slots[n][1].host for n in names],
                   running=len(self.observed),
                   idle_seconds={n: round(time.monotonic() - self.idle_since.get(n, time.monotonic()), 1)
                                 for n in names})
            await self.scheduler.retire_workers(names=names, remove=True, close_workers=True,
                                                stimulus_id=f"caelum-adaptive-{time.time()}")
            outcomes = await asyncio.gather(*(self._stop(n) for n in names), return_exceptions=True)
            for name, outcome in zip(names, outcomes):
                self.running.discard(name)
                self.idle_since.pop(name, None)
                failed = isinstance(outcome, BaseException)
                _event(self.scheduler, "stop-failed" if failed else "retired", worker=name,
                       host=self.slots[name][1].host, **({"reason": str(outcome)[:500]} if failed else {}))
        finally:
            self.stopping.difference_update(names)

    async def _stop(self, name: str) -> dict[str, Any]:
        from caelum_dask.deploy.launcher import stop_process

        return await stop_process(self.spec, self.slots[name][1])

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin deciding every ``interval`` seconds on the running event loop (the scheduler's)."""
        self.observe()
        self.loop_task = asyncio.create_task(self._loop())
        _event(self.scheduler, "controller-started", interval=self.interval, target_duration=self.target_duration,
               groups={g.name: g.adaptive.model_dump() for g in self.groups if g.adaptive},
               running=sorted(self.observed))

    async def _loop(self) -> None:
        while True:
            self.observe()
            try:
                await self.adapt()
            except Exception:  # one bad tick (an SSH hiccup) must not end the controller
                logger.warning("caelum adaptive: a scaling decision failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop deciding and abandon starts in flight (``caelum down`` stops their processes)."""
        tasks = [t for t in (self.loop_task, *self.starting.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.loop_task = None
        _event(self.scheduler, "controller-stopped", running=sorted(self.observed))


class AdaptiveHosts(SchedulerPlugin):
    """The controller as a scheduler plugin: sent by ``caelum up`` with the validated cluster file.

    The interval and target duration are resolved on the client (the cluster file's values, else
    the client's Dask config) and travel with the plugin, so the scheduler's own config does not
    change what the file's author asked for.
    """

    name = PLUGIN_NAME

    def __init__(self, spec: ClusterSpec, interval: float, target_duration: float) -> None:
        self.spec = spec
        self.interval = interval
        self.target_duration = target_duration
        self.controller: Controller | None = None

    async def start(self, scheduler: Any) -> None:
        self.controller = Controller(scheduler, self.spec, self.interval, self.target_duration)
        self.controller.start()

    def valid_workers_downscaling(self, scheduler: Any, workers: list[Any]) -> list[Any]:
        """Dask asks which workers may be retired: only the controller's idle slots (see ``closable``)."""
        if self.controller is None:
            return workers
        return self.controller.closable(workers)

    async def close(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
            self.controller = None


def plugin_for(spec: ClusterSpec) -> AdaptiveHosts:
    """The plugin ``caelum up`` registers, with the timing values resolved here on the client."""
    groups = [g.adaptive for g in spec.adaptive_groups() if g.adaptive is not None]
    interval = min((g.interval for g in groups if g.interval), default=None)
    target = min((g.target_duration for g in groups if g.target_duration), default=None)
    return AdaptiveHosts(
        spec,
        interval=interval or float(parse_timedelta(dask.config.get("distributed.adaptive.interval"))),
        target_duration=target or float(parse_timedelta(dask.config.get("distributed.adaptive.target-duration"))),
    )


async def _stop_on_scheduler(dask_scheduler: Any) -> bool:
    """Run on the scheduler: close and remove the controller; False when there was none."""
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    if plugin is None:
        return False
    await plugin.close()
    dask_scheduler.remove_plugin(name=PLUGIN_NAME)
    return True


async def start_controller(client: Any, spec: ClusterSpec) -> bool:
    """Start (or restart, with this file's values) the controller; False when nothing is adaptive."""
    if not spec.adaptive_groups():
        return False
    await client.run_on_scheduler(_stop_on_scheduler)
    await client.register_plugin(plugin_for(spec), name=PLUGIN_NAME)
    return True


async def stop_controller(client: Any) -> bool:
    """Stop the controller (``caelum down`` does this before stopping any process)."""
    return bool(await client.run_on_scheduler(_stop_on_scheduler))


__all__ = ["PLUGIN_NAME", "AdaptiveHosts", "Controller", "plugin_for", "start_controller", "stop_controller"]

"""The machine registry: a SchedulerPlugin that turns Dask workers into MachineNodes.

Dask knows workers; people think in machines. The registry groups the workers of one host
into one :class:`~caelum_dask.machine.MachineNode`, derives its status from Dask's own
heartbeats (``WorkerState.last_seen``) and task load, keeps machines that left as offline
history, and holds the per-machine service/port table. Clients read it through the
``caelum_machines`` scheduler handler (see :func:`caelum_dask.machines`); changes are
published on the ``caelum.machines`` event topic. Desktop workers (caelum_dask.desktop) tell it
through ``caelum_owner`` when their owner comes and goes; the machine then shows
``owner-active``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import dask.config
from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from caelum_dask import config, desktop, events, machine_share
from caelum_dask.errors import PortTaken
from caelum_dask.machine import MachineNode, WorkerEntry, machine_id
from caelum_dask.worker import METRICS_KEY, STARTUP_KEY

logger = logging.getLogger(__name__)

PLUGIN_NAME = "caelum-machine-registry"


class MachineRegistry(SchedulerPlugin):
    """Machines of the cluster, kept on the scheduler."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.machines: dict[str, MachineNode] = {}
        self._machine_of_worker: dict[str, str] = {}
        self._services_of_worker: dict[str, list[str]] = {}
        self.scheduler: Any = None
        self._callback: PeriodicCallback | None = None
        self._watchdog: SilentWorkerWatchdog | None = None
        #: machine id -> when its desktop supervisor last said the owner is active
        self._owner_active: dict[str, float] = {}
        #: machines whose closed workers could not retire yet (said once, retried quietly)
        self._owner_held: set[str] = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["caelum_machines"] = self.handle_machines
        scheduler.handlers["caelum_register_service"] = self.handle_register_service
        scheduler.handlers["caelum_release_service"] = self.handle_release_service
        scheduler.handlers[machine_share.HANDLER] = self.handle_resource_share
        scheduler.handlers[desktop.HANDLER] = self.handle_owner
        for address in list(scheduler.workers):
            self.add_worker(scheduler, address)
        interval = dask.utils.parse_timedelta(config.get("registry.check-interval"))
        self._callback = PeriodicCallback(self.check_heartbeats, interval * 1000)
        self._callback.start()
        self._watchdog = SilentWorkerWatchdog.from_config(scheduler)
        if self._watchdog is not None:
            self._watchdog.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()
        if self._watchdog is not None:
            self._watchdog.stop()

    # -- Dask hooks --------------------------------------------------------------------------
    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is None:
            return
        description: dict[str, Any] = dict(ws.extra.get(STARTUP_KEY) or {})
        hostname = description.get("hostname") or ws.host
        mid = machine_id(hostname, ws.host)
        node = self.machines.get(mid)
        was_offline = node is None or node.status == "offline"
        if node is None:
            node = MachineNode(
                id=mid,
                hostname=hostname,
                ip_address=ws.host,
                platform=description.get("platform", "unknown"),
                os=description.get("os", "unknown"),
                python=description.get("python", "unknown"),
                resources=description.get("resources") or _resources_from_worker(ws),
                first_seen=time.time(),
                caelum_version=description.get("caelum_version"),
            )
            self.machines[mid] = node
        elif description:
            node.resources = description.get("resources", node.resources)
            node.caelum_version = description.get("caelum_version", node.caelum_version)
        entry = WorkerEntry(
            address=worker,
            name=str(ws.name),
            nthreads=ws.nthreads,
            memory_limit=ws.memory_limit,
            resources=dict(ws.resources),
            gpu_indices=list(description.get("gpu_indices", [])),
            slot=description.get("slot"),
            slots=description.get("slots"),
            explicit=list(description.get(machine_share.EXPLICIT_KEY) or []),
        )
        node.workers[worker] = entry
        self._machine_of_worker[worker] = mid
        self._register_worker_services(node, ws, entry)
        node.last_heartbeat = ws.last_seen
        node.status = "online"
        if was_offline:
            self._emit("machine-online", node, worker=worker)
        else:
            self._emit("worker-joined", node, worker=worker)

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        mid = self._machine_of_worker.pop(worker, None)
        node = self.machines.get(mid) if mid else None
        if node is None:
            return
        node.workers.pop(worker, None)
        for name in self._services_of_worker.pop(worker, []):
            node.services.pop(name, None)
        if node.workers or node.id in self._owner_active:
            self._emit("worker-left", node, worker=worker)
        else:
            self._set_status(node, "offline", reason="last worker left")

    # -- status from heartbeats ----------------------------------------------------------------
    def check_heartbeats(self) -> None:
        if self.scheduler is None:
            return
        offline_after = dask.utils.parse_timedelta(config.get("registry.offline-after"))
        keep = dask.utils.parse_timedelta(config.get("registry.keep-offline"))
        now = time.time()
        for node in list(self.machines.values()):
            states = [self.scheduler.workers.get(a) for a in node.workers]
            states = [ws for ws in states if ws is not None]
            if states:
                node.last_heartbeat = max(ws.last_seen for ws in states)
                self._update_gpu_readings(node, states)
            if self._owner_still_active(node, now, offline_after):
                self._set_status(node, "owner-active")
                continue
            silent = not states or bool(
                node.last_heartbeat and now - node.last_heartbeat > offline_after
            )
            if node.status == "offline" and silent:
                if node.last_heartbeat and now - node.last_heartbeat > keep:
                    del self.machines[node.id]
                continue
            if silent:
                self._set_status(node, "offline", reason="missed heartbeats")
            elif any(ws.processing for ws in states):
                self._set_status(node, "busy")
            else:
                self._set_status(node, "online")

    def _update_gpu_readings(self, node: MachineNode, states: list[Any]) -> None:
        readings = {}
        for ws in states:
            for gpu in (ws.metrics or {}).get(METRICS_KEY) or []:
                readings[gpu["index"]] = gpu
        if readings:
            node.resources["gpus"] = [
                {**gpu, **readings.get(gpu["index"], {})} for gpu in node.resources.get("gpus", [])
            ]

    def _set_status(self, node: MachineNode, status: str, reason: str | None = None) -> None:
        if node.status == status:
            return
        previous = node.status
        node.status = status  # type: ignore[assignment]
        fields = {"previous": previous}
        if reason:
            fields["reason"] = reason
        self._emit(f"machine-{status}", node, **fields)

    def _emit(self, event: str, node: MachineNode, **fields: Any) -> None:
        if self.scheduler is None:
            return
        events.emit(
            events.MACHINES,
            event,
            sink=self.scheduler,
            machine=node.id,
            hostname=node.hostname,
            ip_address=node.ip_address,
            status=node.status,
            **fields,
        )

    # -- services and ports --------------------------------------------------------------------
    def _register_worker_services(self, node: MachineNode, ws: Any, entry: WorkerEntry) -> None:
        label = f"{entry.slot}" if entry.slot is not None else entry.name
        ports = {f"worker-{label}": int(ws.address.rsplit(":", 1)[-1])}
        if ws.nanny:
            ports[f"nanny-{label}"] = int(ws.nanny.rsplit(":", 1)[-1])
        for service, port in (ws.services or {}).items():
            ports[f"{service}-{label}"] = int(port)
        for name, port in ports.items():
            try:
                self.register_service(node.id, name, port)
            except PortTaken as exc:  # a stale entry from a worker that died uncleanly
                logger.warning("%s", exc)
            else:
                self._services_of_worker.setdefault(ws.address, []).append(name)

    def register_service(self, machine: str, name: str, port: int) -> None:
        """Record that ``name`` listens on ``port`` of ``machine``; refuse a taken port."""
        node = self.machines.get(machine)
        if node is None:
            raise PortTaken(f"unknown machine {machine!r}: no worker of it has joined the cluster")
        for other, taken in node.services.items():
            if taken == port and other != name:
                raise PortTaken(
                    f"port {port} on {node.hostname} ({node.ip_address}) is already used by "
                    f"{other!r}; choose another port for {name!r}"
                )
        node.services[name] = int(port)

    def handle_register_service(self, machine: str, name: str, port: int) -> dict[str, Any]:
        try:
            self.register_service(machine, name, port)
        except PortTaken as exc:
            return {"status": "error", "message": str(exc)}
        return {"status": "OK"}

    def handle_release_service(self, machine: str, name: str) -> dict[str, Any]:
        node = self.machines.get(machine)
        if node is not None:
            node.services.pop(name, None)
        return {"status": "OK"}

    def handle_machines(self) -> list[dict[str, Any]]:
        self.check_heartbeats()
        self._refresh_worker_resources()
        return [node.to_dict() for node in self.machines.values()]

    # -- desktop owners (see caelum_dask.desktop) ----------------------------------------------
    async def handle_owner(self, hostname: str, pids: list[int], active: bool, grace: float = 0.0,
                           machine: str | None = None) -> dict[str, Any]:
        """A desktop supervisor says its machine's owner is active (or away again).

        Its workers are found by host name and process ids (the supervisor knows its worker's
        process tree, not the addresses Dask gave it). Active: the workers take no new task from
        this moment, the machine shows ``owner-active``, running tasks get ``grace`` seconds and
        Dask's ``retire_workers`` moves their results away; the reply says what happened. The
        mark is kept while the supervisor keeps repeating it and expires after
        ``registry.offline-after`` without news (a supervisor that died). Away: the mark goes,
        workers still closed are opened again.
        """
        workers = self._workers_of_processes(hostname, set(pids))
        mid = self._machine_of_worker.get(workers[0]) if workers else machine
        node = self.machines.get(mid or "")
        if not active:
            return await self._owner_away(node, mid, workers)
        if node is not None:
            self._owner_active[node.id] = time.time()
            desktop.close_to_new_tasks(self.scheduler, workers, f"caelum-owner-active-{time.time()}")
            self._set_status(node, "owner-active", reason="owner active")
        reply: dict[str, Any] = {"machine": mid, "workers": workers, "retired": [], "held": []}
        if workers:
            outcome = await desktop.retire_for_owner(self.scheduler, workers, grace,
                                                     drain=node is None or node.id not in self._owner_held)
            reply.update(outcome)
            if node is not None:
                self._owner_outcome(node, outcome)
        return reply

    def _owner_outcome(self, node: MachineNode, outcome: dict[str, Any]) -> None:
        """One event per retirement; a blocked one (results with nowhere to go) is said once."""
        if outcome["retired"]:
            self._owner_held.discard(node.id)
            self._emit("owner-retired", node, **outcome)
        elif outcome["held"] and node.id not in self._owner_held:
            self._owner_held.add(node.id)
            self._emit("owner-retire-blocked", node, **outcome)

    async def _owner_away(self, node: MachineNode | None, mid: str | None, workers: list[str]) -> dict[str, Any]:
        reopened = await desktop.reopen(self.scheduler, workers)
        if node is not None:
            self._owner_held.discard(node.id)
        if node is not None and self._owner_active.pop(node.id, None) is not None:
            self._emit("owner-away", node, workers=reopened)
            self._set_status(node, "online" if node.workers else "offline", reason="owner away")
        return {"machine": mid, "workers": workers, "reopened": reopened}

    def _workers_of_processes(self, hostname: str, pids: set[int]) -> list[str]:
        if self.scheduler is None or not pids:
            return []
        found = []
        for address, ws in self.scheduler.workers.items():
            node = self.machines.get(self._machine_of_worker.get(address, ""))
            if node is not None and node.hostname == hostname and ws.pid in pids:
                found.append(address)
        return sorted(found)

    def _owner_still_active(self, node: MachineNode, now: float, offline_after: float) -> bool:
        said = self._owner_active.get(node.id)
        if said is None:
            return False
        if now - said > offline_after:  # its supervisor stopped repeating it
            del self._owner_active[node.id]
            return False
        return True

    # -- one machine, one budget (see caelum_dask.machine_share) ------------------------------
    def handle_resource_share(self, address: str) -> dict[str, float] | None:
        """The share of its machine the caelum worker at ``address`` should advertise.

        None when the worker is unknown, not a caelum worker, or its machine is described by
        no caelum worker (nothing detected to split).
        """
        node = self.machines.get(self._machine_of_worker.get(address, ""))
        if node is None or not node.resources.get("cpu_cores"):
            return None
        members = [machine_share.Member(e.address, e.slot, e.slots or 1)
                   for e in node.workers.values() if e.slot is not None]
        if not any(m.address == address for m in members):
            return None
        machine = machine_share.machine_from_dict(node.resources)
        return machine_share.shares_for_machine(machine, members).get(address)

    def _refresh_worker_resources(self) -> None:
        """Entries show what workers advertise now (a re-split changes it after joining)."""
        if self.scheduler is None:
            return
        for node in self.machines.values():
            for address, entry in node.workers.items():
                ws = self.scheduler.workers.get(address)
                if ws is not None:
                    entry.resources = dict(ws.resources)


class SilentWorkerWatchdog:
    """Removes a hung or cut-off worker within seconds instead of Dask's worker-ttl.

    Only missed heartbeats tell a hung machine (SIGSTOP, a frozen VM, a pulled cable) from a
    busy one: no socket closes. Dask waits ``worker-ttl`` (never less than 10 heartbeats).
    Here a worker silent for ``registry.silent-after`` is pinged on a fresh connection — its
    nanny when it has one, a separate process that stays responsive while the worker holds the
    GIL — and removed only if the ping also goes unanswered for ``registry.ping-timeout``. When
    every worker is silent at once nothing is removed: that is the scheduler's own stall (an
    overloaded box), not all machines hanging together. Removal is Dask's own
    ``Scheduler.remove_worker``: its tasks are rescheduled and its results recomputed elsewhere.
    """

    def __init__(self, scheduler: Any, silent_after: float, ping_timeout: float, interval: float) -> None:
        self.scheduler = scheduler
        self.silent_after = silent_after
        self.ping_timeout = ping_timeout
        self._pinging: set[str] = set()
        self._answered: set[str] = set()
        self._callback = PeriodicCallback(self.check, interval * 1000)

    @classmethod
    def from_config(cls, scheduler: Any) -> SilentWorkerWatchdog | None:
        silent = config.get("registry.silent-after")
        if silent is None:
            return None
        seconds = dask.utils.parse_timedelta
        return cls(scheduler, seconds(silent), seconds(config.get("registry.ping-timeout")),
                   seconds(config.get("registry.silent-check-interval")))

    def start(self) -> None:
        self._callback.start()

    def stop(self) -> None:
        self._callback.stop()

    def check(self) -> None:
        now = time.time()
        workers = list(self.scheduler.workers.items())
        silent = [(a, ws) for a, ws in workers if now - ws.last_seen > self.silent_after]
        self._answered.intersection_update(a for a, _ in silent)  # heard from again: a new episode later
        if not silent or len(silent) == len(workers):
            return  # everyone silent at once: the scheduler's side (or the whole box) stalled
        for address, ws in silent:
            if address not in self._pinging:
                self._pinging.add(address)
                asyncio.ensure_future(self._ping_or_remove(address, ws.nanny, now - ws.last_seen))

    async def _ping_or_remove(self, address: str, nanny: str | None, silent: float) -> None:
        # The nanny, when there is one, is a separate and nearly idle process: it answers even
        # while the worker's own event loop waits for a long GIL-holding call (a C parser, a
        # big numpy op). Only a stopped or unreachable machine leaves both silent.
        try:
            await asyncio.wait_for(self.scheduler.rpc(nanny or address).identity(), self.ping_timeout)
            if address not in self._answered:  # slow, not gone: said once per silent spell
                self._answered.add(address)
                events.emit(events.MACHINES, "worker-slow", sink=self.scheduler, worker=address,
                            silent=round(silent, 2), answered_by="nanny" if nanny else "worker")
            return
        except Exception:  # timeout, refused, reset: nobody answers
            pass
        finally:
            self._pinging.discard(address)
        if address not in self.scheduler.workers:
            return
        logger.warning("caelum: worker %s silent for %.1fs and not answering; removing it", address, silent)
        events.emit(events.MACHINES, "worker-silent", sink=self.scheduler, worker=address, silent=round(silent, 2))
        await self.scheduler.remove_worker(address, stimulus_id=f"caelum-silent-worker-{time.time()}", close=False)


def _resources_from_worker(ws: Any) -> dict[str, Any]:
    """What a worker without the caelum preload tells us about its machine."""
    return {
        "cpu_cores": ws.nthreads,
        "memory_gb": round(ws.memory_limit / 1024**3, 2) if ws.memory_limit else None,
        "gpus": [],
        "disk_space_gb": None,
    }

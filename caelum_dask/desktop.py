"""Owner-aware desktop workers: lend a workstation's cores only while its owner is away.

Why: the machines of a developer cluster are people's workstations. HTCondor's desktop
policies (START when the keyboard has been idle a while, SUSPEND/PREEMPT when the owner comes
back) are what makes lending a desktop acceptable to its owner; Dask has the other half,
``Scheduler.retire_workers``, which moves every result only the leaving worker holds to other
workers before it goes. ``caelum worker ADDRESS --policy desktop`` joins the two:

* :class:`DesktopSupervisor` runs in the ``caelum worker`` process. It starts the ordinary
  ``dask worker`` (with the caelum preloads) as a child and samples, every
  ``caelum.desktop.sample-interval``, the CPU used by every process that is NOT that child's
  tree (:class:`OwnerSampler`) and, where an X display tells, the keyboard/mouse idle time.
* The owner is active (:class:`OwnerWatch`) when that CPU stays at or above
  ``caelum.desktop.owner-cpu`` cores for ``active-after``, or input was used within
  ``active-after``; away again when both have been quiet for ``away-after``.
* Owner active: the supervisor calls the registry's ``caelum_owner`` scheduler handler. The
  scheduler closes the worker to new tasks at once (Dask's ``closing_gracefully`` status, the
  first step of ``retire_workers``), shows the machine ``owner-active`` (registry, ``caelum
  status``, ``caelum.machines`` events, dashboard), lets running tasks finish for up to
  ``grace`` (:func:`retire_for_owner`), then calls Dask's own ``retire_workers(close_workers=
  True)``: results held only there are replicated elsewhere by the active memory manager, tasks
  not started are rescheduled, and the worker process exits.
* Owner away for ``away-after``: the supervisor starts the worker again; the machine rejoins
  without anybody touching it.

Nothing computed is lost: a result is dropped from the leaving worker only once another worker
holds it. When no other worker can take it (this is the only worker, or all others are closing
too) Dask aborts the retirement; the worker then stays closed to new tasks, holding its results
but computing nothing, and retirement is retried every sample until it succeeds or the owner
leaves again (then it simply reopens).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import psutil
from dask.utils import parse_timedelta

from caelum_dask import proctree
from caelum_dask.errors import InvalidInput
from caelum_dask.options import ConfiguredOptions
from caelum_dask.progress import ProgressCallback, reporter

#: the registry's scheduler handler (caelum_dask.registry.MachineRegistry.handle_owner)
HANDLER = "caelum_owner"
POLICIES = ("always", "desktop")
#: seconds between two looks of a closing worker at its running tasks (an internal poll, not a
#: policy: the grace period is what the owner configures)
DRAIN_POLL = 0.05
#: a process younger than this may still show its parent's command line (fork before exec):
#: its owner/not-owner verdict is re-read instead of cached
_SETTLE_SECONDS = 1.0


@dataclass
class DesktopOptions(ConfiguredOptions):
    """How ``caelum worker`` lends this machine (``--policy`` and the threshold flags).

    Durations may be given as Dask duration strings ("2s", "500ms", "5m") or seconds;
    :meth:`checked` turns them into seconds and refuses bad values with one line each.
    """

    CONFIG: ClassVar[Mapping[str, str]] = {
        "policy": "desktop.policy", "owner_cpu": "desktop.owner-cpu",
        "active_after": "desktop.active-after", "away_after": "desktop.away-after",
        "grace": "desktop.grace", "sample_interval": "desktop.sample-interval",
        "owner_match": "desktop.owner-match", "input_idle": "desktop.input-idle",
        "leave_timeout": "desktop.leave-timeout",
    }

    policy: str | None = None
    owner_cpu: float | None = None
    active_after: float | str | None = None
    away_after: float | str | None = None
    grace: float | str | None = None
    sample_interval: float | str | None = None
    owner_match: str | None = None
    input_idle: bool | None = None
    leave_timeout: float | str | None = None

    #: the fields that only mean something with the desktop policy (the CLI's threshold flags)
    THRESHOLDS: ClassVar[tuple[str, ...]] = (
        "owner_cpu", "active_after", "away_after", "grace", "sample_interval", "owner_match",
    )

    def checked(self) -> DesktopOptions:
        """A resolved copy with durations in seconds; InvalidInput names the first bad value."""
        options = self.resolved()
        if options.policy not in POLICIES:
            raise InvalidInput(f"unknown --policy {options.policy!r}; use one of {', '.join(POLICIES)}")
        seconds: dict[str, float] = {}
        for name in ("active_after", "away_after", "grace", "sample_interval", "leave_timeout"):
            seconds[name] = _seconds(name, getattr(options, name))
        if seconds["sample_interval"] <= 0:
            raise InvalidInput(f"--sample-interval must be more than 0 (got {options.sample_interval!r})")
        try:
            owner_cpu = float(options.owner_cpu)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInput(f"--owner-cpu must be a number of cores, e.g. 0.5 (got {options.owner_cpu!r})") from None
        if owner_cpu <= 0:
            raise InvalidInput(f"--owner-cpu must be more than 0 cores (got {owner_cpu:g})")
        if options.owner_match:
            try:
                re.compile(options.owner_match)
            except re.error as exc:
                raise InvalidInput(f"--owner-match is not a regular expression ({exc})") from None
        return replace(options, owner_cpu=owner_cpu, input_idle=bool(options.input_idle), **seconds)


def _seconds(name: str, value: Any) -> float:
    flag = "--" + name.replace("_", "-")
    try:
        seconds = float(parse_timedelta(value))
    except (TypeError, ValueError, KeyError):
        raise InvalidInput(f"{flag} must be a duration such as 2s, 500ms or 5m (got {value!r})") from None
    if seconds < 0:
        raise InvalidInput(f"{flag} must not be negative (got {value!r})")
    return seconds


def options_from_cli(**given: Any) -> DesktopOptions:
    """The worker command's options: what was typed, the rest from ``caelum.desktop.*``.

    Threshold flags with the ``always`` policy are refused: they would silently do nothing.
    """
    options = DesktopOptions.from_config(**given).checked()
    if options.policy != "desktop":
        typed = [name for name in DesktopOptions.THRESHOLDS if given.get(name) is not None]
        if typed:
            flags = ", ".join("--" + name.replace("_", "-") for name in typed)
            raise InvalidInput(f"{flags}: only with --policy desktop (or caelum.desktop.policy: desktop)")
    return options


# -- what the owner does -----------------------------------------------------------------------
class OwnerSampler:
    """CPU used by the owner's processes: every process but ``root``'s tree and this job's.

    Measured per process from its CPU times (user + system) between two samples and divided by
    the wall time between them, so the figure is in cores (1.0 = one core fully busy) on any
    machine. A process started between two samples counts with all its CPU time, so short
    compiler runs are seen too. Excluded: ``root`` and its live descendants (the supervisor and
    its worker), processes carrying this caelum command's job marker (a task's helpers that left
    the tree) and, with ``match``, every process whose command line does not match it.
    """

    def __init__(self, match: str | None = None, root: int | None = None, marker: str | None = None) -> None:
        self.pattern = re.compile(match) if match else None
        self.root = root if root is not None else os.getpid()
        self.marker = marker if marker is not None else _own_job_marker()
        self._cpu: dict[tuple[int, float], float] = {}
        self._owner: dict[tuple[int, float], bool] = {}
        self._at: float | None = None  # monotonic time of the previous sample
        self._wall: float = 0.0  # wall-clock time of the previous sample (process create times are wall-clock)

    def sample(self) -> float:
        """Cores the owner used since the previous call (0.0 on the first call: the baseline)."""
        now, wall = time.monotonic(), time.time()
        ours = {proc.pid for proc in proctree.tree(self.root)}
        current: dict[tuple[int, float], float] = {}
        used = 0.0
        for proc in psutil.process_iter():
            if proc.pid in ours or proc.pid == 0:  # pid 0: the idle "process" on some platforms
                continue
            reading = self._read(proc)
            if reading is None:
                continue
            key, cpu = reading
            current[key] = cpu
            if key in self._cpu:
                used += max(0.0, cpu - self._cpu[key])
            elif self._at is not None and key[1] >= self._wall:
                used += cpu  # started since the previous sample: all of its time is new
        previous = self._at
        self._cpu, self._at, self._wall = current, now, wall
        self._owner = {key: verdict for key, verdict in self._owner.items() if key in current}
        if previous is None or now <= previous:
            return 0.0
        return used / (now - previous)

    def _read(self, proc: psutil.Process) -> tuple[tuple[int, float], float] | None:
        try:
            with proc.oneshot():
                key = (proc.pid, proc.create_time())
                if not self._is_owner(proc, key):
                    return None
                times = proc.cpu_times()
        except (psutil.Error, OSError):
            return None
        return key, times.user + times.system

    def _is_owner(self, proc: psutil.Process, key: tuple[int, float]) -> bool:
        cached = self._owner.get(key)
        if cached is not None:
            return cached
        verdict = not self._marked_ours(proc)
        if verdict and self.pattern is not None:
            try:
                verdict = bool(self.pattern.search(" ".join(proc.cmdline())))
            except (psutil.Error, OSError):
                verdict = False
        if time.time() - key[1] > _SETTLE_SECONDS:
            self._owner[key] = verdict
        return verdict

    def _marked_ours(self, proc: psutil.Process) -> bool:
        if not self.marker:
            return False
        try:
            return self.marker in proc.environ().get(proctree.JOB_ENV, "").split(":")
        except (psutil.Error, OSError):  # another user's process: not ours
            return False


def _own_job_marker() -> str | None:
    """This caelum command's job marker (the last one: nested commands append theirs)."""
    value = os.environ.get(proctree.JOB_ENV, "")
    return value.split(":")[-1] or None


class InputIdle:
    """Seconds since the last keyboard/mouse input, where the platform tells (else None).

    Only an X display is read, with ``xprintidle`` or ``xssstate -i`` when one is installed and
    ``DISPLAY`` is set. Without them (Wayland, a server, macOS, Windows) the policy is CPU only;
    docs/desktop.md says so.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.command: list[str] | None = None
        if enabled and os.environ.get("DISPLAY"):
            for tool, args in (("xprintidle", []), ("xssstate", ["-i"])):
                path = shutil.which(tool)
                if path:
                    self.command = [path, *args]
                    break

    def seconds(self) -> float | None:
        if self.command is None:
            return None
        try:
            done = subprocess.run(self.command, capture_output=True, text=True, timeout=2, check=True)
            return int(done.stdout.strip()) / 1000.0
        except (OSError, subprocess.SubprocessError, ValueError):
            return None


@dataclass
class OwnerWatch:
    """HTCondor-style owner state from samples: active after a busy streak, away after a quiet one.

    Active when the owner's CPU stayed at or above ``owner_cpu`` cores for ``active_after``, or
    input happened within ``active_after``; once active, away only when the CPU has been below
    the threshold for ``away_after`` and (where input is known) nobody touched the keyboard or
    mouse for ``away_after``. The gap between the two is the hysteresis that keeps a worker from
    flapping in and out while its owner thinks.
    """

    owner_cpu: float
    active_after: float
    away_after: float
    active: bool = False
    busy_since: float | None = None
    quiet_since: float | None = None
    last_cpu: float = 0.0

    def update(self, now: float, cpu: float, input_idle: float | None = None) -> bool:
        """Feed one sample (monotonic time, cores, input idle seconds); returns whether active."""
        self.last_cpu = cpu
        if cpu >= self.owner_cpu:
            self.busy_since = now if self.busy_since is None else self.busy_since
            self.quiet_since = None
        else:
            self.quiet_since = now if self.quiet_since is None else self.quiet_since
            self.busy_since = None
        if not self.active:
            busy = self.busy_since is not None and now - self.busy_since >= self.active_after
            typing = input_idle is not None and input_idle < self.active_after
            self.active = busy or typing
        else:
            quiet = self.quiet_since is not None and now - self.quiet_since >= self.away_after
            untouched = input_idle is None or input_idle >= self.away_after
            self.active = not (quiet and untouched)
        return self.active


# -- the scheduler's side (called by the registry's caelum_owner handler) ----------------------
def close_to_new_tasks(scheduler: Any, addresses: list[str], stimulus_id: str) -> None:
    """Stop the scheduler from giving these workers new tasks, at once.

    Dask's ``closing_gracefully`` status, set on the scheduler's side exactly as
    ``Scheduler.retire_workers`` does first (public ``handle_worker_status_change``); the worker
    learns it from :func:`_close_and_drain`.
    """
    from distributed.core import Status

    for address in addresses:
        if address in scheduler.workers:
            scheduler.handle_worker_status_change(Status.closing_gracefully, address, stimulus_id)


async def retire_for_owner(scheduler: Any, addresses: list[str], grace: float, drain: bool = True) -> dict[str, Any]:
    """Let running tasks finish (up to ``grace`` seconds), then Dask's ``retire_workers``.

    Returns ``{"retired", "held", "moved", "still_running", "waited"}``: the workers that left;
    those that stay closed because their results had nowhere to go; how many results only they
    held (replicated elsewhere before they left); how many tasks were still running when the
    grace period ran out (rescheduled elsewhere by Dask); and the seconds spent waiting.
    ``drain=False`` (a retry of a blocked retirement) skips the wait: they are closed already.
    Dask is not asked at all while no open worker could receive a result only these hold — it
    would refuse (and log it) every time the supervisor retries.
    """
    from distributed.protocol.pickle import dumps

    stimulus_id = f"caelum-owner-active-{time.time()}"
    close_to_new_tasks(scheduler, addresses, stimulus_id)
    started = time.monotonic()
    replies: dict[str, Any] = {}
    if drain:
        replies = await scheduler.broadcast(
            msg={"op": "run", "function": dumps(_close_and_drain), "args": dumps((float(grace), DRAIN_POLL)),
                 "kwargs": dumps({}), "wait": True},
            workers=addresses, on_error="return",
        )
    waited = time.monotonic() - started
    present = [a for a in addresses if a in scheduler.workers]
    moved = sum(1 for a in present for ts in scheduler.workers[a].has_what if len(ts.who_has or ()) == 1)
    receivers = [ws for ws in scheduler.running if ws.address not in present]
    retired: dict[str, Any] = {}
    if present and (receivers or not moved):
        retired = await scheduler.retire_workers(workers=present, close_workers=True, remove=True,
                                                 stimulus_id=stimulus_id)
    return {
        "retired": sorted(retired),
        "held": sorted(set(present) - set(retired)),
        "moved": moved,
        "still_running": sum(_reply_count(reply) for reply in replies.values()),
        "waited": round(waited, 3),
    }


def _reply_count(reply: Any) -> int:
    """The count a worker's ``run`` reply carries (0 for an error or an unreadable reply)."""
    if not isinstance(reply, dict) or reply.get("status") != "OK":
        return 0
    value = reply.get("result")
    value = getattr(value, "data", value)  # a to_serialize() wrapper that travelled as is
    return value if isinstance(value, int) else 0


async def reopen(scheduler: Any, addresses: list[str]) -> list[str]:
    """Open closed workers to new tasks again (the owner left before they could retire)."""
    from distributed.protocol.pickle import dumps

    present = [a for a in addresses if a in scheduler.workers]
    if present:
        await scheduler.broadcast(
            msg={"op": "run", "function": dumps(_reopen), "args": dumps(()), "kwargs": dumps({}), "wait": True},
            workers=present, on_error="return",
        )
    return present


# -- the worker's side (run in the worker process through Dask's "run" handler) ----------------
async def _close_and_drain(grace: float, poll: float, dask_worker: Any) -> int:
    """Take no new task (the worker's own status setter tells the scheduler), wait for running ones.

    Returns how many tasks were still running when ``grace`` ran out.
    """
    from distributed.core import Status

    if dask_worker.status in (Status.running, Status.paused):
        dask_worker.status = Status.closing_gracefully
    deadline = time.monotonic() + grace
    while _running_tasks(dask_worker) and time.monotonic() < deadline:
        await asyncio.sleep(poll)
    return _running_tasks(dask_worker)


def _running_tasks(dask_worker: Any) -> int:
    state = dask_worker.state
    return len(state.executing) + len(state.long_running)


def _reopen(dask_worker: Any) -> bool:
    from distributed.core import Status

    if dask_worker.status == Status.closing_gracefully:
        dask_worker.status = Status.running
        return True
    return False


# -- the supervisor in the `caelum worker` process ---------------------------------------------
class DesktopSupervisor:
    """Starts the worker while the owner is away, retires it when the owner comes back.

    ``argv`` is the full command of the worker process (``python -m distributed.cli.dask_worker
    …``); ``address`` the scheduler's; ``connection_args`` Dask's, for TLS clusters.
    """

    def __init__(self, argv: list[str], address: str, options: DesktopOptions, *,
                 connection_args: dict[str, Any] | None = None, progress: ProgressCallback | None = None) -> None:
        self.argv = argv
        self.address = address
        self.options = options
        self.connection_args = connection_args or {}
        self.say = reporter("desktop", progress)
        self.sampler = OwnerSampler(options.owner_match)
        self.input = InputIdle(bool(options.input_idle))
        self.watch = OwnerWatch(float(options.owner_cpu), float(options.active_after),  # type: ignore[arg-type]
                                float(options.away_after))  # type: ignore[arg-type]
        self.child: subprocess.Popen[bytes] | None = None
        self.machine: str | None = None  # the registry's id of this machine, once known
        self.marked = False  # the registry shows this machine owner-active
        self.closing_since: float | None = None
        self.retired_at: float | None = None
        self.held = False  # closed, but its results have nowhere to go yet
        self._rpc: Any = None
        self._said_problem: str | None = None

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> int:
        """Supervise until the worker ends on its own (scheduler gone, killed): its exit code."""
        from distributed.core import rpc

        self._rpc = rpc(self.address, connection_args=self.connection_args)
        self.sampler.sample()  # baseline
        how = "CPU and keyboard/mouse idle time" if self.input.command else "CPU only"
        self.say(f"desktop policy: owner active above {self.options.owner_cpu:g} cores for "
                 f"{self.options.active_after:g}s, away after {self.options.away_after:g}s ({how})")
        try:
            while True:
                code = await self.step()
                if code is not None:
                    return code
                await asyncio.sleep(float(self.options.sample_interval))  # type: ignore[arg-type]
        finally:
            await self._rpc.close_rpc()

    async def step(self) -> int | None:
        """One sample and what follows from it; an exit code when the worker ended on its own."""
        active = self.watch.update(time.monotonic(), self.sampler.sample(), self.input.seconds())
        child = self.child
        if child is not None and child.poll() is not None:
            if self.retired_at is None and not self.marked:
                return child.returncode
            self.child, self.retired_at, self.closing_since, self.held = None, None, None, False
            self.say("worker left; waiting for the owner to be away")
        if active:
            await self._owner_active()
        else:
            await self._owner_away()
        return None

    async def _owner_active(self) -> None:
        if self.child is None:
            if self.marked:
                await self._tell(active=True)  # keep the registry's owner-active mark fresh
            return
        if self.retired_at is not None:  # retired: waiting for the process to exit
            if time.monotonic() - self.retired_at > float(self.options.leave_timeout):  # type: ignore[arg-type]
                self.say("worker retired but still running: terminating it")
                self.stop_child()
            return
        if self.closing_since is None:
            self.closing_since = time.monotonic()
            self.say(f"owner active ({self.watch.last_cpu:.2f} cores): taking no new tasks, "
                     f"running ones may finish within {self.options.grace:g}s")
        left = max(0.0, float(self.options.grace) - (time.monotonic() - self.closing_since))  # type: ignore[arg-type]
        reply = await self._tell(active=True, grace=left)
        if reply and reply.get("workers") and not reply.get("held"):
            self.retired_at = time.monotonic()
            self.say(f"retired: {reply.get('moved', 0)} results moved to other workers, "
                     f"{reply.get('still_running', 0)} unfinished tasks rescheduled")
        elif reply and reply.get("held") and not self.held:
            self.held = True
            self.say("no other worker can take this worker's results yet: it stays closed to new "
                     "tasks, holding them, and retires as soon as one can")

    async def _owner_away(self) -> None:
        if self.marked:
            reply = await self._tell(active=False)
            if reply is not None:
                self.closing_since, self.held = None, False
                if reply.get("reopened"):
                    self.say("owner away: worker open to new tasks again")
        if self.child is None:  # also when the scheduler missed that: its mark expires by itself
            self.say("owner away: joining the cluster")
            self.child = subprocess.Popen(self.argv)

    async def _tell(self, active: bool, grace: float = 0.0) -> dict[str, Any] | None:
        """Call the registry's owner handler; None when the scheduler cannot be reached."""
        pids = [proc.pid for proc in proctree.tree(self.child.pid)] if self.child is not None else []
        try:
            reply: dict[str, Any] = await self._rpc.caelum_owner(
                hostname=socket.gethostname(), pids=pids, active=active, grace=grace, machine=self.machine)
        except Exception as exc:  # unreachable, or not a caelum scheduler (no handler): say so once, go on
            problem = f"cannot tell the scheduler that the owner is {'active' if active else 'away'}: {exc}"
            if problem != self._said_problem:
                self._said_problem = problem
                self.say(problem)
            return None
        self._said_problem = None
        self.machine = reply.get("machine") or self.machine
        self.marked = active and self.machine is not None
        return reply

    def stop_child(self) -> None:
        """Terminate the worker process (SIGTERM: Dask closes it), kill it if it lingers."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=float(self.options.leave_timeout))  # type: ignore[arg-type]
        except subprocess.TimeoutExpired:
            proctree.kill(proctree.tree(child.pid))


def supervise(argv: list[str], address: str, options: DesktopOptions, *, security: Any = None,
              progress: ProgressCallback | None = None) -> int:
    """Run ``argv`` (a ``dask worker`` command) under the desktop policy until it ends by itself.

    Returns the worker's exit code. Ctrl-C and SIGTERM (SystemExit in a caelum command) stop
    the worker too.
    """
    connection_args = security.get_connection_args("client") if security is not None else None
    supervisor = DesktopSupervisor(argv, address, options, connection_args=connection_args, progress=progress)
    try:
        return asyncio.run(supervisor.run())
    finally:
        supervisor.stop_child()


__all__ = ["DesktopOptions", "DesktopSupervisor", "InputIdle", "OwnerSampler", "OwnerWatch",
           "options_from_cli", "retire_for_owner", "reopen", "supervise"]

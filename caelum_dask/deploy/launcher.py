"""Starting and stopping the cluster's processes over SSH, on Dask's SSH deployment classes.

:class:`DetachedScheduler` and :class:`DetachedWorker` are Dask ``ProcessInterface`` objects,
subclasses of ``distributed.deploy.ssh.Process`` — the spec classes ``SSHCluster`` is made
of — so they are awaited, report ``.address`` and ``.status`` and close like any Dask
deployment process. They differ from ``distributed.deploy.ssh.Scheduler``/``Worker`` in one
thing: the process they start outlives them. ``SSHCluster`` keeps each process as a child of
its SSH channel and kills it when the cluster object goes away (``Process.close()``, a
``weakref.finalize`` calling ``proc.kill()``, and ``SpecCluster.close()`` terminating the
scheduler), which is right for a notebook's cluster and wrong for ``caelum up``, which exits
and must leave the cluster running. So the command runs through
:mod:`caelum_dask.deploy.remote` on the host: new session (setsid), pid file and log in
``run_dir``; the object waits for Dask's own "started" line (``Scheduler at:``,
``Registered to:``) like ``SSHCluster`` does, then only closes its SSH connection.

The processes are the plain caelum commands — ``caelum scheduler`` and ``caelum worker``
(``dask scheduler``/``dask worker`` with the caelum preloads) — with the cluster file's
options, so a deployed cluster is exactly the cluster a user would start by hand.

Adaptive host groups (``adaptive:`` on a worker entry): ``up`` starts their ``minimum`` slots
with the fixed workers and then starts the scheduler-side controller
(:mod:`caelum_dask.deploy.adaptive`), which uses :class:`DetachedWorker` and
:func:`stop_process` itself; ``down`` stops the controller first, then every slot.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from distributed.deploy import ssh as dask_ssh
from distributed.deploy.spec import ProcessInterface

from caelum_dask.deploy import ssh
from caelum_dask.deploy.preflight import Preflight, PreflightFailed, client_security, run_preflight
from caelum_dask.deploy.schema import ClusterSpec, HostProcess
from caelum_dask.errors import CaelumError
from caelum_dask.progress import ProgressCallback, ProgressEvent
from caelum_dask.results import Result


class LaunchFailed(CaelumError):
    """A process did not start on its host (after a clean preflight)."""


def scheduler_argv(spec: ClusterSpec) -> list[str]:
    """``caelum scheduler`` with the cluster file's options (run by the host's Python)."""
    proc = spec.scheduler
    argv = ["-m", "caelum_dask", "scheduler", "--host", proc.listen or proc.host, "--port", str(proc.port),
            "--protocol", str(proc.protocol), "--dashboard-address", str(proc.dashboard_address)]
    return argv + tls_args(proc)


def worker_argv(spec: ClusterSpec, proc: HostProcess) -> list[str]:
    """``caelum worker ADDRESS`` with the entry's nworkers, nthreads, resources and ports."""
    host = proc.listen or proc.host
    argv = ["-m", "caelum_dask", "worker", spec.scheduler_address, "--nworkers", str(proc.nworkers),
            "--name", proc.name]
    if proc.nthreads:
        argv += ["--nthreads", str(proc.nthreads)]
    if proc.resources:
        argv += ["--resources", " ".join(f"{k}={v:g}" for k, v in sorted(proc.resources.items()))]
    argv += tls_args(proc)
    # dask worker options pass through `caelum worker` unchanged
    argv += ["--host", host, "--dashboard-address", f"{host}:0"]
    if proc.memory_limit is not None:
        argv += ["--memory-limit", str(proc.memory_limit)]
    if proc.worker_port is not None:
        argv += ["--worker-port", str(proc.worker_port)]
    return argv


def tls_args(proc: HostProcess) -> list[str]:
    """``--tls DIR [--tls-name NAME]``: the options of `caelum scheduler`/`caelum worker`."""
    if not proc.tls_dir:
        return []
    args = ["--tls", proc.tls_dir]
    if proc.tls_name:
        args += ["--tls-name", proc.tls_name]
    return args


class _Detached(dask_ssh.Process):
    """A Dask SSH deployment process whose remote process is detached from the SSH session."""

    marker = ""

    def __init__(self, spec: ClusterSpec, proc: HostProcess, argv: list[str], count: int = 1,
                 timeout: float = 120) -> None:
        super().__init__()
        self.spec = spec
        self.proc_spec = proc
        self.argv = argv
        self.count = count
        self.timeout = timeout
        self.outcome: dict[str, Any] = {}

    def helper_argv(self, command: str, *extra: str) -> list[str]:
        return ssh.helper(command, "--run-dir", self.spec.run_dir, "--name", self.proc_spec.name, *extra)

    async def start(self) -> None:
        proc = self.proc_spec
        try:
            self.connection = await ssh.connect(proc)
            command = ssh.command_line(proc, self.helper_argv(
                "start", "--marker", self.marker, "--count", str(self.count), "--timeout", str(self.timeout),
                "--", proc.python, *self.argv))
            result = await ssh.run(self.connection, command, timeout=self.timeout + 60)
        except ssh.SSHFailure as exc:
            raise LaunchFailed(f"{proc.label}: {exc}") from None
        self.outcome = _last_json(result.stdout) or {
            "state": "failed", "reason": (result.stderr.strip().splitlines() or ["no answer"])[-1]}
        if self.outcome["state"] == "failed":
            log = self.outcome.get("log", "")
            last = [line for line in log.splitlines() if line.strip()][-1:] or [""]
            raise LaunchFailed(f"{proc.label} did not start: {self.outcome.get('reason')}"
                               f"{'; last log line: ' + last[0].strip() if last[0] else ''} "
                               f"(log: {self.spec.run_dir}/{proc.name}.log on {proc.host})")
        self.on_started()
        # ProcessInterface.start, not ssh.Process.start: nothing must kill the remote process
        await ProcessInterface.start(self)

    def on_started(self) -> None:
        pass

    @property
    def already_running(self) -> bool:
        return self.outcome.get("state") == "already-running"

    async def close(self) -> None:
        """Close our SSH connection only; the remote process keeps running (see module doc)."""
        if self.connection is not None:
            self.connection.close()
        await ProcessInterface.close(self)


class DetachedScheduler(_Detached):
    """``caelum scheduler`` on the scheduler host; ``.address`` from its "Scheduler at:" line."""

    marker = "Scheduler at:"

    def __init__(self, spec: ClusterSpec, timeout: float = 120) -> None:
        super().__init__(spec, spec.scheduler, scheduler_argv(spec), timeout=timeout)

    def on_started(self) -> None:
        lines = self.outcome.get("lines") or []
        self.address = lines[-1].split("Scheduler at:", 1)[1].strip() if lines else self.spec.scheduler_address


class DetachedWorker(_Detached):
    """``caelum worker`` (nworkers processes) on a worker host; done when all registered."""

    marker = "Registered to:"

    def __init__(self, spec: ClusterSpec, proc: HostProcess, timeout: float = 120) -> None:
        super().__init__(spec, proc, worker_argv(spec, proc), count=proc.nworkers, timeout=timeout)
        self.address = proc.host


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


@dataclass
class UpResult(Result):
    """What ``caelum up`` did: the JSON shape of ``caelum up --json`` (docs/deploy.md)."""

    scheduler: str
    dashboard: str | None = None
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    machines: list[dict[str, Any]] = field(default_factory=list)
    preflight: dict[str, Any] = field(default_factory=dict)


class Tally:
    """How far one ``up``/``down`` is, said as ``ProgressEvent(job="deploy")``.

    The unit is a host entry of the cluster file (the scheduler, each worker entry): ``done``
    counts the entries dealt with (started, found running, stopped, or failed), ``failed`` the
    ones that failed, so a bar reads "2/3 hosts, 1 failed" like every other job's.
    """

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        self.failed = 0

    def note(self, message: str) -> None:
        """A status line that counts nothing (preflight, waiting, cleaning up)."""
        if self.callback is not None:
            self.callback(ProgressEvent(job="deploy", message=message))

    def count(self, message: str | None = None, failed: bool = False) -> None:
        """One more host entry dealt with (with what happened to it, when there is a line to say)."""
        self.done += 1
        self.failed += int(failed)
        if self.callback is not None:
            self.callback(ProgressEvent(job="deploy", done=self.done, total=self.total, failed=self.failed,
                                        message=message))


async def up_async(spec: ClusterSpec, check_only: bool = False,
                   progress: ProgressCallback | None = None) -> UpResult:
    """Preflight, then start what is not running yet and wait until every worker joined."""
    tally = Tally(progress, 1 + len(spec.initial_workers()))
    tally.note(f"preflight: {len(spec.processes())} processes on "
               f"{len({p.host for p in spec.processes()})} host(s)")
    checked: Preflight = await run_preflight(spec)
    if checked.problems:
        raise PreflightFailed(checked.problems)
    result = UpResult(scheduler=spec.scheduler_address, preflight=checked.to_dict())
    if check_only:
        return result
    started: list[_Detached] = []
    try:
        await _start_all(spec, result, started, tally)
    except BaseException:
        if started:
            tally.note(f"stopping the {len(started)} process(es) this run started")
            await asyncio.gather(*(stop_process(spec, d.proc_spec) for d in reversed(started)), return_exceptions=True)
        raise
    expected = spec.expected_workers()
    tally.note(f"waiting for {len(expected)} worker(s) to join {spec.scheduler_address}")
    await _wait_for_workers(spec, expected, result, tally)
    return result


async def _start_all(spec: ClusterSpec, result: UpResult, started: list[_Detached], tally: Tally) -> None:
    """The scheduler first, then every worker entry at once; the first failure is raised."""
    scheduler = DetachedScheduler(spec, timeout=spec.join_timeout)
    try:
        await _start(scheduler)
    except Exception:
        tally.count(failed=True)
        raise
    _record(scheduler, result, started, tally)
    workers = [DetachedWorker(spec, proc, timeout=spec.join_timeout) for proc in spec.initial_workers()]
    outcomes = await asyncio.gather(*(_start(w) for w in workers), return_exceptions=True)
    failures = []
    for worker, outcome in zip(workers, outcomes):
        if isinstance(outcome, BaseException):
            failures.append(outcome)
            tally.count(failed=True)
        else:
            _record(worker, result, started, tally)
    if failures:
        raise failures[0]


async def _start(detached: _Detached) -> _Detached:
    await detached
    await detached.close()
    return detached


def _record(detached: _Detached, result: UpResult, started: list[_Detached], tally: Tally) -> None:
    label = detached.proc_spec.label
    pid = detached.outcome.get("pid")
    if detached.already_running:
        result.already_running.append(detached.proc_spec.name)
        tally.count(f"{label}: already running (pid {pid}), left alone")
    else:
        started.append(detached)
        result.started.append(detached.proc_spec.name)
        tally.count(f"{label}: started (pid {pid})")


async def _wait_for_workers(spec: ClusterSpec, expected: list[str], result: UpResult, tally: Tally) -> None:
    """Poll the scheduler until every declared worker name is there (deadline: join_timeout).

    Then, for a file with adaptive groups, (re)start the controller on the scheduler.
    """
    from distributed import Client

    from caelum_dask.deploy.adaptive import start_controller

    async with Client(spec.scheduler_address, asynchronous=True, timeout="30s",
                      security=client_security(spec)) as client:
        deadline = time.monotonic() + spec.join_timeout
        while True:
            info = await client.scheduler.identity()
            names = {str(w.get("name")) for w in info.get("workers", {}).values()}
            missing = [n for n in expected if n not in names]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise LaunchFailed(f"workers {', '.join(missing)} did not join {spec.scheduler_address} within "
                                   f"{spec.join_timeout:g}s; see their logs in {spec.run_dir} on their hosts")
            await asyncio.sleep(0.2)
        result.workers = sorted(names)
        result.dashboard = client.dashboard_link
        if await start_controller(client, spec):
            tally.note(f"adaptive: controller started on the scheduler for "
                       f"{', '.join(g.name for g in spec.adaptive_groups())}")
        try:
            result.machines = await client.scheduler.caelum_machines()
        except Exception:  # a scheduler without the caelum preload: no registry to show
            result.machines = []


async def stop_process(spec: ClusterSpec, proc: HostProcess, timeout: float = 30) -> dict[str, Any]:
    """Stop one host entry's (or adaptive slot's) process group over SSH; the helper's JSON answer."""
    connection = await ssh.connect(proc)
    try:
        command = ssh.command_line(proc, ssh.helper("stop", "--run-dir", spec.run_dir, "--name", proc.name,
                                                    "--timeout", str(timeout)))
        result = await ssh.run(connection, command, timeout=timeout + 30)
    finally:
        connection.close()
    outcome = _last_json(result.stdout)
    if outcome is None:
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
        raise LaunchFailed(f"{proc.label}: could not stop it ({detail[:200]})")
    return outcome


async def _stop_controller(spec: ClusterSpec, tally: Tally) -> None:
    """Stop the adaptive controller first, so it starts nothing while ``down`` stops processes."""
    from distributed import Client

    from caelum_dask.deploy.adaptive import stop_controller

    try:
        async with Client(spec.scheduler_address, asynchronous=True, timeout="10s",
                          security=client_security(spec)) as client:
            if await stop_controller(client):
                tally.note("adaptive: controller stopped")
    except (OSError, TimeoutError) as exc:  # no scheduler running: no controller either
        tally.note(f"adaptive: no scheduler to stop a controller on ({str(exc)[:120] or type(exc).__name__})")


async def down_async(spec: ClusterSpec, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Stop every process of the cluster file (the adaptive controller, workers, then the scheduler).

    An adaptive group's slots are all stopped; the report names the ``minimum`` slots always
    (like a fixed entry) and the others only when one was running.
    """
    states: dict[str, Any] = {}
    problems: list[str] = []
    workers = [p for w in spec.workers for p in (w.slots() if w.adaptive else [w])]
    tally = Tally(progress, len(workers) + 1)
    if spec.adaptive_groups():
        await _stop_controller(spec, tally)
    always = {p.name for p in spec.initial_workers()} | {spec.scheduler.name}

    async def stop_one(proc: HostProcess) -> None:
        try:
            outcome = await stop_process(spec, proc)
        except (ssh.SSHFailure, LaunchFailed) as exc:
            problems.append(f"{proc.label}: {exc}")
            states[proc.name] = "unknown"
            tally.count(failed=True)
            return
        if proc.name in always or outcome["state"] != "not-running":
            states[proc.name] = outcome["state"]
        tally.count(f"{proc.label}: {outcome['state']}" + (f" (pid {outcome['pid']})" if "pid" in outcome else ""))

    await asyncio.gather(*(stop_one(w) for w in workers))
    await stop_one(spec.scheduler)
    if problems:
        raise LaunchFailed(f"could not stop everything: {'; '.join(problems)}")
    order = [p.name for p in (*workers, spec.scheduler)]
    return {"scheduler": spec.scheduler_address, "processes": {n: states[n] for n in order if n in states}}


def up(spec: ClusterSpec, check_only: bool = False, progress: ProgressCallback | None = None) -> UpResult:
    """Bring the cluster of ``spec`` up (see :func:`up_async`)."""
    return asyncio.run(up_async(spec, check_only=check_only, progress=progress))


def down(spec: ClusterSpec, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Stop everything ``up`` started for ``spec``; processes that are not running are skipped."""
    return asyncio.run(down_async(spec, progress=progress))


def preflight(spec: ClusterSpec) -> Preflight:
    """Only the checks (``caelum up --check``)."""
    return asyncio.run(run_preflight(spec))

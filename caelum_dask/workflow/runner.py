"""Running a workflow: validate, compile, submit once, follow the events, record, summarise.

:func:`run` is the one entry point shared by the CLI, the MCP server and other engines. The
client is the run store's only writer: task-state events that the task wrappers emit on
``caelum.workflows`` come back to it through a topic subscription and are written in batches.
The same events drive the run's :class:`~caelum_dask.progress.ProgressEvent` stream: a task
counts as running from the moment its body starts on a worker (the wrapper says so at once),
not only once it ends.
"""

from __future__ import annotations

import collections
import queue
import signal
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from distributed import Client, wait

from caelum_dask import events
from caelum_dask.cluster import client_scope, machines
from caelum_dask.errors import CaelumError, InvalidInput, SchedulerUnreachable
from caelum_dask.options import ConfiguredOptions
from caelum_dask.progress import ProgressCallback, ProgressEvent
from caelum_dask.results import Result
from caelum_dask.workflow.cache import ResultCache, default_url
from caelum_dask.workflow.compiler import CompiledRun, cache_keys, compile_workflow
from caelum_dask.workflow.estimates import estimate_run
from caelum_dask.workflow.model import Workflow
from caelum_dask.workflow.runtime import Unfinished
from caelum_dask.workflow.owner import Owner
from caelum_dask.workflow.store import FINAL_STATES, RunStore
from caelum_dask.workflow.validation import check_requirements, validate



@dataclass
class WorkflowOptions(ConfiguredOptions):
    """Everything :func:`run` can be told besides the workflow, the client and the callbacks.

    A configurable field left ``None`` takes ``caelum.workflow.*`` when the run starts, so the
    CLI, MCP and the Python API pass only what their user said and behave alike.
    """

    CONFIG: ClassVar[Mapping[str, str]] = {
        "cache": "workflow.use-cache", "cache_url": "workflow.cache", "store": "workflow.store",
        "poll": "workflow.poll", "progress_interval": "workflow.progress-interval",
        "settle": "workflow.settle-wait",
    }

    params: dict[str, Any] | None = None  # override the workflow's defaults
    resume: str | None = None  # a run id whose completed tasks are reused
    cache: bool | None = None  # False: recompute everything (results are still stored)
    cache_url: str | None = None  # None after resolving: <home>/cache/workflows
    store: RunStore | str | None = None  # a RunStore, a path, or None: the configured store
    poll: float | None = None  # seconds between two looks at the run's futures and events
    progress_interval: float | None = None  # least seconds between two count events
    settle: float | None = None  # seconds to wait for final states that trail the results
    file: str | None = None  # the definition file, recorded in the store (and in resume hints)

    def merged(self, **given: Any) -> "WorkflowOptions":
        """A resolved copy with what the caller ``given`` (``None``: not given) on top."""
        return replace(self, **{k: v for k, v in given.items() if v is not None}).resolved()


class RunCancelled(CaelumError):
    """The run was cancelled on request (``cancel`` was set)."""


class SchedulerLost(SchedulerUnreachable):
    """The scheduler went away mid-run (crash, restart, network): the run can be resumed."""


def _scheduler_lost(client: Client, exc: BaseException) -> bool:
    """Did ``exc`` come from losing the scheduler (rather than Ctrl-C or a bug of ours)?"""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    return client.status != "running" or "scheduler-connection-lost" in str(exc)


@dataclass
class RunResult(Result):
    """What a run did: counts, per-task states, where tasks ran, and the outputs."""

    run_id: str
    workflow: str
    state: str  # completed | failed
    params: dict[str, Any]
    computed: int
    cached: int
    failed: int
    skipped: int
    duration: float
    results: dict[str, Any] = field(default_factory=dict)  # output (sink) task -> value
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_machine: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    resumed_from: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "completed"

    def __getitem__(self, task: str) -> Any:
        return self.results[task]

    def to_dict(self, results: bool = True) -> dict[str, Any]:
        """The ``--json`` shape of ``caelum run`` (published: rounded duration, a summary per
        task rather than its store row, ``results`` last and optional)."""
        data = {
            "run_id": self.run_id, "workflow": self.workflow, "state": self.state, "params": self.params,
            "computed": self.computed, "cached": self.cached, "failed": self.failed, "skipped": self.skipped,
            "duration": round(self.duration, 3), "per_machine": self.per_machine, "errors": self.errors,
            "resumed_from": self.resumed_from,
            "tasks": {name: {k: t.get(k) for k in ("state", "machine", "worker", "attempts", "error")}
                      for name, t in self.tasks.items()},
        }
        if results:
            data["results"] = self.results
        return data


def _log_many(dask_scheduler: Any, topic: str, messages: list[dict[str, Any]]) -> int:
    for message in messages:
        dask_scheduler.log_event(topic, message)
    return len(messages)


def _listen(client: Client, run_id: str) -> "queue.SimpleQueue[dict[str, Any]]":
    """A queue of this run's worker task-state messages (one router per client and topic)."""
    q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def take(event: tuple[float, Any]) -> None:
        stamp, msg = event
        if not isinstance(msg, dict) or msg.get("run_id") != run_id:
            return
        if (msg.get("event") == "task-state" and msg.get("worker") is not None) or msg.get("event") == "task-progress":
            q.put({**msg, "timestamp": stamp})

    events.listen(client, events.WORKFLOWS, run_id, take)
    return q


def _recover(client: Client, run_id: str, unsettled: set[str]) -> list[dict[str, Any]]:
    """Final states of ``unsettled`` tasks from the scheduler's event log (if our topic
    handler was replaced mid-run, the messages are still there)."""
    try:
        logged = client.get_events(events.WORKFLOWS)
    except Exception:  # noqa: BLE001
        return []
    return [{**m, "timestamp": t} for t, m in logged
            if isinstance(m, dict) and m.get("run_id") == run_id and m.get("event") == "task-state"
            and m.get("worker") is not None and m.get("task") in unsettled and m.get("state") in FINAL_STATES]


def _drain(q: "queue.SimpleQueue[dict[str, Any]]") -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def run(workflow: Workflow, client: Client | None = None, params: dict[str, Any] | None = None,
        resume: str | None = None, *, options: WorkflowOptions | None = None, cache: bool | None = None,
        cache_url: str | None = None, store: RunStore | str | None = None,
        progress: ProgressCallback | None = None, file: str | None = None, poll: float | None = None,
        cancel: threading.Event | None = None) -> RunResult:
    """Run ``workflow`` on the cluster (``client``, else :func:`caelum_dask.connect`).

    ``options`` (:class:`WorkflowOptions`) or the keywords of the same names say how; what
    neither gives comes from ``caelum.workflow.*``. ``params`` override the workflow's
    defaults. ``resume=RUN_ID`` re-runs with that run's parameters (``params`` still override)
    and reuses the results of the tasks that run completed whose cache key is unchanged;
    everything else (failed, skipped, changed) runs. ``cache=False`` recomputes everything
    (results are still stored for later runs). ``progress`` gets
    :class:`~caelum_dask.progress.ProgressEvent` events (``job="workflow"``): one with the run id
    at once, then the counts whenever tasks start or end (``detail``: per-state counts and
    running tasks per machine). Setting ``cancel`` (from another thread) cancels the run: its
    tasks are cancelled on the cluster and it is recorded as ``cancelled`` (RunCancelled). A run
    stopped any other way (Ctrl-C, SIGTERM, a lost scheduler) is recorded as ``interrupted``,
    and one whose process died unrecorded reads ``interrupted`` once its owner is found gone
    (see :mod:`caelum_dask.workflow.owner`); ``resume`` works on both.
    Raises :class:`~caelum_dask.errors.CaelumError` subclasses for invalid workflows.
    """
    opts = (options or WorkflowOptions()).merged(params=params, resume=resume, cache=cache, cache_url=cache_url,
                                                 store=store, file=file, poll=poll)
    own_store = not isinstance(opts.store, RunStore)
    run_store = opts.store if isinstance(opts.store, RunStore) else RunStore(opts.store)
    try:
        previous = None
        given = opts.params
        if opts.resume:
            previous = run_store.run(opts.resume)
            if previous["workflow"] != workflow.name:
                raise InvalidInput(f"run {previous['id']} ran workflow {previous['workflow']!r}, not {workflow.name!r}")
            given = {**{k: v for k, v in previous["parameters"].items() if k in workflow.params}, **(given or {})}
        values, bindings = validate(workflow, given)
        with client_scope(client) as active:
            return _run(workflow, active, values, bindings, run_store, previous, opts, progress, cancel)
    finally:
        if own_store:
            run_store.close()


def run_file(path: str, client: Client | None = None, params: dict[str, Any] | None = None,
             resume: str | None = None, *, workflow: str | None = None, **options: Any) -> RunResult:
    """Load the workflow defined in the file at ``path`` and :func:`run` it.

    String parameter values are converted to the type of the parameter's default, as on the
    command line, so callers such as the MCP server can pass what they received as text.
    """
    from caelum_dask.workflow.loader import load_workflow
    from caelum_dask.workflow.params import coerce

    wf = load_workflow(path, workflow)
    values = {k: coerce(k, v, wf.params.get(k)) if isinstance(v, str) else v for k, v in (params or {}).items()}
    options.setdefault("file", str(path))
    return run(wf, client=client, params=values, resume=resume, **options)


class _Tracker:
    """The run's task states as the client learns them: written to the store, reported as events.

    Count events are throttled to one per ``interval``, but a change the throttle held back is
    sent at the next :meth:`report` (the follow loop calls it every poll), so a task that
    started is shown running while it runs, not only once something else happens.
    """

    def __init__(self, run_id: str, total: int, store: RunStore, states: dict[str, str],
                 progress: ProgressCallback | None, interval: float) -> None:
        self.run_id = run_id
        self.total = total
        self.store = store
        self.states = states
        self.machine_of: dict[str, str | None] = {}
        self.progress = progress
        self.interval = interval
        self.sent: ProgressEvent | None = None
        self.sent_at = 0.0

    def absorb(self, batch: list[dict[str, Any]]) -> None:
        """Record a batch of task-state messages (one store transaction) and learn the states;
        a step's sub-job progress (``task-progress``) becomes a status line of the run."""
        subjobs = [m for m in batch if m.get("event") == "task-progress"]
        batch = [m for m in batch if m.get("event") != "task-progress"]
        if batch:
            self.store.record(self.run_id, batch)
        for msg in subjobs:
            self.report(force=True, message=f"{msg.get('task')}: {msg.get('text')}")
        for msg in batch:
            self.states[msg["task"]] = msg["state"]
            self.machine_of[msg["task"]] = msg.get("machine")

    def counts(self) -> dict[str, int]:
        return _counts(self.states, self.total)

    def event(self, message: str | None = None) -> ProgressEvent:
        """The run as one :class:`ProgressEvent`; ``detail`` holds ``counts`` (the published
        MCP ``counts`` shape), ``states`` (tasks per state, ``pending`` included) and
        ``running_per_machine``."""
        counts = self.counts()
        by_state = collections.Counter(self.states.values())
        by_state["pending"] = counts["total"] - len(self.states) + by_state.get("pending", 0)
        running = collections.Counter(self.machine_of.get(task) or "?" for task, state in self.states.items()
                                      if state == "running")
        return ProgressEvent(job="workflow", done=counts["done"], total=counts["total"], failed=counts["failed"],
                             running=counts["running"], message=message, run_id=self.run_id,
                             detail={"counts": counts, "states": dict(by_state), "running_per_machine": dict(running)})

    def report(self, force: bool = False, message: str | None = None) -> None:
        """Send the counts if they changed and the last event is ``interval`` old (or ``force``)."""
        if self.progress is None:
            return
        event = self.event(message)
        if not force and (_same_counts(event, self.sent) or time.monotonic() - self.sent_at < self.interval):
            return
        self.sent, self.sent_at = event, time.monotonic()
        self.progress(event)


def _same_counts(event: ProgressEvent, sent: ProgressEvent | None) -> bool:
    return sent is not None and event.detail == sent.detail


def _run(wf: Workflow, client: Client, params: dict[str, Any], bindings: Any, store: RunStore,
         previous: dict[str, Any] | None, opts: WorkflowOptions, progress: ProgressCallback | None,
         cancel: threading.Event | None = None) -> RunResult:
    import networkx as nx

    started = time.time()
    use_cache = bool(opts.cache)
    cache_url = opts.cache_url or default_url()
    placement = check_requirements(wf, machines(client)) if _has_resources(wf) else {}
    order = list(nx.topological_sort(wf.graph))
    keys = cache_keys(wf, params, bindings, order)
    reusable = _reusable(wf, order, keys, use_cache, previous, cache_url)
    run_id = new_run_id()
    compiled = compile_workflow(wf, params, bindings, placement, run_id, cache_url, reusable, keys,
                                reuse_items=use_cache or bool(previous))

    estimates, estimated = estimate_run(client, wf.graph, compiled.reused)  # learned durations, before it runs
    store.start_run(run_id, wf.name, params, order, file=opts.file,
                    resumed_from=previous["id"] if previous else None, cache_keys=keys, cached=compiled.reused,
                    owner=Owner.current(client), estimates=estimates, estimated=estimated)
    q = _listen(client, run_id)
    tracker = _Tracker(run_id, len(order), store, {n: "cached" for n in compiled.reused}, progress,
                       float(opts.progress_interval or 0))
    futures: dict[str, Any] = {}
    try:  # from here on the run is in the store: whatever stops it records how
        events.emit(events.WORKFLOWS, "run-started", sink=client, run_id=run_id, workflow=wf.name,
                    nodes=order, edges=[[a, b] for a, b in wf.graph.edges], estimates=estimates,
                    estimated=estimated)
        reused_msgs = [events.make_message("task-state", run_id=run_id, task=n, state="cached", worker=None,
                                           machine=None) for n in compiled.reused]
        if reused_msgs:
            client.run_on_scheduler(_log_many, topic=events.WORKFLOWS, messages=reused_msgs)
        if compiled.targets:
            futures.update(zip(compiled.targets, client.get(compiled.graph, list(compiled.targets), sync=False)))
        tracker.report(force=True, message=f"run {run_id} started")  # the run id, at once
        _follow(client, list(futures.values()), q, opts, cancel, tracker, set(compiled.computed))
        results, errors = _collect(client, compiled, futures, tracker.states, store, run_id)
    except BaseException as exc:  # cancel, Ctrl-C, SIGTERM, lost scheduler: never left "running"
        tracker.absorb(_drain(q))
        _record_interrupted(client, store, run_id, tracker.counts(), futures, opts.file, exc)
        raise
    finally:
        events.unlisten(client, events.WORKFLOWS, run_id)
        for f in futures.values():
            f.release()
    tracker.report(force=True)
    return _finished(client, store, wf, run_id, params, started, results, errors, previous)


def _follow(client: Client, pending: list[Any], q: Any, opts: WorkflowOptions, cancel: threading.Event | None,
            tracker: _Tracker, expected: set[str]) -> None:
    """Wait for the run's futures, absorbing task states as they stream in, then the stragglers."""
    poll = float(opts.poll or 0)
    while pending:
        if cancel is not None and cancel.is_set():
            raise RunCancelled(f"run {tracker.run_id} was cancelled")
        # block until everything is done or `poll` passes, then write what arrived in one
        # transaction: never a busy loop competing with the workers for the CPU
        try:
            wait(pending, timeout=poll)
        except TimeoutError:
            pass
        batch = _drain(q)
        if batch:
            tracker.absorb(batch)
        tracker.report()  # also what the throttle held back last time
        pending = [f for f in pending if not f.done()]
    # the final events travel ahead of the results on the same streams; allow stragglers
    states = tracker.states
    deadline = time.monotonic() + float(opts.settle or 0)
    while any(states.get(n) not in FINAL_STATES for n in expected) and time.monotonic() < deadline:
        tracker.absorb(_drain(q))
        time.sleep(0.05)
    tracker.absorb(_drain(q))
    unsettled = {n for n in expected if states.get(n) not in FINAL_STATES}
    if unsettled:
        tracker.absorb(_recover(client, tracker.run_id, unsettled))


def _reusable(wf: Workflow, order: list[str], keys: dict[str, str], use_cache: bool,
              previous: dict[str, Any] | None, cache_url: str) -> set[str]:
    """Nodes whose cached result may stand in: a resumed run's finished tasks, else any cached one."""
    if not (use_cache or previous):
        return set()
    present = ResultCache(cache_url).keys()
    if previous:
        done = {t["task"]: t["cache_key"] for t in previous["tasks"] if t["state"] in ("completed", "cached")}
        return {n for n in order if done.get(n) == keys[n] and keys[n] in present}
    return {n for n in order if keys[n] in present and wf.graph.nodes[n].get("cache", True)}


def _why_unfinished(exc: BaseException, lost: bool, address: str) -> tuple[str, str]:
    """The state (``cancelled`` only on request, else ``interrupted``) and reason for a run ``exc`` stopped."""
    if isinstance(exc, RunCancelled):
        return "cancelled", "cancelled on request"
    if lost:
        return "interrupted", f"lost the connection to the scheduler {address}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "its client was interrupted (Ctrl-C)"
    if isinstance(exc, SystemExit):  # caelum's job scope turns SIGTERM into SystemExit(128 + SIGTERM)
        if exc.code == 128 + signal.SIGTERM:
            return "interrupted", "its client was stopped (SIGTERM)"
        return "interrupted", f"its client exited (status {exc.code})"
    return "interrupted", f"its client stopped on {type(exc).__name__}: {exc}"


def _record_interrupted(client: Client, store: RunStore, run_id: str, counts: dict[str, int],
                        futures: dict[str, Any], file: str | None, exc: BaseException) -> None:
    """A run that did not finish is recorded as cancelled (on request) or interrupted (anything
    else), with the reason; a lost scheduler says how to resume."""
    lost = _scheduler_lost(client, exc)
    address = getattr(client.scheduler, "address", "")
    state, reason = _why_unfinished(exc, lost, address)
    store.end_unfinished(run_id, state, reason)
    if lost:
        # the completed tasks' results are in the cache and their states in the store:
        # `--resume` on any scheduler reuses them
        where = f"`caelum run {file} --resume {run_id}`" if file else f"run(..., resume={run_id!r})"
        raise SchedulerLost(
            f"lost the connection to the scheduler {address} "
            f"mid-run; run {run_id} is recorded as interrupted with {counts['computed'] + counts['cached']} of "
            f"{counts['total']} tasks done; once a scheduler is up, finish it with {where}"
        ) from exc
    client.cancel(list(futures.values()))
    try:
        events.emit(events.WORKFLOWS, "run-finished", sink=client, run_id=run_id, state=state,
                    computed=counts["computed"], cached=counts["cached"], failed=counts["failed"])
    except Exception:  # noqa: BLE001 - the scheduler may be the reason we are here
        pass


def _finished(client: Client, store: RunStore, wf: Workflow, run_id: str, params: dict[str, Any],
              started: float, results: dict[str, Any], errors: dict[str, str],
              previous: dict[str, Any] | None) -> RunResult:
    """Record the run's final state from the store and build its result."""
    tasks = store.task_states(run_id)
    counts = _counts({n: t["state"] for n, t in tasks.items()}, len(tasks))
    per_machine = collections.Counter(t["machine"] for t in tasks.values()
                                      if t["state"] in ("completed", "failed") and t["machine"])
    for name, t in tasks.items():
        if t["state"] == "failed" and t.get("error"):
            errors.setdefault(name, t["error"])
    state = "failed" if counts["failed"] or counts["skipped"] else "completed"
    store.finish_run(run_id, state, counts)
    events.emit(events.WORKFLOWS, "run-finished", sink=client, run_id=run_id, state=state,
                computed=counts["computed"], cached=counts["cached"], failed=counts["failed"])
    return RunResult(
        run_id=run_id, workflow=wf.name, state=state, params=params, computed=counts["computed"],
        cached=counts["cached"], failed=counts["failed"], skipped=counts["skipped"], duration=time.time() - started,
        results=results, tasks=tasks, per_machine=dict(per_machine), errors=errors,
        resumed_from=previous["id"] if previous else None,
    )


def _has_resources(wf: Workflow) -> bool:
    return any(attrs.get("resources") for _n, attrs in wf.graph.nodes(data=True))


def _counts(states: dict[str, str], total: int) -> dict[str, int]:
    c = collections.Counter(states.values())
    return {"total": max(total, len(states)), "computed": c["completed"], "cached": c["cached"],
            "failed": c["failed"], "skipped": c["skipped"], "running": c["running"],
            "done": c["completed"] + c["cached"] + c["failed"] + c["skipped"]}


def _collect(client: Client, compiled: CompiledRun, futures: dict[str, Any], states: dict[str, str],
             store: RunStore, run_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Outputs of the sink tasks; tasks Dask itself lost (wrapper crash) are recorded as failed."""
    errors: dict[str, str] = {}
    by_key = {k: n for n, k in compiled.keys.items()}
    results: dict[str, Any] = {}
    lost: list[dict[str, Any]] = []
    finished = [k for k, f in futures.items() if f.status == "finished"]
    values = client.gather([futures[k] for k in finished]) if finished else []  # one round trip
    for key, value in zip(finished, values):
        node = by_key[key]
        if not isinstance(value, Unfinished) and node in compiled.sinks:
            results[node] = value
    for key, fut in futures.items():
        if fut.status != "finished":
            exc = fut.exception()
            errors[by_key[key]] = f"{type(exc).__name__}: {exc}"
    missing = [n for n in compiled.computed if states.get(n) not in FINAL_STATES]
    for node in missing:
        reason = errors.get(node) or next(iter(errors.values()), "the task never reported a final state")
        lost.append({"task": node, "state": "failed", "error": reason, "worker": None, "machine": None})
        states[node] = "failed"
    store.record(run_id, lost)
    return results, errors

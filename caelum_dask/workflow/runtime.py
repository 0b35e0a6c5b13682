"""The task wrapper: what runs on a worker around every workflow function.

Dask has no task timeout and its retries re-run at once with no backoff, so both live here:
the function runs (in a helper thread when it has a timeout) and a task past its timeout is
failed; a failure is retried after ``retry_delay * retry_backoff**n`` seconds plus jitter.
A failed task does not raise into Dask: it returns a :class:`TaskFailure` marker, and every
dependent sees the marker and returns :class:`Skipped` without running. So the whole graph
always settles, the run ends, and each task reports exactly one final state. The wrapper
also reads/writes the result cache and emits ``task-state`` events on ``caelum.workflows``.
"""

from __future__ import annotations

import contextvars
import ctypes
import random
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from dask.base import tokenize

from caelum_dask import compat, events
from caelum_dask.keys import KIND, task_key
from caelum_dask.progress import ProgressCallback, ProgressEvent
from caelum_dask.machine import machine_id
from caelum_dask.workflow.cache import ResultCache, combine

_TRACEBACK_CHARS = 8000


class TaskTimeout(Exception):
    """A task ran past its timeout."""


@dataclass(frozen=True)
class Unfinished:
    """Marker passed downstream instead of a value when a task did not complete."""

    task: str
    error: str


class TaskFailure(Unfinished):
    """The task itself failed (after its retries)."""


class Skipped(Unfinished):
    """The task did not run because an upstream task failed or was skipped."""


@dataclass(frozen=True)
class RunContext:
    """What every task of one run shares."""

    run_id: str
    prefix: str
    cache_url: str
    workflow: str
    reuse: bool = True  # dynamic fan-out items may load cached results (False: --no-cache)


@dataclass(frozen=True)
class NodeRuntime:
    """One node as the worker needs it: the function, its options, its cache key."""

    name: str
    func: Callable[..., Any]
    retries: int = 0
    retry_delay: float = 0.5
    retry_backoff: float = 2.0
    retry_jitter: float = 0.25
    timeout: float | None = None
    cache: bool = True
    cache_key: str | None = None  # known on the client for static nodes
    check_cache: bool = False  # look the key up before running (the client could not)
    key_parts: Any = None  # dynamic fan-out items: the key is combine(key_parts, item)
    map_over: int | None = None
    item_annotations: dict[str, Any] = field(default_factory=dict)


_WHERE: dict[str, tuple[str, str]] = {}


def current_machine() -> tuple[str, str]:
    """(worker address, machine id) of the worker running the current task."""
    from distributed import get_worker

    address = get_worker().address
    where = _WHERE.get(address)
    if where is None:
        host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        where = _WHERE[address] = (address, machine_id(socket.gethostname(), host))
    return where


def worker_resources() -> dict[str, float]:
    """The Dask resources the current worker advertises (e.g. to pick a GPU or CPU code path)."""
    from distributed import get_worker

    return compat.worker_resources(get_worker())


class _EventBuffer:
    """Task-state messages from task threads, handed to the worker's event loop in bursts.

    ``Worker.log_event`` from a task thread wakes the event loop once per message (a
    ``call_soon_threadsafe`` each); with thousands of short tasks that wake-up is a large part
    of the wrapper's cost. Messages queue here and one scheduled flush sends all that arrived,
    in order, on the worker's batched stream (exactly what ``log_event`` sends). A flush is
    scheduled before the task returns, so a task's final state still reaches the scheduler
    ahead of its result.

    A task says ``running`` the moment its body starts (so the client counts it as running at
    once), but a task that ends before that message left the worker needs it no more: its
    final state, which says when and where it started, replaces it in the queue. Trivial
    tasks thus still cost one message, not two.
    """

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.lock = threading.Lock()
        self.pending: dict[int, dict[str, Any]] = {}  # insertion order is send order
        self.starts: dict[tuple[str, str], int] = {}  # (run, task) -> its unsent plain "running"
        self.counter = 0
        self.scheduled = False

    def put(self, msg: dict[str, Any], replaceable: bool = False) -> None:
        """Queue ``msg``; a ``replaceable`` start is dropped if the task's next message comes first."""
        task = (msg["run_id"], msg["task"])
        with self.lock:
            superseded = self.starts.pop(task, None)
            if superseded is not None:
                del self.pending[superseded]
            self.counter += 1
            self.pending[self.counter] = msg
            if replaceable:
                self.starts[task] = self.counter
            if self.scheduled:
                return
            self.scheduled = True
        self.worker.loop.add_callback(self.flush)

    def flush(self) -> None:
        with self.lock:
            batch, self.pending, self.starts, self.scheduled = list(self.pending.values()), {}, {}, False
        compat.send_log_events(self.worker, events.WORKFLOWS, batch)


_BUFFERS: dict[int, _EventBuffer] = {}


def _emit(ctx: RunContext, task: str, state: str, where: tuple[str, str], replaceable: bool = False,
          **extra: Any) -> None:
    """Queue one ``task-state`` message on the current worker's :class:`_EventBuffer`."""
    from distributed import get_worker

    worker = get_worker()
    message = events.make_message("task-state", run_id=ctx.run_id, task=task, state=state, worker=where[0],
                                  machine=where[1], **extra)
    buffer = _BUFFERS.get(id(worker))
    if buffer is None or buffer.worker is not worker:
        buffer = _BUFFERS[id(worker)] = _EventBuffer(worker)
    buffer.put(message, replaceable=replaceable)


#: the workflow task running in this context (run_node sets it; steps read it for their progress)
_CURRENT: contextvars.ContextVar[tuple[RunContext, str] | None] = contextvars.ContextVar("caelum_wf_task",
                                                                                         default=None)
#: least seconds between two sub-job progress messages of one task (its last one always goes)
SUBJOB_INTERVAL = 2.0


def subjob_progress() -> ProgressCallback | None:
    """A ``progress=`` callback for an engine a workflow step runs (tests, analysis, BI).

    Inside a workflow task it forwards the sub-job's :class:`ProgressEvent` as ``task-progress``
    messages (at most every ``SUBJOB_INTERVAL`` s, and the last count) on the run's event
    topic, so the workflow's own progress — the CLI's bar, MCP, the run's listeners — says
    "tests: 120/400 tests, 2 failed" while the step works, instead of sitting on one task.
    Outside a workflow task: ``None`` (the engine stays quiet).
    """
    current = _CURRENT.get()
    if current is None:
        return None
    ctx, task = current
    last = [0.0]

    def forward(event: ProgressEvent) -> None:
        complete = event.total is not None and event.done >= event.total
        if event.message is not None and event.total is None and not event.done:
            return  # the sub-job's own status lines stay in its own log
        now = time.monotonic()
        if not complete and now - last[0] < SUBJOB_INTERVAL:
            return
        last[0] = now
        _emit_message(events.make_message("task-progress", run_id=ctx.run_id, task=task, job=event.job,
                                          done=event.done, total=event.total, failed=event.failed,
                                          text=event.text()))

    return forward


def _emit_message(message: dict[str, Any]) -> None:
    from distributed import get_worker

    worker = get_worker()
    buffer = _BUFFERS.get(id(worker))
    if buffer is None or buffer.worker is not worker:
        buffer = _BUFFERS[id(worker)] = _EventBuffer(worker)
    buffer.put(message)


def _first_unfinished(values: Any, depth: int = 0) -> Unfinished | None:
    if isinstance(values, Unfinished):
        return values
    if depth < 3 and isinstance(values, (list, tuple)):
        for item in values:
            found = _first_unfinished(item, depth + 1)
            if found is not None:
                return found
    if depth < 3 and isinstance(values, dict):
        return _first_unfinished(list(values.values()), depth + 1)
    return None


def _call(rt: NodeRuntime, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if rt.timeout is None:
        return rt.func(*args, **kwargs)
    from distributed.worker import thread_state

    inherited = dict(vars(thread_state))  # get_worker()/worker_client() work in the helper thread
    box: dict[str, Any] = {}

    def target() -> None:
        for name, value in inherited.items():
            setattr(thread_state, name, value)
        try:
            box["value"] = rt.func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    context = contextvars.copy_context()  # the current task travels to the helper thread
    thread = threading.Thread(target=context.run, args=(target,), name=f"caelum-wf-{rt.name}", daemon=True)
    thread.start()
    thread.join(rt.timeout)
    if thread.is_alive():
        # Python code in the thread gets TaskTimeout at its next bytecode; code blocked in C
        # finishes in the background, but the task has already failed and the run goes on.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TaskTimeout))
        raise TaskTimeout(f"task {rt.name!r} ran past its timeout of {rt.timeout:g}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_node(rt: NodeRuntime, ctx: RunContext, /, *args: Any, **kwargs: Any) -> Any:
    """Run one workflow task on a worker (see the module docstring)."""
    where = current_machine()
    upstream = _first_unfinished(args) or _first_unfinished(kwargs)
    if upstream is not None:
        _emit(ctx, rt.name, "skipped", where, error=f"upstream task {upstream.task!r} did not complete")
        return Skipped(rt.name, f"upstream task {upstream.task!r} did not complete")
    key = rt.cache_key
    if key is None and rt.cache:
        key = combine(rt.key_parts, tokenize(args, kwargs))
    cache = ResultCache.at(ctx.cache_url) if rt.cache else None
    if cache is not None and key and rt.check_cache and ctx.reuse:
        try:
            if cache.exists(key):
                value = cache.load(key)
                _emit(ctx, rt.name, "cached", where, cache_key=key)
                return value
        except Exception:  # noqa: BLE001 - an unreadable entry is recomputed
            pass
    attempt = 0
    previous: dict[str, Any] = {}
    while True:
        attempt += 1
        started = time.time()
        # the first attempt's start may be replaced by its end; a retry's carries the failed attempt
        _emit(ctx, rt.name, "running", where, replaceable=not previous, attempt=attempt, started=started, **previous)
        try:
            token = _CURRENT.set((ctx, rt.name))
            try:
                value = _call(rt, args, kwargs)
            finally:
                _CURRENT.reset(token)
        except BaseException as exc:  # noqa: BLE001 - every failure is reported, none escapes
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            error = f"{type(exc).__name__}: {exc}"
            tb = "".join(traceback.format_exception(exc))[-_TRACEBACK_CHARS:]
            if attempt <= rt.retries:
                delay = rt.retry_delay * rt.retry_backoff ** (attempt - 1)
                delay += delay * rt.retry_jitter * random.random()
                # the next attempt's "running" event carries this attempt's error
                previous = {"previous_error": error, "previous_traceback": tb, "previous_started": started,
                            "retry_delay": delay}
                time.sleep(delay)
                continue
            _emit(ctx, rt.name, "failed", where, attempt=attempt, started=started, error=error,
                  traceback=tb, duration=time.time() - started)
            return TaskFailure(rt.name, error)
        stored = cache.store(key, value) if cache is not None and key else False
        _emit(ctx, rt.name, "completed", where, attempt=attempt, started=started,
              duration=time.time() - started, cache_key=key if stored else None)
        return value


def run_map(rt: NodeRuntime, ctx: RunContext, /, *args: Any, **kwargs: Any) -> Any:
    """A fan-out whose items come from upstream: one task per item, submitted as one graph."""
    from dask.task_spec import Task
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
    from distributed import worker_client

    where = current_machine()
    upstream = _first_unfinished(args) or _first_unfinished(kwargs)
    if upstream is not None:
        _emit(ctx, rt.name, "skipped", where, error=f"upstream task {upstream.task!r} did not complete")
        return Skipped(rt.name, f"upstream task {upstream.task!r} did not complete")
    assert rt.map_over is not None
    items = list(args[rt.map_over])
    started = time.time()
    _emit(ctx, rt.name, "running", where, attempt=1, items=len(items))
    dsk: dict[str, Any] = {}
    for i, item in enumerate(items):
        item_rt = replace(rt, name=f"{rt.name}[{i}]", map_over=None, cache_key=None, check_cache=True)
        item_args = list(args)
        item_args[rt.map_over] = item
        key = task_key(rt.name, ctx.run_id, f"item{i}")
        dsk[key] = Task(key, run_node, item_rt, ctx, *item_args, **kwargs)
    layer = MaterializedLayer(dsk, annotations={**(rt.item_annotations or {}), KIND: "workflow"})
    graph = HighLevelGraph({f"{ctx.prefix}-{rt.name}-items": layer}, {f"{ctx.prefix}-{rt.name}-items": set()})
    keys = list(dsk)
    with worker_client() as client:
        futures = client.get(graph, keys, sync=False)
        values = client.gather(futures) if keys else []
    failed = [v for v in values if isinstance(v, Unfinished)]
    if failed:
        error = f"{len(failed)} of {len(items)} items did not complete (first: {failed[0].task}: {failed[0].error})"
        _emit(ctx, rt.name, "failed", where, attempt=1, started=started, error=error, duration=time.time() - started)
        return TaskFailure(rt.name, error)
    stored = ResultCache.at(ctx.cache_url).store(rt.cache_key, values) if rt.cache and rt.cache_key else False
    _emit(ctx, rt.name, "completed", where, attempt=1, started=started, duration=time.time() - started,
          cache_key=rt.cache_key if stored else None)
    return values


def load_cached(ctx: RunContext, name: str, key: str) -> Any:
    """A task the client found in the cache, loaded where a dependent needs it."""
    try:
        return ResultCache.at(ctx.cache_url).load(key)
    except Exception as exc:  # noqa: BLE001
        return TaskFailure(name, f"cached result vanished ({type(exc).__name__}); re-run with --no-cache")

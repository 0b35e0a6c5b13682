"""The client side of a test run: sessions on the workers, one queue, results as they stream.

One :class:`SuiteRun` drives a whole run (every platform of ``--platforms`` at once):

1. one ``run_session`` Dask task per session slot (pinned to a worker thread, loose, so Dask
   moves it if that worker dies), each attempt with a ``distributed.Queue`` for its commands;
2. the sessions' events arrive on one Dask event topic (``Client.subscribe_topic``), filtered
   by run id; the first collection of a platform builds its :class:`Dispatcher`;
3. after every batch of events the dispatcher says what to send (chunks, ``last`` flags,
   steals), and results are handed to the caller's :class:`Listener` as they arrive;
4. a worker that leaves the cluster takes its sessions with it: their tests go back to the
   queue; ``-x``/``--maxfail`` stop every session, not one;
5. at the end every session is shut down, any session task that never started is cancelled,
   and every process the run started on any machine is ended (``reap_run``).

No broker and no port beyond Dask's own: tasks, a queue per session and events.
"""

from __future__ import annotations

import queue as queue_mod
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from distributed import Client, Future, Queue

from caelum_dask import events, keys
from caelum_dask.errors import SchedulerUnreachable
from caelum_dask.progress import ProgressEvent
from caelum_dask.testing.dispatch import Dispatcher
from caelum_dask.testing.session import CANNOT_START, inbox_name, run_session

#: the Dask event topic every session of every run streams to (messages carry the run id)
STREAM_TOPIC = "caelum.tests.stream"
#: how often the engine checks which workers are still there
WORKER_CHECK_SECONDS = 1.0
#: how long sessions get to end after the shutdown message
SHUTDOWN_SECONDS = 60.0


@dataclass
class TestProgress:
    """One progress event of a test run (what the CLI bar, MCP and the dashboard show)."""

    __test__ = False

    done: int
    total: int
    failed: int
    running: int
    sessions: int
    elapsed: float
    eta: float | None

    def event(self, run_id: str | None = None) -> ProgressEvent:
        """The run's :class:`~caelum_dask.progress.ProgressEvent` (total 0: still collecting)."""
        total = self.total or None
        return ProgressEvent(job="test", done=self.done, total=total, failed=self.failed, running=self.running,
                             eta=self.eta if total else None, run_id=run_id, detail={"sessions": self.sessions})

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "total": self.total, "failed": self.failed, "running": self.running,
                "sessions": self.sessions, "elapsed": round(self.elapsed, 3),
                "eta": None if self.eta is None else round(self.eta, 3)}


class Listener(Protocol):
    """What a front end hears while a run goes (all optional to act on)."""

    def collected(self, platform: str, collection: dict[str, Any]) -> None: ...

    def result(self, platform: str, result: dict[str, Any], final: bool) -> None: ...

    def progress(self, progress: TestProgress) -> None: ...


@dataclass
class SessionInfo:
    """One session slot: its task, its queue and what it has run."""

    name: str
    platform: str
    worker: str
    future: Future | None = None
    inbox: Queue | None = None  # the current attempt's queue (see inbox_name)
    attempt: str | None = None
    old_inboxes: list[Queue] = field(default_factory=list)  # earlier attempts', closed at the end
    machine: str = ""
    ran: list[str] = field(default_factory=list)
    busy: float = 0.0
    estimate: float = 0.0
    outcome: dict[str, Any] = field(default_factory=dict)
    lost: bool = False
    ended: bool = False


@dataclass
class PlatformState:
    """One platform's pass over the suite."""

    label: str
    collection: dict[str, Any] | None = None
    dispatcher: Dispatcher | None = None
    failure: dict[str, Any] | None = None  # no session could collect
    collected_at: float = 0.0
    done: bool = False
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    notrun: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


@dataclass
class RunSettings:
    """What the engine needs from the options (see runner.TestOptions)."""

    run_id: str
    snapshot: dict[str, str]
    args: list[str]  # the user's pytest arguments, in order, minus what caelum owns
    python: str | None
    env: dict[str, str]
    timeout: float
    collect_timeout: float
    dist: str
    retries: int
    maxfail: int
    workdir: str = ""
    full_reports: bool = False
    junit: bool = False  # sessions write JUnit files (only when the run's --junit asks for them)
    start_grace: float = 2.0
    freeze_collected: bool = True  # gc.freeze() in each session once it has collected
    estimate: Callable[[list[str]], tuple[dict[str, float], bool]] = lambda ids: ({i: 1.0 for i in ids}, False)


def _run_processes(run_id: str) -> tuple[list[Any], list[Any]]:
    """This machine's processes of a run: ``(owned sessions, the rest)``.

    An owned session is a session's own pytest whose parent (its worker) is alive: its relay
    ends its tree. Everything else carrying the run's marker is left over.
    """
    from caelum_dask import proctree

    owned, rest = [], []
    for proc in proctree.marked("CAELUM_TEST_RUN", run_id):
        try:
            mine = "_caelum_session" in proc.cmdline() and proc.ppid() > 1
        except Exception:  # gone already, or unreadable
            mine = False
        (owned if mine else rest).append(proc)
    return owned, rest


def reap_run(run_id: str) -> int:
    """On a worker: end every process left on this machine by the run (owned sessions spared)."""
    from caelum_dask import proctree

    return proctree.kill(_run_processes(run_id)[1])


def await_exit(run_id: str, timeout: float) -> int:
    """On a worker: wait for the run's session interpreters to finish exiting; how many did not."""
    import psutil

    return len(psutil.wait_procs(_run_processes(run_id)[0], timeout=timeout)[1])


def settle(client: Client, run_id: str, timeout: float = 30.0) -> None:
    """Before a cluster that ran sessions closes: let them finish exiting, then reap.

    ``run_tests`` returns as soon as the results are complete; a session's interpreter may
    still be exiting (freeing its heap, atexit handlers such as coverage's). Closing an
    embedded cluster would kill it on the way (its pytest dies with its worker), so whoever
    owns the cluster calls this first.
    """
    try:
        client.run(await_exit, run_id, timeout)
        client.run(reap_run, run_id)
    except Exception:  # workers that are gone have nothing left
        pass


class SuiteRun:
    """One run over the cluster (see the module docstring)."""

    def __init__(self, client: Client, settings: RunSettings, slots: dict[str, list[str]],
                 listener: Listener, machine_of: dict[str, str] | None = None) -> None:
        self.client = client
        self.machine_of = machine_of or {}
        self.settings = settings
        self.listener = listener
        self.platforms = {label: PlatformState(label) for label in slots}
        self.sessions: dict[str, SessionInfo] = {}
        for label, workers in slots.items():
            for i, worker in enumerate(workers):
                name = f"{label}-{i}"
                self.sessions[name] = SessionInfo(name=name, platform=label, worker=worker)
        self.events: queue_mod.Queue[dict[str, Any]] = queue_mod.Queue()
        self.started = time.monotonic()
        self.failures = 0
        self.stopped: str | None = None
        self.last_progress = 0.0

    # -- the run -----------------------------------------------------------------------
    def run(self) -> None:
        run_id = self.settings.run_id
        events.listen(self.client, STREAM_TOPIC, run_id, lambda event: self.deliver(event[1]))
        try:
            for info in self.sessions.values():
                self._submit(info)
            self._loop()
        except BaseException:  # Ctrl-C, a cancelled workflow step, a bug: end everything now
            self._abort()
            raise
        else:
            self._shutdown()
        finally:
            events.unlisten(self.client, STREAM_TOPIC, run_id)
            try:
                self.client.run(reap_run, run_id)
            except Exception:  # a worker that is gone has nothing left to reap
                pass

    def deliver(self, message: Any) -> None:  # on the client's event loop
        if isinstance(message, dict) and message.get("run_id") == self.settings.run_id:
            self.events.put(message)

    def _submit(self, info: SessionInfo) -> None:
        s = self.settings
        spec = {"run_id": s.run_id, "session": info.name, "topic": STREAM_TOPIC, "snapshot": s.snapshot,
                "python": s.python, "args": s.args, "workdir": s.workdir, "timeout": s.timeout, "collect_timeout": s.collect_timeout,
                "env": s.env, "full": s.full_reports, "freeze": s.freeze_collected, "junit": s.junit, "platform": None if info.platform == "all" else info.platform}
        with keys.kind("test"):
            info.future = self.client.submit(run_session, spec, key=keys.task_key("pytest_session", s.run_id, info.name),
                                             workers=[info.worker], allow_other_workers=True, pure=False, retries=0)

    def _loop(self) -> None:
        checked = time.monotonic()
        while not all(p.done for p in self.platforms.values()):
            try:
                batch = [self.events.get(timeout=0.2)]
            except queue_mod.Empty:
                batch = []
            while not self.events.empty() and len(batch) < 500:
                batch.append(self.events.get_nowait())
            for message in batch:
                self._handle(message)
            if time.monotonic() - checked > WORKER_CHECK_SECONDS:
                checked = time.monotonic()
                self._check_sessions()
            self._dispatch()
            self._maybe_progress()
        self._maybe_progress(force=True)

    # -- events ------------------------------------------------------------------------
    def _handle(self, message: dict[str, Any]) -> None:
        info = self.sessions.get(message.get("session", ""))
        if info is None:
            return
        kind = message["ev"]
        if kind == "hello":
            self._hello(info, message)
            return
        if message.get("attempt") != info.attempt:
            return  # a lost attempt's late words
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(info, message)

    def _hello(self, info: SessionInfo, message: dict[str, Any]) -> None:
        if info.attempt is not None and not info.lost:
            self._lose(info, "its worker was lost; the session started again elsewhere")
        info.attempt, info.worker = message["attempt"], message["worker"]
        if info.inbox is not None:
            info.old_inboxes.append(info.inbox)
        info.inbox = Queue(inbox_name(self.settings.run_id, info.name, info.attempt), client=self.client)
        info.machine = self.machine_of.get(info.worker, message["machine"])  # the registry's host@ip
        info.lost = info.ended = False

    def _on_collected(self, info: SessionInfo, message: dict[str, Any]) -> None:
        plat = self.platforms[info.platform]
        if plat.done:
            self._send(info, {"op": "shutdown"})
            return
        if plat.collection is None:
            self._first_collection(plat, message)
            if plat.done:
                self._send(info, {"op": "shutdown"})
                return
        elif message["digest"] != plat.collection["digest"]:
            plat.collection.setdefault("mismatches", []).append(f"{info.name} on {info.machine}")
            self._send(info, {"op": "shutdown"})
            return
        assert plat.dispatcher is not None
        plat.dispatcher.add_session(info.name, info.machine)

    def _first_collection(self, plat: PlatformState, message: dict[str, Any]) -> None:
        collection = {k: message.get(k) for k in ("ids", "digest", "errors", "categories", "deselected", "reports")}
        collection["machine"] = self.sessions[message["session"]].machine
        plat.collection = collection
        self.listener.collected(plat.label, collection)
        ids = list(collection["ids"] or [])
        if collection["errors"] and "--continue-on-collection-errors" not in self.settings.args:
            plat.done = True  # pytest stops here too: "Interrupted: N errors during collection"
            return
        if not ids:
            plat.done = True
            return
        estimates, known = self.settings.estimate(ids)
        plat.dispatcher = Dispatcher(ids, estimates, self.settings.dist, ordered_by_duration=known,
                                     retries=self.settings.retries, allowed_losses=_allowed_failures())
        plat.collected_at = time.monotonic()

    def _on_tests(self, info: SessionInfo, message: dict[str, Any]) -> None:
        plat = self.platforms[info.platform]
        dispatcher = plat.dispatcher
        if dispatcher is None:
            return
        position = self._positions(plat)
        for result in message.get("results", ()):
            index = position.get(result["nodeid"])
            if index is None:
                continue
            result["machine"] = info.machine
            dispatcher.finished_test(info.name, index, float(result.get("duration") or 0.0))
            info.ran.append(result["nodeid"])
            info.busy += float(result.get("duration") or 0.0)
            info.estimate += dispatcher.estimates[index]
            self._record(plat, info, index, result)

    def _positions(self, plat: PlatformState) -> dict[str, int]:
        assert plat.collection is not None
        if "position" not in plat.collection:
            plat.collection["position"] = {n: i for i, n in enumerate(plat.collection["ids"])}
        return plat.collection["position"]

    def _record(self, plat: PlatformState, info: SessionInfo, index: int, result: dict[str, Any]) -> None:
        """Keep a test's result: first attempt, or a retry's verdict (flaky or still failing)."""
        assert plat.dispatcher is not None
        nodeid = result["nodeid"]
        failed = result["outcome"] in ("failed", "error")
        previous = plat.results.get(nodeid)
        if previous is None:
            plat.results[nodeid] = result
        elif not failed:
            earlier = previous.get("flaky_failures", []) + [
                {k: previous.get(k) for k in ("message", "longrepr", "machine", "outcome")}]
            plat.results[nodeid] = {**result, "outcome": "flaky", "flaky_failures": earlier,
                                    "categories": ["flaky"], "first_categories": previous.get("categories")}
        else:
            previous.setdefault("attempts", []).append({k: result.get(k) for k in ("outcome", "message", "machine")})
        retried = failed and not result.get("lost") and plat.dispatcher.retry(index, info.machine)
        if failed and previous is None:
            self.failures += sum(1 for c in result.get("categories", ()) if c in ("failed", "error")) or 1
        self.listener.result(plat.label, plat.results[nodeid], final=not retried)
        if self.settings.maxfail and self.failures >= self.settings.maxfail and not self.stopped:
            self._stop(f"stopping after {self.failures} failures")

    def _on_released(self, info: SessionInfo, message: dict[str, Any]) -> None:
        plat = self.platforms[info.platform]
        dispatcher = plat.dispatcher
        if dispatcher is not None:
            dispatcher.released(info.name, message.get("ids", []))
            if dispatcher.stopped:  # given back after -x/--maxfail: they will not run
                plat.notrun.extend(dispatcher.nodeids[i] for i in message.get("ids", [])
                                   if i not in dispatcher.finished)

    def _on_stopped(self, info: SessionInfo, message: dict[str, Any]) -> None:
        self._on_released(info, {"ids": message.get("released", [])})
        if not self.stopped:
            self._stop(message.get("reason") or "stopped")

    def _on_failed(self, info: SessionInfo, message: dict[str, Any]) -> None:
        plat = self.platforms[info.platform]
        info.outcome = {"rc": message.get("rc"), "output": message.get("output", ""),
                        "timed_out": message.get("timed_out", False)}
        if plat.dispatcher is not None:
            plat.dispatcher.released(info.name, message.get("released", []))
            plat.dispatcher.lost(info.name)
        info.ended = True
        self._platform_dead_check(plat)

    def _on_ended(self, info: SessionInfo, message: dict[str, Any]) -> None:
        info.ended = True
        plat = self.platforms[info.platform]
        if plat.dispatcher is not None and info.name in plat.dispatcher.sessions:
            plat.dispatcher.lost(info.name)
        self._platform_dead_check(plat)

    # -- failures of whole sessions ----------------------------------------------------
    def _check_sessions(self) -> None:
        self._check_scheduler()
        try:
            present = set(self.client.nthreads())
        except Exception:
            return
        for info in self.sessions.values():
            gone_worker = info.attempt is not None and not info.ended and info.worker not in present
            failed_task = info.future is not None and info.future.status in ("error", "cancelled")
            if (gone_worker or failed_task) and not info.lost and not info.ended:
                reason = "its worker was lost" if gone_worker else f"its task failed: {_task_error(info.future)}"
                self._lose(info, reason)
        for plat in self.platforms.values():
            self._platform_dead_check(plat)

    def _check_scheduler(self) -> None:
        """End the run with one clear error when the scheduler is gone for good.

        A client that lost its scheduler reconnects for a while, then closes; a scheduler that
        restarted on the same address has cancelled every future of the run. Either way no
        session will ever report again: waiting would hang the run (and the command) forever.
        """
        status = str(getattr(self.client, "status", "running"))
        live = [i.future for i in self.sessions.values() if i.future is not None and not i.ended]
        restarted = bool(live) and all(f.status == "cancelled" for f in live)
        if status in ("closing", "closed") or restarted:
            raise SchedulerUnreachable(
                f"test run {self.settings.run_id} lost its scheduler mid-run "
                f"({'the client gave up reconnecting' if not restarted else 'the scheduler restarted'}); "
                "run the tests again once the cluster is back")

    def _lose(self, info: SessionInfo, reason: str) -> None:
        info.lost = True
        plat = self.platforms[info.platform]
        if plat.dispatcher is None:
            return
        for index in plat.dispatcher.lost(info.name):
            nodeid = plat.dispatcher.nodeids[index]
            plat.lost.append(nodeid)
            message = f"lost: KilledWorker: the worker running this test died ({reason}) too many times"
            self._record(plat, info, index, {"nodeid": nodeid, "outcome": "error", "categories": ["error"],
                                             "duration": 0.0, "message": message, "longrepr": message,
                                             "worker": info.worker, "machine": info.machine, "lost": True})

    def _platform_dead_check(self, plat: PlatformState) -> None:
        """A platform whose sessions are all gone ends: unrun tests are errors, or a failure."""
        if plat.done:
            return
        mine = [s for s in self.sessions.values() if s.platform == plat.label]
        alive = [s for s in mine if not s.ended and not (s.future is not None and s.future.done())]
        if alive:
            return
        if plat.collection is None:
            failed = next((s.outcome for s in mine if s.outcome), None)
            plat.failure = failed or {"rc": 2, "output": "no session could start: " + "; ".join(
                f"{s.name}: {_task_error(s.future)}" for s in mine)}
            plat.done = True
            return
        if plat.dispatcher is not None:
            never = plat.dispatcher.stop()
            for index in never:
                plat.lost.append(plat.dispatcher.nodeids[index])
        plat.done = True

    def _stop(self, reason: str) -> None:
        self.stopped = reason
        for plat in self.platforms.values():
            if plat.dispatcher is not None:
                plat.notrun.extend(plat.dispatcher.nodeids[i] for i in plat.dispatcher.stop())
        for info in self.sessions.values():
            self._send(info, {"op": "stop"})

    # -- sending -----------------------------------------------------------------------
    def _expected(self, plat: PlatformState) -> int:
        return sum(1 for s in self.sessions.values() if s.platform == plat.label and not s.ended and not s.lost)

    def _dispatch(self) -> None:
        for plat in self.platforms.values():
            dispatcher = plat.dispatcher
            if dispatcher is None or plat.done:
                continue
            expected = self._expected(plat)
            dispatcher.expected = max(1, expected)
            if len(dispatcher.sessions) < expected and time.monotonic() - plat.collected_at < self.settings.start_grace:
                continue  # the first chunks wait (briefly) for every session, as xdist's do
            for order in dispatcher.plan():
                self._send(self.sessions[order.session], {"op": order.op, "ids": order.ids, "last": order.last})
            if dispatcher.complete() or (self.stopped and all(
                    s.ended or s.lost for s in self.sessions.values() if s.platform == plat.label)):
                plat.done = True

    def _send(self, info: SessionInfo, message: dict[str, Any]) -> None:
        if info.inbox is not None and info.attempt is not None:
            info.inbox.put({**message, "attempt": info.attempt})

    def _maybe_progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_progress < 0.25:
            return
        self.last_progress = now
        total = sum(len((p.collection or {}).get("ids") or []) for p in self.platforms.values())
        done = sum(len(p.results) for p in self.platforms.values())
        running = sum(1 for p in self.platforms.values() if p.dispatcher
                      for s in p.dispatcher.sessions.values() if s.queued)
        elapsed = now - self.started
        eta = (elapsed / done) * (total - done) if done and total > done else (0.0 if total and done >= total else None)
        alive = sum(1 for s in self.sessions.values() if s.attempt and not s.ended and not s.lost)
        self.listener.progress(TestProgress(done=min(done, total), total=total, failed=self.failures,
                                            running=running, sessions=alive, elapsed=elapsed, eta=eta))

    def _abort(self) -> None:
        """Stop every session without waiting for it; the reap below ends their processes."""
        for info in self.sessions.values():
            try:
                if info.inbox is not None:
                    info.inbox.put({"op": "stop", "attempt": "*"})
                if info.future is not None:
                    info.future.cancel()
            except Exception:  # the client may be half closed already
                continue

    def _shutdown(self) -> None:
        for info in self.sessions.values():
            if info.inbox is not None:
                try:
                    info.inbox.put({"op": "shutdown", "attempt": "*"})
                except Exception:
                    pass
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for info in self.sessions.values():
            future = info.future
            if future is None:
                continue
            if info.attempt is None or info.lost:  # never started (or moved and not started): drop it
                future.cancel()
                continue
            try:
                info.outcome = {**info.outcome, **future.result(timeout=max(0.1, deadline - time.monotonic()))}
            except Exception as exc:  # lost worker, cancelled, or too slow to end
                info.outcome.setdefault("error", f"{type(exc).__name__}: {exc}")
                future.cancel()
        for info in self.sessions.values():
            for inbox in (*info.old_inboxes, info.inbox):
                if inbox is not None:
                    try:
                        inbox.close()
                    except Exception:
                        pass


def _allowed_failures() -> int:
    import dask.config

    return int(dask.config.get("distributed.scheduler.allowed-failures", 3))


def _task_error(future: Future | None) -> str:
    if future is None:
        return "not submitted"
    try:
        exc = future.exception(timeout=0.1)
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return f"{type(exc).__name__}: {exc}" if exc is not None else future.status


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


__all__ = ["CANNOT_START", "Listener", "RunSettings", "SuiteRun", "TestProgress", "new_run_id", "reap_run"]

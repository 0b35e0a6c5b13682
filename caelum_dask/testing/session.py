"""The worker side of a test run: one long-lived pytest session per worker slot.

``run_session(spec)`` is a Dask task that holds one worker thread for the whole run. It starts
``python -m pytest -p _caelum_session …`` in the unpacked snapshot (the plugin in
:mod:`.session_plugin` collects once, then runs whatever it is handed) and relays:

* commands from the client (a ``distributed.Queue`` named in the spec: run, steal, stop,
  shutdown) to the session's command pipe;
* the session's events (collected, test started, test finished, released, stopped) to the
  client in small batches as Dask events (``Worker.log_event`` on the run's topic).

The relay owns the failure handling that only a process on that machine can do:

* a test that kills the interpreter (``os._exit``, a segfault) is reported as an error naming
  the exit code; a test that makes no progress for ``timeout`` seconds is reported hung and its
  process tree killed; either way the tests handed to the dead interpreter that had not run go
  back to the run's queue, and a fresh interpreter starts on the slot, collects, and takes
  work again;
* every process a session started dies with it: its live tree and every process carrying its
  marker variable (:mod:`caelum_dask.proctree`), including helpers that started their own
  session; the pytest process itself dies with the worker (``PR_SET_PDEATHSIG`` on Linux);
* the client going away (cancel, Ctrl-C, a killed client) is noticed from the scheduler —
  the task is no longer processing — and the session is ended.

The environment a user's tests see is the worker's minus what the Dask nanny injects for its
own sake, minus the variables of any pytest the worker itself runs under, plus ``--env``.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caelum_dask import proctree
from caelum_dask.testing import snapshot as snapshot_mod

PLUGIN_MODULE = "_caelum_session"
#: variables a pytest run exports to its own process; a worker running inside pytest leaks them
_PYTEST_OWN = ("PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_XDIST_WORKER",
               "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
#: variables Dask sets in its own processes (an in-process scheduler, proctitle)
_DASK_OWN = ("DASK_SCHEDULER_ADDRESS", "__DASK_PARENT_PID")
OUTPUT_TAIL = 6000
#: the exit code reported when the interpreter could not be started at all
CANNOT_START = 127
#: the variable that marks every process of one session (see caelum_dask.proctree)
MARKER = "CAELUM_TEST_SESSION"
#: how often results are sent to the client while tests stream in
FLUSH_SECONDS = 0.03
#: how long an interpreter that said it finished may take to exit before it is killed
EXIT_SECONDS = 30.0
#: after reading results, wait this long before the next read (fewer wake-ups, same latency)
READ_PAUSE_SECONDS = 0.005
#: how often the relay asks the scheduler whether its task is still wanted
ALIVE_CHECK_SECONDS = 2.0


def where() -> dict[str, str]:
    """The worker address and machine name of the current task (or this process)."""
    try:
        from distributed import get_worker

        address = get_worker().address
    except ValueError:
        address = ""
    return {"worker": address, "machine": socket.gethostname()}


def _dask_injected() -> dict[str, str]:
    import dask.config

    injected = {k: str(v) for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items()}
    injected.update({k: str(v) for k, v in (dask.config.get("distributed.nanny.environ") or {}).items()})
    injected.setdefault("PYTHONHASHSEED", "6640")  # the nanny's fixed seed (distributed/nanny.py)
    return injected


def clean_environment(base: dict[str, str] | None = None,
                      extra: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The environment a user's tests see: ``base`` minus Dask's and pytest's own variables.

    A variable Dask injects is removed only while it still has Dask's value, so a user who
    set ``OMP_NUM_THREADS=8`` on that machine on purpose keeps it.
    """
    env = dict(os.environ if base is None else base)
    removed = []
    for key, value in _dask_injected().items():
        if env.get(key) == value:
            del env[key]
            removed.append(key)
    for key in (*_PYTEST_OWN, *_DASK_OWN):
        if env.pop(key, None) is not None:
            removed.append(key)
    env.update(extra or {})
    return env, sorted(removed)


def plugin_dir() -> Path:
    """A folder holding the session plugin as an importable top-level module."""
    from caelum_dask.testing import session_plugin

    source = Path(session_plugin.__file__).read_bytes()
    folder = snapshot_mod.cache_root() / f".plugin-{hashlib.sha256(source).hexdigest()[:16]}"
    target = folder / f"{PLUGIN_MODULE}.py"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(source)
        os.replace(tmp, target)
    return folder


def snapshot_here(snapshot: dict[str, str]) -> tuple[Path, bool]:
    """The unpacked snapshot on this machine, fetched from the cluster if this is its first."""

    def fetch() -> bytes:
        # get_client, not worker_client: a session must not secede (and later wait to rejoin
        # a thread pool that the run's other sessions hold until the end)
        from distributed import get_client

        client = get_client()
        return client.gather(client.get_dataset(snapshot["dataset"]))

    return snapshot_mod.ensure_unpacked(snapshot["digest"], fetch)


def session_command(python: str, root: Path, args: Sequence[str], junit: Path | None) -> list[str]:
    """``python -m pytest -p _caelum_session …``: one session's command line."""
    return [python, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN_MODULE, "--rootdir", str(root),
            *([f"--junitxml={junit}"] if junit else []), *args]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


class SessionProcess:
    """One pytest interpreter: its pipes, its output log and its end."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.log = scratch.with_suffix(".out")
        self.started = time.monotonic()
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        env = {**env, "CAELUM_SESSION_FDS": f"{cmd_r},{out_w}", MARKER: self.marker}
        self._buffer = b""
        with open(self.log, "wb") as log:
            try:
                self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                    command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, preexec_fn=_die_with_parent, pass_fds=(cmd_r, out_w))
                self.error = ""
            except OSError as exc:  # e.g. --python names no interpreter on this machine
                self.proc, self.error = None, f"cannot run {command[0]}: {exc}"
        os.close(cmd_r)
        os.close(out_w)
        self.commands = os.fdopen(cmd_w, "wb")
        self.events_fd = out_r

    def send(self, command: dict[str, Any]) -> None:
        try:
            self.commands.write((json.dumps(command) + "\n").encode())
            self.commands.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # it died; the relay finds out from its events pipe

    def read(self, timeout: float) -> list[dict[str, Any]] | None:
        """Events that arrived within ``timeout`` ([] if none); None once the pipe is closed."""
        ready, _, _ = select.select([self.events_fd], [], [], timeout)
        if not ready:
            return []
        chunk = os.read(self.events_fd, 1 << 20)
        if not chunk:
            return None
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def end(self, exiting: bool = False) -> tuple[int, str]:
        """Kill whatever is left of it (tree and marked orphans); its exit code and output.

        ``exiting``: its pipe closed, so it is on its way out; its own exit code is read
        before anything is killed (a crash must be reported with the code it exited with).
        """
        rc: int | None = CANNOT_START if self.proc is None else None
        if self.proc is not None and exiting:
            try:
                rc = self.proc.wait(timeout=EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                rc = None
        pid = self.proc.pid if self.proc is not None else None
        descendants = [p for p in proctree.tree(pid) if p.pid != pid] if pid and rc is None else []
        proctree.kill(descendants + proctree.marked(MARKER, self.marker))
        if self.proc is not None and rc is None:
            self.proc.kill()
            rc = self.proc.wait()
        try:
            self.commands.close()
        except OSError:
            pass
        os.close(self.events_fd)
        try:
            output = self.log.read_bytes().decode("utf-8", "replace")
        except OSError:
            output = ""
        self.log.unlink(missing_ok=True)
        return int(rc if rc is not None else -9), self.error or output


class Stream:
    """Events to the client: batched test results, control events sent at once."""

    def __init__(self, topic: str, header: dict[str, Any]) -> None:
        from distributed import get_worker

        self.worker = get_worker()
        self.topic = topic
        self.header = header
        self.results: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        self.flush()
        self.worker.log_event(self.topic, {**self.header, "ev": event, **fields})

    def flush(self, when_due: bool = False) -> None:
        if when_due and time.monotonic() - self.last_flush < FLUSH_SECONDS:
            return
        if self.results:
            self.worker.log_event(self.topic, {**self.header, "ev": "tests", "results": self.results})
            self.results = []
        self.last_flush = time.monotonic()


class Relay:
    """The state of one session slot across its interpreter restarts."""

    def __init__(self, spec: dict[str, Any], root: Path, stream: Stream, here: dict[str, str]) -> None:
        self.spec = spec
        self.root = root
        self.stream = stream
        self.here = here
        self.lock = threading.RLock()
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.digest = ""
        self.abandoned = False  # the client is gone: end without restarting
        self.liveness: Liveness | None = None
        self.handed: dict[int, None] = {}  # handed to the interpreter, not reported or released yet
        self.last = False
        self.closing = False  # shutdown or stop asked: an exit is expected
        self.quiet_since = time.monotonic()  # the last result (or the last test handed over)
        self.finished = False  # the interpreter's results are complete (it is only exiting)
        self.proc: SessionProcess | None = None
        self.junit: list[str] = []
        self.runs: list[dict[str, Any]] = []
        self.tails: list[str] = []
        self.scratch = snapshot_mod.cache_root() / ".sessions"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.timeout = float(spec["timeout"])

    # -- commands from the client (the command thread) --------------------------------
    def command(self, message: dict[str, Any]) -> None:
        with self.lock:
            op = message.get("op")
            if op == "run":
                if not self.handed:
                    self.quiet_since = time.monotonic()
                self.handed.update(dict.fromkeys(message["ids"]))
                self.last = bool(message.get("last"))
            elif op in ("stop", "shutdown"):
                self.closing = True
            if self.proc is not None:
                self.proc.send({k: v for k, v in message.items() if k != "attempt"})

    # -- the interpreter (the task thread) --------------------------------------------
    def start(self) -> bool:
        """Start an interpreter and wait for its collection; False if it cannot run tests."""
        name = f"{self.spec['run_id']}-{self.spec['session']}-{uuid.uuid4().hex[:8]}"
        junit = self.scratch / f"{name}.xml"
        env, _ = clean_environment(extra=self.spec.get("env") or {})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir()), env.get("PYTHONPATH", "")) if p)
        env.update({"CAELUM_TEST_RUN": self.spec["run_id"], "CAELUM_TEST_SESSION_NAME": self.spec["session"],
                    "PYTHONUNBUFFERED": "1", "CAELUM_SESSION_FULL": "1" if self.spec.get("full") else "0",
                    "CAELUM_SESSION_FREEZE": "1" if self.spec.get("freeze") else "0"})
        command = session_command(self.spec.get("python") or sys.executable, self.root, self.spec["args"],
                                  junit if self.spec.get("junit") else None)
        proc = SessionProcess(command, self.root / self.spec.get("workdir", ""), env, self.scratch / name)
        proc.junit = junit  # type: ignore[attr-defined]
        collected = self._await_collection(proc)
        if collected is None:
            return False
        with self.lock:
            self.proc = proc
            if self.ids and collected["digest"] != self.digest:
                self._finish_proc("collected other tests than before")
                return False
            self.ids, self.digest = collected["ids"], collected["digest"]
            self.position = {nodeid: i for i, nodeid in enumerate(self.ids)}
            pending = list(self.handed)
            if pending or self.closing:
                proc.send({"op": "run", "ids": pending, "last": self.last})
            if self.closing:
                proc.send({"op": "shutdown"})
        return True

    def _await_collection(self, proc: SessionProcess) -> dict[str, Any] | None:
        deadline = time.monotonic() + float(self.spec.get("collect_timeout") or self.timeout)
        while proc.proc is not None and time.monotonic() < deadline:
            records = proc.read(min(1.0, max(0.01, deadline - time.monotonic())))
            if records is None:
                break
            for record in records:
                if "collected" in record:
                    if not self.ids:  # the first interpreter's collection is the session's
                        self.stream.emit("collected", **record["collected"])
                    return record["collected"]
        self.proc = proc
        timed_out = time.monotonic() >= deadline
        rc, output = self._finish_proc("collection timed out" if timed_out else "", exiting=not timed_out)
        self.stream.emit("failed", rc=rc, output=output[-OUTPUT_TAIL:], timed_out=timed_out,
                         released=list(self.handed))
        return None

    def _finish_proc(self, reason: str, exiting: bool = False) -> tuple[int, str]:
        """End the current interpreter and everything it started; keep its JUnit and output."""
        proc, self.proc = self.proc, None
        assert proc is not None
        rc, output = proc.end(exiting)
        junit: Path = proc.junit  # type: ignore[attr-defined]
        if junit.exists():
            self.junit.append(junit.read_text(encoding="utf-8", errors="replace"))
            junit.unlink(missing_ok=True)
        self.tails.append(output[-OUTPUT_TAIL:])
        self.runs.append({"rc": rc, "reason": reason, "elapsed": round(time.monotonic() - proc.started, 3)})
        return rc, output

    def pump(self) -> bool:
        """Relay what the interpreter says until it ends; True if the relay should go on."""
        assert self.proc is not None
        while True:
            records = self.proc.read(FLUSH_SECONDS)
            if records is None:
                return self._ended(hung=False)
            for record in records:
                self._record(record)
            self.stream.flush(when_due=True)
            if self.finished and not self.handed:
                return self._detach()
            if records:
                time.sleep(READ_PAUSE_SECONDS)  # let results pile up: one read for many tests
            if self.running() is not None and time.monotonic() - self.quiet_since > self.timeout:
                return self._ended(hung=True)
            if self.liveness is not None and self.liveness.lost():  # cancelled, or the client is gone
                with self.lock:
                    self.abandoned = self.closing = True
                return self._ended(hung=False)

    def _detach(self) -> bool:
        """Results complete: return now; a thread sees the interpreter out and ends its tree.

        Interpreter shutdown (freeing a large heap, atexit handlers such as coverage's) is
        nobody's wait: the run's results do not change any more.
        """
        with self.lock:
            proc, self.proc = self.proc, None
            assert proc is not None
            junit: Path = proc.junit  # type: ignore[attr-defined]
            if junit.exists():
                self.junit.append(junit.read_text(encoding="utf-8", errors="replace"))
                junit.unlink(missing_ok=True)
            self.runs.append({"rc": 0, "reason": "ended", "elapsed": round(time.monotonic() - proc.started, 3)})
        threading.Thread(target=proc.end, args=(True,), name="caelum-session-exit", daemon=True).start()
        return False

    def running(self) -> str | None:
        """The test the interpreter runs now: the first handed over and not reported.

        Nothing runs while the only test queued waits for its successor (``nextitem``).
        """
        with self.lock:
            if not self.handed or (len(self.handed) < 2 and not (self.last or self.closing)):
                return None
            return self.ids[next(iter(self.handed))] if self.ids else None

    def _record(self, record: dict[str, Any]) -> None:
        with self.lock:
            if "r" in record:
                self.quiet_since = time.monotonic()
                self._forget([self.position.get(record["r"], -1)])
                self.stream.results.append({**{k: v for k, v in record.items() if k != "r"},
                                            "nodeid": record["r"], **self.here})
            elif "finished" in record:
                self.finished = True
            elif "released" in record:
                self._forget(record["released"])
                if "stopped" in record:
                    self.closing = True
                    self.stream.emit("stopped", reason=record["stopped"], released=record["released"])
                else:
                    self.stream.emit("released", ids=record["released"])

    def _forget(self, indices: list[int]) -> None:
        for index in indices:
            self.handed.pop(index, None)

    def _ended(self, hung: bool) -> bool:
        """The interpreter exited (or hangs): report the culprit, restart if tests remain."""
        with self.lock:
            culprit = self.running()
            if hung:
                reason = f"hung: no progress for {self.timeout:g}s; the session's process tree was killed"
            else:
                reason = "crashed" if culprit is not None else "ended"
            rc, output = self._finish_proc(reason, exiting=not hung and not self.abandoned)
            if self.abandoned or (culprit is None and (self.closing or not self.handed)):
                return False  # the end we asked for
            if culprit is None:  # died outside any test: its tests go back to the client
                self.stream.emit("failed", rc=rc, output=output[-OUTPUT_TAIL:], timed_out=False,
                                 released=list(self.handed))
                self.handed.clear()
                return False
            if not hung:
                reason = f"crashed: the Python interpreter exited with code {rc} during this test"
                self.runs[-1]["reason"] = reason
            self._forget([self.position.get(culprit, -1)])
            detail = output[-OUTPUT_TAIL:]
            self.stream.results.append({
                "nodeid": culprit, "outcome": "error", "categories": ["error"], "reports": [],
                "duration": round(max(0.0, time.monotonic() - self.quiet_since), 3), "message": reason,
                "longrepr": f"{reason}\n\n{detail}".rstrip(), "crash": True, **self.here})
            if self.closing:  # stopped (or stopping): no new interpreter for what is left
                return False
            # the rest go back to the run's queue (other sessions take them while this slot's
            # new interpreter collects); the queue hands this slot new work once it is ready
            self.stream.emit("restart", reason=reason, nodeid=culprit)
            self.stream.emit("released", ids=list(self.handed))
            self.handed.clear()
            self.quiet_since = time.monotonic()
        return self.start()

    def result(self, started: float, fetched: bool, removed: list[str]) -> dict[str, Any]:
        return {"session": self.spec["session"], "platform": self.spec.get("platform"), **self.here,
                "duration": time.time() - started, "junit": self.junit, "runs": self.runs,
                "output_tail": "\n".join(self.tails)[-OUTPUT_TAIL:], "env_removed": removed,
                "snapshot_fetched": fetched}


def _listen(relay: Relay, inbox: Any, attempt: str) -> None:
    """Command thread: the client's queue to the relay, until the relay says goodbye.

    It blocks on the queue without a timeout (a timed-out ``Queue.get`` is logged as an
    error by the scheduler); the relay ends it by putting ``{"op": "bye"}`` in its own queue.
    """
    while True:
        try:
            message = inbox.get()
        except Exception:  # the client or scheduler went away
            relay.command({"op": "stop"})
            return
        if message.get("op") == "bye" and message.get("attempt") == attempt:
            return
        if message.get("attempt") in (attempt, "*"):
            relay.command(message)


class Liveness:
    """Whether the client still wants this task (not cancelled, its client not gone)."""

    def __init__(self, key: Any, address: str) -> None:
        from distributed import get_client

        self.client = get_client()
        self.key = key
        self.address = address
        self.checked = time.monotonic()

    def lost(self) -> bool:
        if time.monotonic() - self.checked < ALIVE_CHECK_SECONDS:
            return False
        self.checked = time.monotonic()
        try:
            return self.key not in (self.client.processing(workers=[self.address]).get(self.address) or ())
        except Exception:
            return True


def inbox_name(run_id: str, session: str, attempt: str) -> str:
    """The Dask queue of one attempt of a session: its commands from the client.

    One queue per attempt, not per session: a ``Queue.get`` still waiting for a session whose
    worker died stays pending on the scheduler and takes the next message put in that queue
    (Dask does not cancel it), so with a shared queue the first command for the session's
    next attempt would be lost and the run would wait for it forever.
    """
    return f"caelum-test-{run_id}-{session}-{attempt}"


def run_session(spec: dict[str, Any]) -> dict[str, Any]:
    """Dask task: one session slot for the whole run (see the module docstring).

    ``spec``: run_id, session, topic, snapshot, python, args (the user's
    pytest arguments, minus what caelum owns), workdir, timeout, collect_timeout, env, full, platform.
    """
    from distributed import Queue, get_client

    started = time.time()
    here = where()
    attempt = uuid.uuid4().hex[:8]
    stream = Stream(spec["topic"], {"run_id": spec["run_id"], "session": spec["session"], "attempt": attempt})
    stream.emit("hello", **here, pid=os.getpid())
    root, fetched = snapshot_here(spec["snapshot"])
    _, removed = clean_environment()
    relay = Relay(spec, root, stream, here)
    inbox = Queue(inbox_name(spec["run_id"], spec["session"], attempt), client=get_client())
    relay.liveness = Liveness(stream.worker.get_current_task(), here["worker"])
    listener = threading.Thread(target=_listen, args=(relay, inbox, attempt), daemon=True,
                                name=f"caelum-session-{spec['session']}")
    listener.start()
    try:
        running = relay.start()
        while running:
            running = relay.pump()
    finally:
        with relay.lock:
            if relay.proc is not None:
                relay._finish_proc("ended")
        stream.emit("ended")
        try:
            inbox.put({"op": "bye", "attempt": attempt})
            listener.join(timeout=5)
        finally:
            inbox.close()
    return relay.result(started, fetched, removed)

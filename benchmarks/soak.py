"""Soak: a bounded run of mixed work on a real cluster while workers die and the scheduler restarts.

Run from the repository root (10 minutes by default; the suite runs a short version)::

    PYTHONPATH=$PWD python benchmarks/soak.py                    # 10 minutes, a worker killed every 60 s
    PYTHONPATH=$PWD python benchmarks/soak.py --minutes 3        # kill-every scales down to 18 s
    PYTHONPATH=$PWD python benchmarks/soak.py --minutes 3 --json # one JSON line only

Why: the fault tests prove one fault at a time on one kind of job. A user's cluster sees
everything at once for hours: workflows, analyses, test runs and LLM requests side by side,
machines that vanish, a scheduler that is restarted. This benchmark drives all four engines
through their public APIs (:func:`caelum_dask.workflow.run_file`,
:func:`caelum_dask.analysis.analyze`, :func:`caelum_dask.testing.run_tests`,
:class:`caelum_dask.llm.LLMPool`) in a loop until the deadline on a real `caelum scheduler`
and 3 `caelum worker` subprocesses on 127.0.0.1, with two fake Ollama servers
(tests/fake_ollama.py, run as processes) that the workers find through ``caelum.llm.hosts``.

Faults: every ``--kill-every`` seconds one worker's process group gets SIGKILL and a
replacement starts; once, half-way, the scheduler gets SIGTERM while a workflow run is held
mid-run (its last task waits on a hold file), a new scheduler starts on the same port with the
same caelum home, the workers reconnect or are restarted, and the interrupted run is finished
with ``resume=``. A job whose attempt fails is tried again (a workflow is resumed) once the
cluster is back; work lost = jobs that never completed successfully, and must be 0.

Reported (a readable table, or one JSON line with ``--json``): jobs done per kind, attempts
retried, lost; RSS of the scheduler(s) and of every worker at start/peak/end (psutil, every
0.5 s); the processes and open file descriptors of this process's tree before and after
(equal: everything stopped, nothing leaked) plus any process left with the soak's marker in its
environment (must be none); the box's load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.config
import psutil

from caelum_dask import connect
from caelum_dask.proctree import marked
from caelum_dask.results import Result

ROOT = Path(__file__).resolve().parent.parent
FAKE_OLLAMA = ROOT / "tests" / "fake_ollama.py"
MODEL = "llama3.2:latest"
KINDS = ("workflow", "analysis", "tests", "llm")
MARKER = "CAELUM_SOAK"  # every process the soak starts carries MARKER=<soak id>: orphans are found by it
WORKERS = 3
ATTEMPTS = 4  # tries per job (the first and its retries/resumes) before it counts as lost
MIB = 1024**2
NO_WORKERS_TIMEOUT = "30s"  # the soak scheduler's distributed.scheduler.no-workers-timeout
HANG_AFTER = 120  # seconds past the deadline after which a job still running counts as hung

WORKFLOW = '''"""The soak's workflow: prepare, square slowly, total; `total` waits while the hold file exists."""
import os, time
from caelum_dask.workflow import Workflow, task


@task
def prepare(seed, i):
    return seed * 100 + i


@task
def square(v, pause):
    time.sleep(pause)
    return v * v


@task
def total(values, hold, holding):
    while hold and os.path.exists(hold):  # the soak holds one run here to restart the scheduler under it
        open(holding, "a").close()
        time.sleep(0.05)
    return sum(values)


with Workflow("soak", params={"seed": 0, "pause": 0.2, "hold": "", "holding": ""}) as wf:
    total([square(prepare(wf.param("seed"), i), wf.param("pause")) for i in range(WIDTH)],
          wf.param("hold"), wf.param("holding"))
'''
WIDTH = 6
SAMPLE_TESTS = 8
STDLIB_SOURCES = ("json", "textwrap.py", "shlex.py", "fnmatch.py", "colorsys.py", "bisect.py")


@dataclass
class SoakResult(Result):
    """What one soak did; ``to_dict()`` is its JSON line."""

    minutes: float
    kill_every: float
    seconds: float = 0.0
    done: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    retried: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    lost: int = 0
    lost_jobs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # why attempts failed (first few)
    kills: int = 0
    scheduler_restarts: int = 0
    reconnected_workers: int = 0
    restarted_workers: int = 0
    interrupted_run: str | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    processes_before: int = 0
    processes_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    leftovers: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def resumed(self) -> bool:
        """The run the scheduler restart interrupted was finished with ``resume=``."""
        return any(r["resumed_from"] == self.interrupted_run and r["state"] == "completed" for r in self.resumes)


def tree_usage(foreign: frozenset[int] = frozenset()) -> tuple[int, int]:
    """(processes, open file descriptors) of this process and all its descendants, leaving out
    ``foreign``: children that were there before the soak (a test suite's other fixtures), whose
    descriptors come and go with their own work."""
    me = psutil.Process()
    procs, fds = 0, 0
    for proc in [me, *(p for p in me.children(recursive=True) if p.pid not in foreign)]:
        try:
            fds += proc.num_fds()
            procs += 1
        except psutil.Error:
            continue
    return procs, fds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_text(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The first group of ``pattern`` once it shows in the log at ``path``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace")) if path.exists() else None
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"{path.stem} exited ({proc.returncode}):\n{path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{path.stem} did not start in {timeout:.0f} s:\n{path.read_text(errors='replace')[-2000:]}")


class Memory:
    """RSS of the labelled processes every 0.5 s: first, peak and last sample of each.

    A process counts from the moment it is ready (``ready()`` true: the scheduler listening, a
    worker registered), so "start" is a started process's RSS, not an interpreter's first page.
    """

    def __init__(self) -> None:
        self.procs: dict[str, tuple[psutil.Process, Callable[[], bool]]] = {}
        self.figures: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-memory", daemon=True)

    def watch(self, label: str, pid: int, ready: Callable[[], bool] = lambda: True) -> None:
        with self._lock:
            self.procs[label] = (psutil.Process(pid), ready)
        self.sample()

    def sample(self) -> None:
        with self._lock:
            procs = list(self.procs.items())
        for label, (proc, ready) in procs:
            if label not in self.figures and not ready():
                continue
            try:
                rss = proc.memory_info().rss / MIB
            except psutil.Error:
                continue
            if not rss:  # a zombie waiting to be reaped
                continue
            row = self.figures.setdefault(label, {"start": rss, "peak": rss, "end": rss})
            row["peak"], row["end"] = max(row["peak"], rss), rss

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def __enter__(self) -> "Memory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class SoakCluster:
    """The scheduler (a fixed port, so a restart keeps the address), workers and fake Ollamas.

    Every process runs in its own session (a group the soak can kill whole) with the soak's
    marker in its environment; :meth:`stop` ends them all.
    """

    def __init__(self, work: Path, home: Path, soak_id: str, memory: Memory) -> None:
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.memory = memory
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.workers: list[str] = []
        self.generation = 0
        self._names = iter(range(1, 10_000))
        self.env = {
            **os.environ, MARKER: soak_id, "PYTHONUNBUFFERED": "1", "DASK_CAELUM__HOME": str(home),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "DASK_CAELUM__LLM__PROBE_DEFAULT": "False", "DASK_CAELUM__LLM__PROBE_INTERVAL": "0.5s",
            # A task restricted to workers that all died fails after this instead of waiting
            # forever (LLMPool.map pins items to the worker addresses it saw when it started):
            # the job's retry then runs it on the workers there are now. See RESULTS.md, soak.
            "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT": NO_WORKERS_TIMEOUT,
        }
        self.env.pop("CAELUM_SCHEDULER", None)

    def spawn(self, label: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{label}.log", "wb") as log:  # the child keeps its copy; ours closes
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=self.env)
        self.procs[label] = proc
        return proc

    def start_ollamas(self, count: int = 2) -> list[str]:
        """Fake Ollama servers as processes; their URLs go to the workers as ``caelum.llm.hosts``."""
        urls = []
        for i in range(count):
            label = f"ollama{i + 1}"
            proc = self.spawn(label, [sys.executable, str(FAKE_OLLAMA), "--models", MODEL, "--loaded", MODEL,
                                      "--latency", "0.02"])
            urls.append(_wait_text(self.logs / f"{label}.log", r"(http://\S+)", proc))
        self.env["DASK_CAELUM__LLM__HOSTS"] = ",".join(urls)
        return urls

    def start_scheduler(self) -> None:
        self.generation += 1
        label = "scheduler" if self.generation == 1 else f"scheduler#{self.generation}"
        proc = self.spawn(label, [sys.executable, "-m", "caelum_dask", "scheduler", "--host", "127.0.0.1",
                                  "--port", str(self.port), "--dashboard-address", "127.0.0.1:0"])
        _wait_text(self.logs / f"{label}.log", r"Scheduler at:\s+(\S+)", proc)
        self.memory.watch(label, proc.pid)

    @property
    def scheduler(self) -> str:
        return "scheduler" if self.generation == 1 else f"scheduler#{self.generation}"

    def add_worker(self) -> str:
        name = f"w{next(self._names)}"
        proc = self.spawn(name, [sys.executable, "-m", "caelum_dask", "worker", self.address, "--name", name,
                                 "--nthreads", "1", "--", "--no-nanny", "--host", "127.0.0.1",
                                 "--dashboard-address", "127.0.0.1:0"])
        self.workers.append(name)
        log = self.logs / f"{name}.log"
        self.memory.watch(name, proc.pid, lambda: "Registered to" in log.read_text(errors="replace"))
        return name

    def kill(self, label: str, sig: int = signal.SIGKILL) -> None:
        """Signal ``label``'s whole process group and reap it."""
        proc = self.procs[label]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait(timeout=60)

    def kill_oldest_worker(self) -> str:
        """SIGKILL the longest-running worker's process group and start a replacement."""
        victim = self.workers.pop(0)
        self.memory.sample()
        self.kill(victim)
        self.add_worker()
        return victim

    def wait_workers(self, n: int, timeout: float = 120) -> None:
        with connect(self.address, timeout=30) as client:
            client.wait_for_workers(n, timeout=timeout)

    def registered(self) -> set[str]:
        with connect(self.address, timeout=30) as client:
            return {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}

    def stop(self) -> None:
        """SIGTERM every process group still running, SIGKILL what is left after 20 s; reap all."""
        self.memory.sample()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for proc in self.procs.values():  # a group may outlive its leader (a session's helper)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Inputs:
    """The files the jobs work on: the workflow file, a source tree, a tiny test project."""

    workflow: Path
    hold: Path
    holding: Path
    tree: Path
    tree_files: int
    project: Path


def make_inputs(work: Path) -> Inputs:
    """Write the workflow definition, copy a few stdlib modules, generate a passing test project."""
    workflow = work / "soak_workflow.py"
    workflow.write_text(WORKFLOW.replace("range(WIDTH)", f"range({WIDTH})"))
    tree = work / "src"
    tree.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_SOURCES:
        source = stdlib / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tree / name)
    project = work / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_sample.py").write_text("".join(
        f"def test_square_{i}():\n    assert {i} * {i} == {i * i}\n\n\n" for i in range(SAMPLE_TESTS)))
    return Inputs(workflow, work / "hold", work / "holding", tree, len(list(tree.rglob("*.py"))), project)


class Soak:
    """The jobs, the faults and the bookkeeping of one soak."""

    def __init__(self, minutes: float, kill_every: float, work: Path, say: Callable[[str], None]) -> None:
        self.result = SoakResult(minutes=minutes, kill_every=kill_every)
        self.work = work
        self.say = say
        self.soak_id = uuid.uuid4().hex[:12]
        self.memory = Memory()
        self.cluster = SoakCluster(work, work / "home", self.soak_id, self.memory)
        self.inputs = make_inputs(work)
        self.up = threading.Event()  # cleared while the scheduler restarts
        self.lock = threading.Lock()
        self.deadline = 0.0
        self.restart_done = threading.Event()

    # -- jobs --------------------------------------------------------------------------
    def workflow_job(self, n: int, state: dict[str, Any]) -> None:
        """One workflow run; an attempt after an interrupted one resumes it."""
        from caelum_dask.workflow import run_file

        seen: dict[str, str] = {}
        resume = state.get("run_id")
        with connect(self.cluster.address, timeout=30) as client:
            try:
                result = run_file(str(self.inputs.workflow), client=client, resume=resume, cache=False,
                                  params={"seed": n, "hold": str(self.inputs.hold),
                                          "holding": str(self.inputs.holding)},
                                  progress=lambda e: seen.setdefault("run_id", e.run_id or ""))
            except BaseException:
                if seen.get("run_id"):
                    state["run_id"] = seen["run_id"]  # the next attempt finishes this run
                raise
        if resume:
            with self.lock:
                self.result.resumes.append({"resumed_from": resume, "run_id": result.run_id, "state": result.state,
                                            "cached": result.cached, "computed": result.computed})
        expected = sum((n * 100 + i) ** 2 for i in range(WIDTH))
        if not result.ok or result["total"] != expected:
            raise RuntimeError(f"workflow run {result.run_id}: {result.state} {result.errors or result.results}")

    def analysis_job(self, n: int, state: dict[str, Any]) -> None:
        from caelum_dask.analysis import analyze

        with connect(self.cluster.address, timeout=30) as client:
            result = analyze(self.inputs.tree, client=client, use_cache=False)
        if result.stats.get("analysed") != self.inputs.tree_files or len(result.tables["errors"]):
            raise RuntimeError(f"analysis: {result.stats} errors {result.tables['errors'].to_dict('records')[:3]}")

    def tests_job(self, n: int, state: dict[str, Any]) -> None:
        from caelum_dask.testing import TestOptions, run_tests

        with connect(self.cluster.address, timeout=30) as client:
            result = run_tests(self.inputs.project, TestOptions(shards=2), client=client)
        if result.exit_code != 0 or result.counts["passed"] != SAMPLE_TESTS:
            raise RuntimeError(f"test run {result.run_id}: exit {result.exit_code} {result.counts}")

    def llm_job(self, n: int, state: dict[str, Any]) -> None:
        from caelum_dask.llm import LLMPool

        prompts = [f"soak {n} item {i}" for i in range(6)]
        with connect(self.cluster.address, timeout=30) as client, LLMPool(client) as pool:
            # retries=0: a backend failure is this job's retry. The map's own per-item retry
            # resubmits futures that the client cancelled when it lost the scheduler, and those
            # never finish (the map hangs) — see the soak section of RESULTS.md.
            items = pool.map(MODEL, prompts, retries=0)
            direct = pool.generate(MODEL, f"soak {n} direct")
        bad = [i for i, p in zip(items, prompts) if not i["ok"] or not i["response"]["response"].endswith(p)]
        if bad or not direct["response"].endswith(f"soak {n} direct"):
            raise RuntimeError(f"llm: {len(bad)} bad items, e.g. {bad[:1]}")

    def run_kind(self, kind: str) -> None:
        """Jobs of one kind back to back until the deadline; each tried up to ATTEMPTS times."""
        job = getattr(self, f"{kind}_job")
        n = 0
        while time.monotonic() < self.deadline:
            n += 1
            state: dict[str, Any] = {}
            for attempt in range(1, ATTEMPTS + 1):
                self.up.wait()
                try:
                    job(n, state)
                except Exception as exc:  # noqa: BLE001 - every failure is a retry, then a loss
                    self._failed(kind, n, attempt, exc)
                    continue
                with self.lock:
                    self.result.done[kind] += 1
                break

    def _failed(self, kind: str, n: int, attempt: int, exc: BaseException) -> None:
        with self.lock:
            line = f"{kind} #{n} attempt {attempt}: {type(exc).__name__}: {str(exc)[:200]}"
            if len(self.result.failures) < 20:
                self.result.failures.append(line)
            if attempt == ATTEMPTS:
                self.result.lost += 1
                self.result.lost_jobs.append(f"{kind} #{n}")
            else:
                self.result.retried[kind] += 1
        self.say(line)
        time.sleep(1.0)  # let the cluster notice the fault before the next attempt

    # -- faults ------------------------------------------------------------------------
    def restart_scheduler(self) -> None:
        """Hold a workflow run at its last task, SIGTERM the scheduler under it, start a new one
        on the same port, get the workers back (reconnected or restarted); the workflow's next
        attempt resumes the run."""
        holding = self.inputs.holding
        holding.unlink(missing_ok=True)
        self.inputs.hold.touch()
        deadline = time.monotonic() + 180
        while not holding.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no workflow run reached the hold in 180 s")
            time.sleep(0.05)
        self.result.interrupted_run = _running_run()
        self.up.clear()
        old = self.cluster.scheduler
        self.say(f"restart: SIGTERM {old} under a held workflow run")
        self.memory.sample()
        self.cluster.kill(old, signal.SIGTERM)
        self.cluster.procs[old].wait(timeout=60)
        self.inputs.hold.unlink()
        self.cluster.start_scheduler()
        self.result.scheduler_restarts += 1
        self._workers_back()
        self.up.set()
        self.restart_done.set()

    def _workers_back(self) -> None:
        """Workers that reconnect to the new scheduler stay; the others are replaced."""
        alive = [w for w in self.cluster.workers if self.cluster.procs[w].poll() is None]
        deadline = time.monotonic() + 15
        back: set[str] = set()
        while alive and time.monotonic() < deadline:
            back = self.cluster.registered() & set(alive)
            if back == set(alive) or all(self.cluster.procs[w].poll() is not None for w in alive if w not in back):
                break
            time.sleep(0.5)
        self.result.reconnected_workers += len(back)
        for name in list(self.cluster.workers):
            if name not in back:
                if self.cluster.procs[name].poll() is None:
                    self.cluster.kill(name)
                self.cluster.procs[name].wait(timeout=60)
                self.cluster.workers.remove(name)
                self.cluster.add_worker()
                self.result.restarted_workers += 1
        self.cluster.wait_workers(WORKERS)

    def faults(self, started: float) -> None:
        """Kill a worker every ``kill_every`` s; restart the scheduler once half-way."""
        restart_at = started + (self.deadline - started) / 2
        next_kill = started + self.result.kill_every
        while time.monotonic() < self.deadline:
            now = time.monotonic()
            if not self.restart_done.is_set() and now >= restart_at:
                self.restart_scheduler()
            elif now >= next_kill:
                victim = self.cluster.kill_oldest_worker()
                self.result.kills += 1
                self.say(f"kill -9 {victim}")
                next_kill = now + self.result.kill_every
            time.sleep(0.2)

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the jobs in flight; one still running HANG_AFTER s past the deadline is hung:
        counted lost (its client stays open, so the fds after differ too), never waited on forever."""
        limit = max(self.deadline, time.monotonic()) + HANG_AFTER
        for t in threads:
            t.join(timeout=max(0.1, limit - time.monotonic()))
            if t.is_alive():
                with self.lock:
                    self.result.lost += 1
                    self.result.lost_jobs.append(f"{t.name.removeprefix('soak-')} (hung)")
                self.say(f"{t.name}: a job still running {HANG_AFTER} s after the deadline: hung")
                self.say(_stack_of(t))

    # -- the whole run -------------------------------------------------------------------
    def run(self) -> SoakResult:
        with self.memory, dask.config.set({"caelum.home": str(self.work / "home"), "caelum.scheduler-address": None}):
            try:
                self.cluster.start_ollamas()
                self.cluster.start_scheduler()
                for _ in range(WORKERS):
                    self.cluster.add_worker()
                self.cluster.wait_workers(WORKERS)
            except BaseException:  # interrupted while starting: nothing may outlive the benchmark
                self.cluster.stop()
                raise
            self.say(f"cluster up at {self.cluster.address}: {WORKERS} workers, 2 fake Ollamas")
            started = time.monotonic()
            self.deadline = started + self.result.minutes * 60
            self.up.set()
            threads = [threading.Thread(target=self.run_kind, args=(k,), name=f"soak-{k}", daemon=True)
                       for k in KINDS]
            for t in threads:
                t.start()
            try:
                self.faults(started)
            finally:
                self._join(threads)
                self.result.seconds = round(time.monotonic() - started, 1)
                self.memory.sample()
                self.result.memory_mib = {k: {s: round(v, 1) for s, v in row.items()}
                                          for k, row in self.memory.figures.items()}
                self.cluster.stop()
        return self.result


def _stack_of(thread: threading.Thread) -> str:
    """Where a hung job's thread waits: the first thing to read when the soak loses a job."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return f"{thread.name}: no stack"
    return f"{thread.name} stack:\n" + "".join(traceback.format_stack(frame))


def _running_run() -> str | None:
    """The id of the newest workflow run the run store has as running (the held one)."""
    from caelum_dask.workflow import RunStore

    with RunStore() as store:
        runs = [r for r in store.runs(5) if r["state"] == "running"]
    return runs[0]["id"] if runs else None


def soak(minutes: float = 10, kill_every: float | None = None, say: Callable[[str], None] | None = None) -> SoakResult:
    """Run the soak for ``minutes`` with a worker killed every ``kill_every`` s (default: 60 s
    scaled by minutes/10); returns the figures. Everything it started is stopped on return."""
    say = say or (lambda _line: None)
    kill_every = kill_every if kill_every is not None else 60 * minutes / 10
    load_before = os.getloadavg()
    foreign = frozenset(p.pid for p in psutil.Process().children(recursive=True))
    processes, fds = tree_usage(foreign)
    work = Path(tempfile.mkdtemp(prefix="caelum-soak-"))
    try:
        runner = Soak(minutes, kill_every, work, say)
        result = runner.run()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.processes_before, result.fds_before = processes, fds
    result.processes_after, result.fds_after = _settled_usage(processes, fds, foreign)
    result.leftovers = [f"{p.pid} {p.name()}" for p in marked(MARKER, runner.soak_id) if p.is_running()]
    result.load_before, result.load_after = load_before, os.getloadavg()
    return result


def _settled_usage(processes: int, fds: int, foreign: frozenset[int], timeout: float = 10) -> tuple[int, int]:
    """Tree usage once it equals ``(processes, fds)``, or what it is after ``timeout`` s (sockets
    of the clients close asynchronously, a moment after they are released)."""
    import gc

    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = tree_usage(foreign)
        if now == (processes, fds) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def table(result: SoakResult) -> str:
    """The figures as a readable table."""
    lines = [f"soak: {result.minutes:g} min ({result.seconds:.0f} s of work), a worker killed every "
             f"{result.kill_every:g} s ({result.kills} kills), {result.scheduler_restarts} scheduler restart "
             f"(workers reconnected {result.reconnected_workers}, restarted {result.restarted_workers})",
             f"{'kind':10} {'done':>6} {'retried':>8}"]
    lines += [f"{k:10} {result.done[k]:>6} {result.retried[k]:>8}" for k in KINDS]
    lines.append(f"lost: {result.lost} {result.lost_jobs or ''}".rstrip())
    resumed = [r for r in result.resumes if r["resumed_from"] == result.interrupted_run] or result.resumes
    lines.append(f"resume after the restart: {resumed[0] if resumed else 'none'}")
    lines.append(f"{'process':12} {'start MiB':>10} {'peak MiB':>10} {'end MiB':>10}")
    lines += [f"{k:12} {v['start']:>10.0f} {v['peak']:>10.0f} {v['end']:>10.0f}" for k, v in result.memory_mib.items()]
    lines.append(f"process tree: {result.processes_before} processes / {result.fds_before} fds before, "
                 f"{result.processes_after} / {result.fds_after} after; leftovers {result.leftovers or 'none'}")
    lines.append("load average {:.2f} {:.2f} {:.2f} before, {:.2f} {:.2f} {:.2f} after, on {} cores".format(
        *result.load_before, *result.load_after, result.cores))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long jobs are started (default 10)")
    parser.add_argument("--kill-every", type=float, default=None,
                        help="seconds between two worker kills (default 60, scaled by --minutes/10)")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()
    say = (lambda _line: None) if args.json else (lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    from caelum_dask.proctree import job_scope

    with job_scope():  # SIGTERM (a `timeout` around the benchmark) still stops every process it started
        result = soak(args.minutes, args.kill_every, say)
    data = {**result.to_dict(), "resumed": result.resumed}
    print(json.dumps(data) if args.json else table(result) + "\n" + json.dumps(data))
    ok = result.lost == 0 and result.resumed and not result.leftovers and (
        (result.processes_before, result.fds_before) == (result.processes_after, result.fds_after))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""The shard runner: one Dask task runs one ``python -m pytest`` subprocess on a worker.

The subprocess gets its own process group (killed whole when it hangs), dies with the worker
(``PR_SET_PDEATHSIG`` on Linux, so a killed worker leaves no orphaned test run), and an
explicit environment: the worker's, minus what the Dask nanny injects for its own sake
(``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``,
``MALLOC_TRIM_THRESHOLD_``, ``PYTHONHASHSEED``) and minus the variables of any pytest the
worker itself runs under, plus the user's ``--env``.

A test that kills the interpreter (``os._exit``, a segfault) or stops making progress for
``timeout`` seconds is reported as an error naming the reason, and the shard's remaining tests
run again in a fresh interpreter: a shard never loses tests.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caelum_dask.testing import snapshot as snapshot_mod
from caelum_dask.testing.collect import shard_options, split_pytest_args

PLUGIN_MODULE = "_caelum_shard_plugin"
#: variables a pytest run exports to its own process; a worker running inside pytest leaks them
_PYTEST_OWN = ("PYTEST_CURRENT_TEST", "PYTEST_VERSION", "PYTEST_XDIST_WORKER",
               "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
#: variables Dask sets in its own processes (an in-process scheduler, proctitle)
_DASK_OWN = ("DASK_SCHEDULER_ADDRESS", "__DASK_PARENT_PID")
OUTPUT_TAIL = 6000
#: the exit code reported when the interpreter could not be started at all
CANNOT_START = 127
#: above this many characters of node ids, they go to an @argfile (pytest >= 8.2)
ARGFILE_THRESHOLD = 100_000


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
    """A folder holding the shard plugin as an importable top-level module."""
    from caelum_dask.testing import pytest_plugin

    source = Path(pytest_plugin.__file__).read_bytes()
    folder = snapshot_mod.cache_root() / f".plugin-{hashlib.sha256(source).hexdigest()[:16]}"
    target = folder / f"{PLUGIN_MODULE}.py"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(source)
        os.replace(tmp, target)
    return folder


def shard_environment(spec: dict[str, Any], events: Path, shard: str) -> dict[str, str]:
    env, _ = clean_environment(extra=spec.get("env") or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(plugin_dir()), env.get("PYTHONPATH", "")) if p)
    env["CAELUM_SHARD_EVENTS"] = str(events)
    env["CAELUM_TEST_RUN"] = spec["run_id"]
    env["CAELUM_TEST_SHARD"] = str(shard)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def snapshot_here(snapshot: dict[str, str]) -> tuple[Path, bool]:
    """The unpacked snapshot on this machine, fetched from the cluster if this is its first."""

    def fetch() -> bytes:
        from distributed import worker_client

        with worker_client() as client:
            return client.gather(client.get_dataset(snapshot["dataset"]))

    return snapshot_mod.ensure_unpacked(snapshot["digest"], fetch)


def events_path(root: Path, run_id: str, shard: str) -> Path:
    folder = snapshot_mod.cache_root() / ".events"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{run_id}-{shard}-{uuid.uuid4().hex[:8]}.jsonl"


def read_events(path: Path) -> list[dict[str, Any]]:
    """The plugin's JSON lines; a line cut short by a dying interpreter is ignored."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


@dataclass
class Watched:
    rc: int
    timed_out: bool
    output: str
    elapsed: float


def run_watched(command: Sequence[str], cwd: Path, env: dict[str, str], progress: Path,
                timeout: float) -> Watched:
    """Run ``command`` in its own process group; kill the group after ``timeout`` s without progress.

    Progress is the events file growing (a test started or finished), so ``timeout`` bounds
    one test, not the whole shard.
    """
    log = progress.with_suffix(".out")
    started = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        except OSError as exc:  # e.g. --python names no interpreter on this machine
            return Watched(rc=CANNOT_START, timed_out=False, output=f"cannot run {command[0]}: {exc}",
                           elapsed=0.0)
        last_size, last_change, timed_out = -1, time.monotonic(), False
        while proc.poll() is None:
            try:
                size = progress.stat().st_size
            except OSError:
                size = 0
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > timeout:
                timed_out = True
                _kill_group(proc)
                break
            time.sleep(0.1)
        rc = proc.wait()
    output = log.read_bytes().decode("utf-8", "replace")
    log.unlink(missing_ok=True)
    return Watched(rc=rc, timed_out=timed_out, output=output, elapsed=time.monotonic() - started)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def shard_command(python: str, options: Sequence[str], nodeids: Sequence[str], junit: Path,
                  argfile: Path) -> list[str]:
    """``python -m pytest -p no:cacheprovider --junitxml … <ids>`` for one interpreter run."""
    command = [python, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN_MODULE,
               "--rootdir", ".", f"--junitxml={junit}", *options]
    if sum(len(n) + 1 for n in nodeids) > ARGFILE_THRESHOLD:
        argfile.write_text("\n".join(nodeids) + "\n")
        return [*command, f"@{argfile}"]
    return [*command, *nodeids]


def _error(nodeid: str, message: str, detail: str, where_: dict[str, str]) -> dict[str, Any]:
    return {"nodeid": nodeid, "outcome": "error", "duration": 0.0, "message": message,
            "longrepr": f"{message}\n\n{detail}".rstrip(), **where_}


def run_shard(spec: dict[str, Any]) -> dict[str, Any]:
    """Dask task: run one shard's tests, surviving crashing and hanging tests.

    ``spec``: run_id, shard (name), nodeids, python, pytest_args, timeout, env, snapshot
    {digest, key}. Returns results (one dict per test), the JUnit XML of every interpreter
    run, the output tail, timings and where it ran.
    """
    from caelum_dask import events as ev

    here = where()
    started = time.time()
    root, fetched = snapshot_here(spec["snapshot"])
    options = shard_options(split_pytest_args(spec.get("pytest_args", []))[0])
    timeout = float(spec.get("timeout") or 300)
    name = str(spec["shard"])
    remaining = list(spec["nodeids"])
    results: dict[str, dict[str, Any]] = {}
    junit: list[str] = []
    tails: list[str] = []
    runs: list[dict[str, Any]] = []
    _, removed = clean_environment()
    while remaining:
        progress = events_path(root, spec["run_id"], name)
        junit_path = progress.with_suffix(".xml")
        env = shard_environment(spec, progress, name)
        command = shard_command(spec.get("python") or sys.executable, options, remaining, junit_path, progress.with_suffix(".args"))
        proc = run_watched(command, root, env, progress, timeout)
        ended = time.time()
        records = read_events(progress)
        finished = next((r["finished"] for r in records if "finished" in r), None)
        reported = {r["report"]["nodeid"] for r in records if "report" in r}
        for record in records:
            if "report" in record:
                results[record["report"]["nodeid"]] = {**record["report"], **here}
        if junit_path.exists():
            junit.append(junit_path.read_text(encoding="utf-8", errors="replace"))
        tails.append(proc.output[-OUTPUT_TAIL:])
        for path in (progress, junit_path, progress.with_suffix(".args")):
            path.unlink(missing_ok=True)
        runs.append({"rc": proc.rc, "timed_out": proc.timed_out, "tests": len(remaining),
                     "elapsed": round(proc.elapsed, 3)})
        still = [t for t in remaining if t not in results]
        if finished is not None and not proc.timed_out:
            if proc.rc not in (0, 1, 5):  # usage/internal error: pytest ran nothing more
                for nodeid in still:
                    results[nodeid] = _error(nodeid, f"not run: pytest exited with code {proc.rc}",
                                             proc.output[-OUTPUT_TAIL:], here)
            else:  # stopped early on purpose (-x, --maxfail): the rest did not run
                for nodeid in still:
                    results[nodeid] = {"nodeid": nodeid, "outcome": "notrun", "duration": 0.0,
                                       "message": "not run (the shard stopped early: -x/--maxfail)",
                                       "longrepr": "", **here}
            break
        started_ids = [r["start"] for r in records if "start" in r]
        culprit = next((t for t in reversed(started_ids) if t not in reported), None)
        if proc.timed_out:
            reason = f"hung: no progress for {timeout:g}s; the shard's process group was killed"
        else:
            reason = f"crashed: the Python interpreter exited with code {proc.rc} during this test"
        if culprit is None:  # died outside any test (import, collection, plugin): nothing to retry
            for nodeid in still:
                results[nodeid] = _error(nodeid, f"not run: {reason.split(':')[0]} before any test started",
                                         proc.output[-OUTPUT_TAIL:], here)
            break
        results[culprit] = _error(culprit, reason, proc.output[-OUTPUT_TAIL:], here)
        began = next((r.get("t") for r in reversed(records) if r.get("start") == culprit), None)
        if began:  # how long it ran before it died or was killed
            results[culprit]["duration"] = round(max(0.0, ended - float(began)), 3)
        remaining = [t for t in remaining if t not in results]
    ordered = [results[t] for t in spec["nodeids"] if t in results]
    duration = time.time() - started
    counts = {k: sum(1 for r in ordered if r["outcome"] == k) for k in ("passed", "failed", "skipped", "error")}
    ev.emit(ev.TESTS, "shard-finished", run_id=spec["run_id"], shard=name, worker=here["worker"],
            machine=here["machine"], platform=spec.get("platform"), passed=counts["passed"],
            failed=counts["failed"], skipped=counts["skipped"], errors=counts["error"],
            duration=round(duration, 3))
    return {"shard": name, "platform": spec.get("platform"), **here, "started": started,
            "duration": duration, "results": ordered, "junit": junit, "runs": runs,
            "output_tail": "\n".join(tails)[-OUTPUT_TAIL:], "env_removed": removed,
            "snapshot_fetched": fetched, "attempt": spec.get("attempt", 0)}

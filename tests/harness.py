"""What the tests share that is not a fixture: the repo path, polling, the CLI, process clusters.

A plain module (tests/ is on ``sys.path``, as pytest puts it there for the rootdir-less
``conftest.py``), imported by that one name everywhere: test modules and fixture plugins
``from harness import ...``; nothing imports ``conftest`` (pytest owns that module and,
imported again as ``tests.conftest``, it would be a second copy with second fixtures).
Everything binds to 127.0.0.1 on free ports (port 0) and every process a ProcessCluster
starts is killed with its whole process group by ``stop()``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Any, timeout: float = 60, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after ``timeout``.

    The one way tests wait for the cluster: never a fixed sleep, always a deadline.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_caelum(*args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | str | None = None,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `caelum` CLI (python -m caelum_dask) and capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "caelum_dask", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd,
        input=input,
    )


def pythonpath() -> str:
    """Subprocess workers import test modules by name (functions are pickled by reference)."""
    parts = [str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


@dataclass
class ProcessCluster:
    """A cluster of real `dask scheduler` / `dask worker` subprocesses."""

    address: str = ""
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[str]:
        assert self.logdir is not None
        log = open(self.logdir / f"{name}.log", "w")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath(), **self.env},
        )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        assert self.logdir is not None
        return (self.logdir / f"{name}.log").read_text()

    def start_scheduler(self, *extra: str, protocol: str = "tcp", preload: bool = True,
                        timeout: float = 60) -> str:
        argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                "--port", "0", "--protocol", protocol, "--dashboard-address", "127.0.0.1:0", *extra]
        if preload:
            argv += ["--preload", "caelum_dask.scheduler"]
        proc = self._spawn("scheduler", argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"Scheduler at:\s+(\S+)", self.log("scheduler"))
            if match:
                self.address = match.group(1)
                return self.address
            if proc.poll() is not None:
                raise RuntimeError(f"scheduler exited:\n{self.log('scheduler')}")
            time.sleep(0.1)
        raise RuntimeError(f"scheduler did not start:\n{self.log('scheduler')}")

    def start_worker(self, name: str, *extra: str, preload: bool = True, nanny: bool = False) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--name", name,
                "--host", "127.0.0.1", "--nthreads", "1", "--dashboard-address", "127.0.0.1:0", *extra]
        if not nanny:
            argv.append("--no-nanny")
        if preload:
            argv += ["--preload", "caelum_dask.worker"]
        proc = self._spawn(f"worker-{name}", argv)
        self.workers[name] = proc
        return proc

    def wait_for_workers(self, n: int, timeout: float = 90) -> Client:
        client = Client(self.address, timeout="30s")
        client.wait_for_workers(n, timeout=timeout)
        return client

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)

"""Fixtures of the LLM pool tests: fake Ollama servers and a `caelum llm serve` subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_ollama import FakeOllama
from harness import REPO


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeOllama]]:
    """Factory: ``fakes(models=[…], …)`` starts a fake Ollama; all are killed at teardown."""
    started: list[FakeOllama] = []

    def make(**kwargs: Any) -> FakeOllama:
        fake = FakeOllama(**kwargs).start()
        started.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in started:
            if fake.hold_after_first is not None:
                fake.hold_after_first.set()
            fake.kill()


class Served:
    """A running `caelum llm serve` subprocess and its URL."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "caelum_dask", "llm", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=REPO,
        )
        self.url = ""
        self.banner = ""
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"caelum llm serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            match = re.search(r"serving .* at (http://\S+)", line)
            if match:
                self.url, self.banner = match.group(1), line
                return
        raise RuntimeError("caelum llm serve did not start")

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            _out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture
def llm_serve() -> Iterator[Callable[..., Served]]:
    """Factory: ``llm_serve("--backend", url)`` runs `caelum llm serve --port 0 …`."""
    running: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        served = Served(list(args), env=env)
        running.append(served)
        return served

    try:
        yield start
    finally:
        for served in running:
            served.stop()

"""The LLM pool example runs as a user would run it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from harness import REPO

pytestmark = pytest.mark.slow


def test_llm_pool_example_runs() -> None:
    out = subprocess.run([sys.executable, str(REPO / "examples" / "llm_pool.py")], capture_output=True,
                         text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "generate -> 'echo from gpu-box: Why is the sky blue?'" in out.stdout
    assert "chat, streamed: echo from" in out.stdout
    assert "embed -> 2 vectors" in out.stdout
    assert out.stdout.count("map[") == 6 and "ok=False" not in out.stdout
    assert "workflow step: 2/2 ok" in out.stdout and "echo from laptop" in out.stdout
    assert "caelum llm: 6/6 requests, 0 failed" in out.stderr  # the CLI's progress display

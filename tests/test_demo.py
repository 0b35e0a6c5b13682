"""`make demo`'s job and scripts/gpu-check run as a user would run them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import REPO


@pytest.mark.slow
def test_demo_shows_registry_placement_error_events_and_dashboard():
    result = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py")], capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "@127.0.0.1: online" in out and "@127.0.0.2: online" in out
    assert "ran on tcp://127.0.0.2:" in out
    assert "refused at once: no machine can meet the requirement (gpus=4)" in out
    assert '"event": "machine-offline"' in out
    assert "Dask dashboard: http://127.0.0.1:" in out
    assert "caelum pages:   http://127.0.0.1:" in out
    # the main job: the code-health workflow on this repository
    assert "completed; 4 tasks computed, 0 cached, 0 failed" in out
    assert "analysis: " in out and " files, " in out
    assert " passed, 0 failed" in out
    assert (REPO / "demo-output" / "code-health" / "report.html").exists()


def test_gpu_check_reports_what_detection_sees():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu-check"), "--json"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert len(info["gpus"]) == len(info["machine"]["gpus"])
    assert info["resources_1_process"]["CPU"] >= 1
    assert len(info["resources_2_processes"]) == 2
    if not info["gpus"]:
        assert "GPU" not in info["resources_1_process"]
    assert info["llm"]["gpus"] == info["gpus"] or [g["index"] for g in info["llm"]["gpus"]] == [g["index"] for g in info["gpus"]]
    assert all("url" in b and "up" in b for b in info["llm"]["backends"])

"""The soak benchmark's short version: 45 s of mixed work under faults, nothing lost, nothing left.

benchmarks/soak.py is loaded by path and run as is (the same code as the 10-minute soak): a
real `caelum scheduler`, 3 `caelum worker` processes and 2 fake Ollama processes on
127.0.0.1; workflows, analyses, test runs and LLM requests in a loop; a worker killed every
15 s; the scheduler restarted once under a held workflow run that is then resumed.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import psutil
import pytest
from harness import REPO

pytestmark = pytest.mark.slow


def _soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("caelum_soak_benchmark", REPO / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.timeout(300)
def test_short_soak_loses_no_work_and_leaves_nothing_behind() -> None:
    soak = _soak_module()
    before = _descendants()
    result = soak.soak(minutes=0.75, kill_every=15, say=lambda line: print(line, file=sys.stderr))
    after = _descendants()

    assert result.lost == 0, (result.lost_jobs, result.failures)
    assert all(result.done[kind] >= 1 for kind in soak.KINDS), result.done
    assert result.kills >= 1
    assert result.scheduler_restarts == 1
    assert result.interrupted_run, "the scheduler restart must interrupt a workflow run"
    assert result.resumed, (result.interrupted_run, result.resumes)
    resumed = next(r for r in result.resumes if r["resumed_from"] == result.interrupted_run)
    assert resumed["cached"] >= 1, "the resumed run reuses what the interrupted one completed"

    # nothing started is left and no descriptor leaked: this process and what the soak started
    # (children other modules' fixtures had before are left out of the counts; in the whole
    # suite's process those fixtures may close descriptors meanwhile, so fewer is fine; the
    # benchmark run on its own requires equality)
    assert result.processes_after == result.processes_before and result.fds_after <= result.fds_before
    assert after <= before, "every process the soak started stopped"
    assert result.leftovers == []
    assert {"scheduler", "scheduler#2"} <= set(result.memory_mib)
    workers = [row for label, row in result.memory_mib.items() if label.startswith("w")]
    assert len(workers) >= 3
    assert all(0 < row["start"] <= row["peak"] and row["end"] <= row["peak"] for row in result.memory_mib.values())

"""Learned task durations survive a scheduler restart (issue: Self-sizing, learned durations)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from distributed import Client, Event
from harness import run_caelum, wait_for

from caelum_dask import events
from caelum_dask.dashboard.data.workflows import WorkflowRuns, dag_source
from caelum_dask.learned import load, load_figures, save
from caelum_dask.workflow import Workflow, run, task
from caelum_dask.workflow.estimates import critical_path

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules


def test_saved_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "learned" / "task-durations.json"
    assert load(path) == {}
    save(path, {"load-data": 1.5, "zero": 0.0}, {"llm-tokens-per-second:m:host": 42.0})
    assert load(path) == {"load-data": 1.5}
    assert load_figures(path) == {"llm-tokens-per-second:m:host": 42.0}
    path.write_text("{not json")
    assert load(path) == {}


def slowstep(event_name: str | None = None) -> int:
    if event_name:
        Event(event_name).wait()
    time.sleep(0.3)
    return 1


def _prefix_average(dask_scheduler, name: str) -> float | None:
    prefix = dask_scheduler.task_prefixes.get(name)
    return None if prefix is None else prefix.duration_average


@pytest.mark.slow
def test_restarted_scheduler_knows_a_prefix_before_running_it(process_cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    process_cluster.env.update({"DASK_CAELUM__HOME": str(home)})
    process_cluster.start_scheduler()
    process_cluster.start_worker("w")
    with process_cluster.wait_for_workers(1) as client:
        futures = [client.submit(slowstep, key=f"slowstep-{i:08x}a") for i in range(3)]
        assert sum(client.gather(futures)) == 3
        learned = client.run_on_scheduler(_prefix_average, name="slowstep")
        assert learned and learned > 0.2
    scheduler = process_cluster.procs[0]
    os.killpg(scheduler.pid, signal.SIGTERM)  # a clean stop saves what it learned
    scheduler.wait(timeout=60)
    saved = load(home / "learned" / "task-durations.json")
    assert saved["slowstep"] == pytest.approx(learned, rel=0.01)

    process_cluster.start_scheduler()
    process_cluster.start_worker("w2")
    with process_cluster.wait_for_workers(1) as client:
        gate = Event("gate", client=client)
        future = client.submit(slowstep, "gate", key="slowstep-12345678b")
        wait_for(lambda: client.run_on_scheduler(_prefix_average, name="slowstep") is not None, timeout=60)
        # known before any task of the prefix ran on this scheduler
        assert client.run_on_scheduler(_prefix_average, name="slowstep") == pytest.approx(learned, rel=0.01)
        gate.set()
        assert future.result(timeout=60) == 1


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def nap_after(previous: float, seconds: float) -> float:
    time.sleep(seconds)
    return previous + seconds


def test_critical_path_is_the_longest_weighted_chain() -> None:
    import networkx as nx

    graph = nx.DiGraph([("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")])
    seconds = {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0}
    assert critical_path(graph, seconds) == 7.0
    assert critical_path(graph, seconds, skip={"b"}) == 4.0  # a reused task costs nothing


def _averages(dask_scheduler, names: list[str]) -> dict[str, float | None]:
    return {n: _prefix_average(dask_scheduler, n) for n in names}


def _unknown(dask_scheduler) -> float:
    import dask.config
    from dask.utils import parse_timedelta

    return parse_timedelta(dask.config.get("distributed.scheduler.unknown-task-duration"))


def test_a_workflow_shows_estimates_next_to_actuals(client: Client) -> None:
    with Workflow("estimated") as wf:
        nap_after.with_options(name="quick_step")(nap.with_options(name="slow_step")(0.3), 0.05)
    first = run(wf, client=client, cache=False)
    assert first.ok, first.errors
    unknown = client.run_on_scheduler(_unknown)
    learned = client.run_on_scheduler(_averages, names=["slow_step", "quick_step"])
    assert all(v and v > 0 for v in learned.values()), learned

    second = run(wf, client=client, cache=False)
    assert second.ok, second.errors
    shown = json.loads(run_caelum("runs", "show", second.run_id, "--json").stdout)
    tasks = {t["task"]: t for t in shown["tasks"]}
    # the first run met both steps blind; the second knows what the first measured
    before = json.loads(run_caelum("runs", "show", first.run_id, "--json").stdout)
    assert {t["task"]: t["estimated"] for t in before["tasks"]} == {"slow_step": unknown, "quick_step": unknown}
    assert before["estimated"] == pytest.approx(2 * unknown)
    for name in ("slow_step", "quick_step"):
        assert tasks[name]["estimated"] == pytest.approx(learned[name], abs=1e-5)
        assert tasks[name]["duration"] > 0
    assert shown["estimated"] == pytest.approx(learned["slow_step"] + learned["quick_step"], abs=1e-5)
    assert shown["duration"] > 0

    text = run_caelum("runs", "show", second.run_id)
    assert text.returncode == 0, text.stderr
    assert f"time: estimated {shown['estimated']:.2f}s, actual {shown['duration']:.2f}s" in text.stdout
    slow = next(line for line in text.stdout.splitlines() if line.strip().startswith("slow_step"))
    assert f"estimate {learned['slow_step']:.2f}s actual {tasks['slow_step']['duration']:.2f}s" in slow

    # the dashboard's workflow page: the node table's estimate next to the actual
    runs = WorkflowRuns()
    for _stamp, msg in client.get_events(events.WORKFLOWS):
        runs.apply(msg)
    nodes = dag_source(runs.get(second.run_id))["nodes"]
    row = nodes["name"].index("slow_step")
    assert nodes["estimate"][row] == f"{learned['slow_step']:.2f}"
    assert float(nodes["actual"][row]) > 0


def test_analysis_learns_seconds_per_byte_and_sizes_batches_by_duration(client: Client, tmp_path: Path) -> None:
    from caelum_dask.analysis import analyze
    from caelum_dask.analysis.batching import FIGURE
    from caelum_dask.analysis.options import AnalysisOptions
    from caelum_dask.learned import known_figures

    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"mod{i}.py").write_text(f"def f{i}(x):\n    if x:\n        return {i}\n    return -x\n")
    # tiny fixed batches; once a figure is learned, a long target duration makes few batches
    options = AnalysisOptions.from_config(batch_bytes=50, batch_seconds=1000, use_cache=False)
    assert known_figures(client, FIGURE) == {}
    first = analyze(src, options, client=client)
    learned = known_figures(client, FIGURE)
    assert len(learned) == 1 and next(iter(learned.values())) > 0
    second = analyze(src, options, client=client)
    assert first.stats["tasks"] == 40 > second.stats["tasks"] >= 1
    assert second.summary["functions"] == first.summary["functions"] == 40


def _save_now(dask_scheduler) -> None:
    from caelum_dask.learned import PLUGIN_NAME

    dask_scheduler.plugins[PLUGIN_NAME].save_now()


def test_llm_tokens_per_second_per_model_and_machine(fakes, client: Client) -> None:
    from caelum_dask.learned import durations_file, known_figures
    from caelum_dask.llm import LLMPool
    from caelum_dask.llm.backend import normalize_model
    from caelum_dask.llm.speed import FIGURE, tokens_per_second

    fake = fakes(models=["llama3.2"])
    with LLMPool(backends=[fake.url]) as pool:
        answer = pool.generate("llama3.2", "hi there")
        pool.embed("llama3.2", "no tokens generated: not counted")
        status = pool.status()
        pool.speeds.send(client)  # a pool on a cluster sends them itself when it closes
    model = normalize_model("llama3.2")
    assert list(status["tokens_per_second"]) == [model]
    [(machine, rate)] = status["tokens_per_second"][model].items()
    assert machine and rate == pytest.approx(tokens_per_second(answer), rel=1e-3)
    name = f"{FIGURE}:{model}:{machine}"
    assert known_figures(client, FIGURE) == {name: pytest.approx(rate, rel=1e-3)}
    client.run_on_scheduler(_save_now)
    assert load_figures(durations_file())[name] == pytest.approx(rate, rel=1e-3)

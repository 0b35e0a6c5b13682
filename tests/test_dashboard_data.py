"""Unit tests of the dashboard's data sources: synthetic registry states, metrics and events."""

from __future__ import annotations

import math
import time

import pytest

from caelum_dask.dashboard.data import llm, machines, tasks, tests as testdata, utilisation, workflows

NOW = 1_800_000_000.0
GIB = 1024**3


def node(i: int, status: str = "online", gpus: list[dict] | None = None, workers: int = 2,
         gpu_resource: float | None = None, heartbeat_age: float = 1.0) -> dict:
    """A MachineNode dict shaped exactly like MachineNode.to_dict()."""
    return {
        "id": f"host{i}@10.0.0.{i}",
        "hostname": f"host{i}",
        "ip_address": f"10.0.0.{i}",
        "platform": "linux",
        "os": "Linux-6.1-x86_64",
        "python": "3.11.7",
        "resources": {"cpu_cores": 8, "memory_gb": 32.0, "gpus": gpus or [], "disk_space_gb": 100.0},
        "services": {f"worker-{s}": 40000 + 10 * i + s for s in range(workers)},
        "status": status,
        "last_heartbeat": NOW - heartbeat_age,
        "first_seen": NOW - 3600,
        "caelum_version": "0.1.0",
        "workers": [
            {
                "address": f"tcp://10.0.0.{i}:{40000 + s}",
                "name": f"host{i}-{s}",
                "nthreads": 4,
                "memory_limit": 16 * GIB,
                "resources": {"CPU": 4, "MEMORY_GB": 16, **({"GPU": gpu_resource} if gpu_resource and s == 0 else {})},
                "gpu_indices": [],
                "slot": s,
            }
            for s in range(workers)
        ],
    }


A100 = {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80.0, "uuid": "GPU-1234",
        "memory_free_gb": 60.0, "utilization": 35.0}


# -- machines -------------------------------------------------------------------------------------

def test_machines_source_has_every_field_status_colour_and_heartbeat_age() -> None:
    nodes = [node(1, "online"), node(2, "busy", gpus=[A100]), node(3, "offline", heartbeat_age=125)]
    data = machines.machines_source(nodes, now=NOW)
    assert data["hostname"] == ["host2", "host1", "host3"]  # busy first, offline last
    assert data["status_colour"] == ["#ff7f0e", "#2ca02c", "#d62728"]
    assert data["heartbeat"] == ["1.0s ago", "1.0s ago", "2m 5s ago"]
    assert data["heartbeat_age"][2] == pytest.approx(125)
    row = data["hostname"].index("host2")
    assert data["gpus"][row] == "0: NVIDIA A100-SXM4-80GB (80 GiB, 35% busy)"
    assert data["n_gpus"][row] == 1
    assert data["ip_address"][row] == "10.0.0.2"
    assert data["cpu_cores"][row] == 8 and data["memory_gb"][row] == 32.0 and data["disk_space_gb"][row] == 100.0
    assert data["services"][row] == "worker-0:40020, worker-1:40021"
    assert data["resources"][row] == "CPU=8 MEMORY_GB=32"
    assert data["workers"][row] == "host2-0, host2-1"
    assert {len(v) for v in data.values()} == {3}
    # every MachineNode field is shown
    for field in ("id", "platform", "os", "python", "caelum_version", "first_seen"):
        assert data[field][row]


def test_gpu_resource_without_nvml_is_shown() -> None:
    nodes = [node(7, gpu_resource=1)]
    data = machines.machines_source(nodes, now=NOW)
    assert data["gpus"] == ["GPU=1 (Dask resource, no NVML description)"]
    assert data["n_gpus"] == [1]
    gpus = machines.gpus_source(nodes)
    assert gpus["hostname"] == ["host7"]
    assert "GPU=1 on worker host7-0 (no NVML)" in gpus["name"][0]


def test_gpus_source_one_row_per_nvml_gpu() -> None:
    second = {**A100, "index": 1, "uuid": "GPU-5678", "memory_free_gb": 80.0, "utilization": 0.0}
    gpus = machines.gpus_source([node(1), node(2, gpus=[A100, second])])
    assert gpus["index"] == [0, 1]
    assert gpus["memory_used_gb"] == [20.0, 0.0]
    assert gpus["utilization"] == [35.0, 0.0]
    assert gpus["uuid"] == ["GPU-1234", "GPU-5678"]


def test_fifty_machines() -> None:
    nodes = [node(i, "busy" if i % 5 == 0 else "online", gpus=[A100] if i % 10 == 0 else None) for i in range(50)]
    data = machines.machines_source(nodes, now=NOW)
    assert len(data["id"]) == 50 and len(set(data["id"])) == 50
    assert machines.summary_text(nodes) == "50 machines: 10 busy, 40 online; 5 GPUs"
    assert len(machines.gpus_source(nodes)["machine"]) == 5


def test_no_machines_says_how_to_add_one() -> None:
    assert "caelum worker" in machines.summary_text([])
    assert machines.machines_source([], now=NOW)["id"] == []


# -- utilisation ----------------------------------------------------------------------------------

def test_machine_sample_sums_workers_and_reads_gpus() -> None:
    n = node(1, gpus=[A100, {**A100, "index": 1, "utilization": 65.0, "memory_free_gb": 70.0}])
    metrics = {"tcp://10.0.0.1:40000": {"cpu": 400.0, "memory": 2 * GIB},
               "tcp://10.0.0.1:40001": {"cpu": 200.0, "memory": 1 * GIB}}
    sample = utilisation.machine_sample(n, metrics)
    assert sample == {"cpu": 75.0, "memory": 3.0, "gpu_util": 50.0, "gpu_memory": 30.0}
    gone = utilisation.machine_sample(node(2), metrics)  # no worker reported: no reading
    assert all(math.isnan(v) for v in gone.values())


def test_history_streams_new_rows_and_a_machine_that_left_gets_no_points() -> None:
    history = utilisation.UtilisationHistory(maxlen=3)
    history.add(NOW, {"a": {"cpu": 10.0, "memory": 1.0}}, {"a": "host-a"})
    seq = history.seq
    history.add(NOW + 1, {"a": {"cpu": 20.0}, "b": {"cpu": 5.0}}, {"b": "host-b"})
    history.add(NOW + 2, {"b": {"cpu": 6.0}})  # a left
    rows = history.long_rows_since(seq)
    assert rows["time"] == [(NOW + 1) * 1000, (NOW + 1) * 1000, (NOW + 2) * 1000]
    assert rows["hostname"] == ["host-a", "host-b", "host-b"]
    assert rows["cpu"] == [20.0, 5.0, 6.0]
    assert math.isnan(rows["memory"][0])
    assert rows["colour"][0] != rows["colour"][1]  # one colour per machine
    history.add(NOW + 3, {"b": {"cpu": 7.0}, "a": {"cpu": 1.0}})  # a is back, same colour
    full = history.long_source()
    assert full["time"][0] == (NOW + 1) * 1000  # bounded to 3 samples
    assert full["colour"][full["hostname"].index("host-a")] == full["colour"][-1]
    latest = history.latest_source()
    assert latest["hostname"] == ["host-a", "host-b"]
    assert latest["cpu"] == [1.0, 7.0] and latest["memory"] == [None, None]
    assert history.long_rows_since(history.seq) == {}


def test_history_of_fifty_machines() -> None:
    history = utilisation.UtilisationHistory(maxlen=600)
    nodes = [node(i) for i in range(50)]
    metrics = {w["address"]: {"cpu": 100.0, "memory": GIB} for n in nodes for w in n["workers"]}
    for t in range(600):
        history.add(NOW + t, {n["id"]: utilisation.machine_sample(n, metrics) for n in nodes})
    assert len(history.long_source()["time"]) == 600 * 50
    newest = history.long_rows_since(history.seq - 1)
    assert len(newest["time"]) == 50 and set(newest["cpu"]) == {25.0} and set(newest["memory"]) == {2.0}


# -- tasks ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,kind", [
    ("caelum-wf-run1-load", "workflow"), (("caelum-analyze-abc", 3), "analysis"),
    ("caelum-test-shard-2", "test"), ("caelum-llm-batch-1", "llm"), ("caelum-bi-git-1", "bi"),
    ("inc-123abc", "other"), (("x", 1), "other"), (42, "other"),
])
def test_task_kind_from_key_prefix(key: object, kind: str) -> None:
    assert tasks.task_kind(key) == kind


def test_task_kind_comes_from_the_annotation_when_there_is_one() -> None:
    counter = tasks.TaskCounter()
    counter.transition("load_data-20261201-101010-abcdef.0", "waiting", "processing", "m1", kind="workflow")
    counter.transition("pytest_session-a1b2c3.linux-0", "waiting", "processing", "m1", kind="test")
    counter.transition("caelum-bi-r-collect-0", "waiting", "processing", "m1")  # legacy key, no annotation
    counter.transition("inc-123", "waiting", "processing", "m1", kind="bogus")
    assert {k: v for k, v in counter.running["m1"].items() if v} == {"workflow": 1, "test": 1, "bi": 1, "other": 1}


def test_task_counter_follows_transitions() -> None:
    counter = tasks.TaskCounter()
    counter.transition("caelum-test-1", "waiting", "processing", "m1")
    counter.transition("caelum-test-2", "queued", "processing", "m1")
    counter.transition("caelum-wf-a", "waiting", "processing", "m2")
    counter.snapshot(NOW)
    assert counter.running["m1"]["test"] == 2 and counter.running["m2"]["workflow"] == 1
    counter.transition("caelum-test-1", "processing", "memory", None)
    counter.transition("caelum-test-2", "processing", "erred", None)
    # the machine left: its task goes back to waiting and runs elsewhere
    counter.transition("caelum-wf-a", "processing", "released", None)
    counter.transition("caelum-wf-a", "waiting", "processing", "m3")
    counter.transition("caelum-wf-a", "processing", "memory", None)
    counter.snapshot(NOW + 1)
    assert counter.completed == {"m1": {**dict.fromkeys(tasks.KINDS, 0), "test": 1},
                                 "m3": {**dict.fromkeys(tasks.KINDS, 0), "workflow": 1}}
    assert counter.failed["m1"]["test"] == 1
    assert sum(sum(c.values()) for c in counter.running.values()) == 0
    per_machine = tasks.per_machine_source(counter)
    assert per_machine["machine"] == ["m1", "m2", "m3"]
    assert per_machine["test"] == [1, 0, 0] and per_machine["workflow"] == [0, 0, 1]
    series = tasks.running_timeseries(counter)
    assert series["time"] == [NOW * 1000, (NOW + 1) * 1000]
    assert series["test"] == [2, 0] and series["workflow"] == [1, 0]
    assert tasks.running_timeseries(counter, "m2")["workflow"] == [1, 0]
    assert tasks.totals_text(counter) == "0 running, 2 completed, 1 failed since the scheduler started"


def test_task_counter_fifty_machines() -> None:
    counter = tasks.TaskCounter()
    for i in range(5000):
        key = f"{tasks.PREFIXES[i % 5][0]}{i}"
        counter.transition(key, "waiting", "processing", f"m{i % 50:02d}")
        counter.transition(key, "processing", "memory", None)
    data = tasks.per_machine_source(counter)
    assert len(data["machine"]) == 50 and sum(data["total"]) == 5000
    assert sum(data["analysis"]) == 1000


# -- workflows ------------------------------------------------------------------------------------

def wf_events(run_id: str, nodes: list[str], edges: list[tuple[str, str]]) -> list[dict]:
    return [{"event": "run-started", "time": "2026-01-01T00:00:00+00:00", "run_id": run_id,
             "workflow": "demo", "nodes": nodes, "edges": [list(e) for e in edges]}]


def state(run_id: str, task: str, value: str, machine: str = "m1") -> dict:
    return {"event": "task-state", "run_id": run_id, "task": task, "state": value, "worker": "w", "machine": machine}


def test_small_run_drawn_node_by_node_with_state_colours() -> None:
    runs = workflows.WorkflowRuns()
    for msg in wf_events("r1", ["load", "clean", "report"], [("load", "clean"), ("clean", "report")]):
        runs.apply(msg)
    runs.apply(state("r1", "load", "completed"))
    runs.apply(state("r1", "clean", "running", "m2"))
    runs.apply({"event": "something-else", "run_id": "r1"})
    runs.apply("not a dict")
    run = runs.get("r1")
    data = workflows.dag_source(run, aggregate_above=10)
    assert data["aggregated"] is False
    nodes = dict(zip(data["nodes"]["name"], zip(data["nodes"]["state"], data["nodes"]["colour"])))
    assert nodes == {"load": ("completed", "#2ca02c"), "clean": ("running", "#1f77b4"),
                     "report": ("pending", "#c7c7c7")}
    x = dict(zip(data["nodes"]["name"], data["nodes"]["x"]))
    assert x["load"] < x["clean"] < x["report"]  # layers left to right
    assert len(data["edges"]["xs"]) == 2
    assert data["nodes"]["machine"][data["nodes"]["name"].index("clean")] == "m2"
    runs.apply({"event": "run-finished", "time": "2026-01-01T00:01:00+00:00", "run_id": "r1",
                "state": "failed", "computed": 1, "cached": 0, "failed": 1})
    table = workflows.runs_source(runs)
    assert table["run_id"] == ["r1"] and table["state"] == ["failed"]
    assert table["completed"] == [1] and table["running"] == [1] and table["pending"] == [1]
    assert table["finished"][0]


def test_layout_is_computed_once_per_structure() -> None:
    runs = workflows.WorkflowRuns()
    for msg in wf_events("r", ["a", "b"], [("a", "b")]):
        runs.apply(msg)
    run = runs.get("r")
    first = workflows.dag_source(run)
    runs.apply(state("r", "a", "completed"))
    second = workflows.dag_source(run)
    assert second["edges"] is first["edges"]  # same cached layout
    runs.apply(state("r", "late-task", "running"))  # a task the run-started did not list
    third = workflows.dag_source(run)
    assert "late-task" in third["nodes"]["name"] and third["edges"] is not first["edges"]


def test_ten_thousand_node_run_is_aggregated_into_groups_and_updates_live() -> None:
    n = 10_000
    nodes = [f"load-{i}" for i in range(n // 2)] + [f"parse-{i}" for i in range(n // 2)]
    edges = [(f"load-{i}", f"parse-{i}") for i in range(n // 2)]
    runs = workflows.WorkflowRuns()
    for msg in wf_events("big", nodes, edges):
        runs.apply(msg)
    run = runs.get("big")
    start = time.perf_counter()
    data = workflows.dag_source(run, aggregate_above=300)
    first_cost = time.perf_counter() - start
    assert data["aggregated"] is True
    assert sorted(data["nodes"]["name"]) == ["load", "parse"]
    assert sum(data["nodes"]["count"]) == n
    assert len(data["edges"]["xs"]) == 1
    first_edges = data["edges"]
    for i in range(100):
        runs.apply(state("big", f"load-{i}", "completed"))
    runs.apply(state("big", "parse-0", "failed"))
    start = time.perf_counter()
    data = workflows.dag_source(run, aggregate_above=300)
    update_cost = time.perf_counter() - start
    assert data["edges"] is first_edges  # the layout is reused: an update only reads counters
    groups = dict(zip(data["nodes"]["name"], zip(data["nodes"]["state"], data["nodes"]["detail"])))
    assert groups["load"] == ("pending", "4900 pending, 100 completed")
    assert groups["parse"] == ("failed", "4999 pending, 1 failed")
    print(f"10k-node run: first draw {first_cost * 1000:.0f} ms, update {update_cost * 1000:.2f} ms")


def test_ungroupable_names_fall_back_to_layers() -> None:
    # 2,000 uniquely named tasks in a chain of depth 2,000: groups are bands of layers
    names = [f"step_{chr(97 + i % 26)}{i // 26}x" for i in range(2000)]
    runs = workflows.WorkflowRuns()
    for msg in wf_events("chain", names, list(zip(names, names[1:]))):
        runs.apply(msg)
    data = workflows.dag_source(runs.get("chain"), aggregate_above=100)
    assert data["aggregated"] and len(data["nodes"]["name"]) <= 100
    assert sum(data["nodes"]["count"]) == 2000
    assert all(name.startswith("layers ") for name in data["nodes"]["name"])


def test_cyclic_or_unknown_structure_does_not_break_the_page() -> None:
    runs = workflows.WorkflowRuns()
    for msg in wf_events("cyc", ["a", "b"], [("a", "b"), ("b", "a")]):
        runs.apply(msg)
    assert len(workflows.dag_source(runs.get("cyc"))["nodes"]["name"]) == 2
    runs.apply(state("no-start", "t", "running"))  # run-started lost (events trimmed)
    assert workflows.dag_source(runs.get("no-start"))["nodes"]["state"] == ["running"]


def test_recent_runs_are_bounded_most_recent_first() -> None:
    runs = workflows.WorkflowRuns(keep=3)
    for i in range(5):
        for msg in wf_events(f"r{i}", ["a"], []):
            runs.apply(msg)
    assert workflows.runs_source(runs)["run_id"] == ["r4", "r3", "r2"]
    assert runs.latest().run_id == "r4"


# -- tests ----------------------------------------------------------------------------------------

def test_test_run_shards_per_machine() -> None:
    runs = testdata.TestRuns()
    runs.apply({"event": "run-started", "run_id": "t1", "shards": 3, "tests": 30})
    runs.apply({"event": "shard-finished", "run_id": "t1", "shard": 0, "worker": "w1", "machine": "a",
                "passed": 9, "failed": 1, "skipped": 0, "errors": 0, "duration": 2.5})
    runs.apply({"event": "shard-finished", "run_id": "t1", "shard": 1, "worker": "w2", "machine": "b",
                "passed": 10, "failed": 0, "skipped": 0, "errors": 0, "duration": 3.0})
    runs.apply({"event": "shard-finished", "run_id": "t1", "shard": 2, "worker": "w1", "machine": "a",
                "passed": 8, "failed": 0, "skipped": 2, "errors": 0, "duration": 1.5})
    run = runs.get("t1")
    assert run.state == "running"
    per_machine = testdata.machines_source(run)
    assert per_machine == {"machine": ["a", "b"], "shards": [2, 1], "duration": [4.0, 3.0],
                           "passed": [17, 10], "failed": [1, 0], "skipped": [2, 0], "errors": [0, 0]}
    shards = testdata.shards_source(run)
    assert shards["shard"] == ["0", "2", "1"] and shards["duration"] == [2.5, 1.5, 3.0]
    runs.apply({"event": "run-finished", "run_id": "t1", "exit_code": 1, "passed": 27, "failed": 1})
    table = testdata.runs_source(runs)
    assert table["state"] == ["failed"] and table["shards"] == ["3/3"] and table["passed"] == [27]


# -- llm ------------------------------------------------------------------------------------------

def test_llm_backends_and_latency() -> None:
    state_ = llm.LLMState(window=3)
    assert "caelum llm serve" in llm.summary_text(state_)
    state_.apply({"event": "backends", "backends": [
        {"url": "http://gpu1:11434", "machine": "gpu1", "up": True, "models": ["llama3", "qwen"],
         "loaded": ["llama3"], "in_flight": 2},
        {"url": "http://lap:11434", "machine": "lap", "up": True, "models": ["qwen"], "loaded": [], "in_flight": 0},
    ]})
    for i, latency in enumerate([0.5, 1.5, 1.0, 2.0]):
        state_.apply({"event": "request-finished", "backend": "http://gpu1:11434", "machine": "gpu1",
                      "model": "llama3", "latency_s": latency, "ok": i != 3}, now=NOW + i)
    state_.apply({"event": "backend-down", "backend": "http://lap:11434", "reason": "connection refused"})
    data = llm.backends_source(state_)
    assert data["url"] == ["http://gpu1:11434", "http://lap:11434"]
    assert data["up"] == ["up", "down"] and data["reason"][1] == "connection refused"
    assert data["loaded"][0] == "llama3" and data["models"][0] == "llama3, qwen"
    assert data["in_flight"] == [2, 0]
    assert data["requests"][0] == 3 and data["errors"][0] == 1  # window of 3
    assert data["latency_mean"][0] == 1.25
    lat = llm.latency_source(state_)
    assert lat["latency_s"] == [1.5, 1.0, 2.0] and lat["colour"][-1] == "#d62728"
    assert llm.summary_text(state_) == "2 backends (1 up), 2 requests in flight, 3 recent requests"


def _fanout_run(width: int) -> workflows.WorkflowRun:
    runs = workflows.WorkflowRuns()
    nodes = ["list_repositories", *(f"analyse_repository[{i}]" for i in range(width)), "merge_everything_into_report"]
    edges = [("list_repositories", f"analyse_repository[{i}]") for i in range(width)]
    edges += [(f"analyse_repository[{i}]", "merge_everything_into_report") for i in range(width)]
    for msg in wf_events("fan", nodes, edges):
        runs.apply(msg)
    runs.apply(state("fan", "analyse_repository[3]", "running"))
    runs.apply(state("fan", "analyse_repository[4]", "completed"))
    run = runs.get("fan")
    assert run is not None
    return run


def _label_boxes(data: dict) -> list[tuple[float, float, float, float]]:
    """Each shown label's box in pixels, as the page draws them (right of the dot)."""
    boxes = []
    nodes = data["nodes"]
    for x, y, size, label in zip(nodes["x"], nodes["y"], nodes["size"], nodes["label"]):
        if not label:
            continue
        left = (x + 1.1) / 2.2 * workflows.DAG_WIDTH_PX + size / 2 + 4
        middle = (1.1 - y) / 2.2 * workflows.DAG_HEIGHT_PX
        boxes.append((left, middle - 6.5, left + len(label) * 6.6, middle + 6.5))
    return boxes


def _overlaps(boxes: list[tuple[float, float, float, float]]) -> list[tuple[int, int]]:
    return [(i, j) for i, a in enumerate(boxes) for j, b in enumerate(boxes[i + 1:], i + 1)
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]


def test_a_fan_out_is_one_node_with_a_count_until_expanded() -> None:
    run = _fanout_run(40)
    folded = workflows.dag_source(run, aggregate_above=300, fanout_at=4)
    rows = dict(zip(folded["nodes"]["name"], zip(folded["nodes"]["count"], folded["nodes"]["state"],
                                                  folded["nodes"]["detail"])))
    assert rows["analyse_repository[…]"] == (40, "running", "38 pending, 1 running, 1 completed")
    assert len(rows) == 3 and len(folded["edges"]["xs"]) == 2
    x = dict(zip(folded["nodes"]["name"], folded["nodes"]["x"]))
    assert x["list_repositories"] < x["analyse_repository[…]"] < x["merge_everything_into_report"]
    labels = dict(zip(folded["nodes"]["name"], folded["nodes"]["label"]))
    assert labels["analyse_repository[…]"] == "analyse_repository[…] ×40" and all(labels.values())
    opened = workflows.dag_source(run, aggregate_above=300, expanded={"analyse_repository[…]"}, fanout_at=4)
    assert len(opened["nodes"]["name"]) == 42 and "analyse_repository[17]" in opened["nodes"]["name"]
    assert workflows.dag_source(run, aggregate_above=300, fanout_at=0)["nodes"]["count"] == [1] * 42


def test_labels_never_overlap_and_fit_between_layers() -> None:
    run = _fanout_run(40)
    opened = workflows.dag_source(run, aggregate_above=300, expanded={"analyse_repository[…]"}, fanout_at=4)
    boxes = _label_boxes(opened)
    assert _overlaps(boxes) == []
    shown = [label for label in opened["nodes"]["label"] if label]
    assert 3 <= len(shown) < 42  # a 40-high column cannot name every dot; the rest are in the hover
    # a long chain: names are cut to the room between two layers, with an ellipsis
    runs = workflows.WorkflowRuns()
    chain = [f"step_{i:02d}_with_a_long_descriptive_name" for i in range(12)]
    for msg in wf_events("chain", chain, list(zip(chain, chain[1:]))):
        runs.apply(msg)
    deep = workflows.dag_source(runs.get("chain"), aggregate_above=300, fanout_at=4)
    labels = deep["nodes"]["label"]
    assert all(label.endswith("…") and label[:-1] in name for label, name in zip(labels, deep["nodes"]["name"]))
    assert workflows.dag_source(runs.get("chain"), aggregate_above=3)["aggregated"]  # groups still work
    room = (2 / 11) / 2.2 * workflows.DAG_WIDTH_PX
    assert all(len(label) * 6.6 <= room for label in labels) and _overlaps(_label_boxes(deep)) == []


def test_a_running_steps_sub_job_progress_shows_in_its_row() -> None:
    runs = workflows.WorkflowRuns()
    for msg in wf_events("sj", ["analyse", "suite"], [("analyse", "suite")]):
        runs.apply(msg)
    runs.apply(state("sj", "suite", "running"))
    runs.apply({"event": "task-progress", "run_id": "sj", "task": "suite", "job": "test", "done": 12,
                "total": 40, "failed": 1, "text": "12/40 tests, 1 failed"})
    data = workflows.dag_source(runs.get("sj"))
    detail = dict(zip(data["nodes"]["name"], data["nodes"]["detail"]))
    assert detail == {"analyse": "pending", "suite": "running — 12/40 tests, 1 failed"}
    runs.apply(state("sj", "suite", "completed"))
    assert dict(zip(*(workflows.dag_source(runs.get("sj"))["nodes"][k] for k in ("name", "detail"))))["suite"] == "completed"

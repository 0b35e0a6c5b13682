"""Workflow building, validation, cache keys and the run store — no cluster needed."""

from __future__ import annotations

import sqlite3
import threading

import networkx as nx
import pytest
from dask.utils import key_split

from caelum_dask.errors import UnsatisfiableRequirement
from caelum_dask.workflow import REQUIRED, MapRef, Ref, Workflow, WorkflowInvalid, task, validate
from caelum_dask.workflow.cache import ResultCache
from caelum_dask.workflow.compiler import cache_keys, compile_workflow
from caelum_dask.workflow.store import MIGRATIONS, SCHEMA_VERSION, RunStore
from caelum_dask.workflow.validation import check_requirements


@task
def inc(x: int) -> int:
    return x + 1


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_builder_records_graph_edges_params_and_options() -> None:
    with Workflow("w", params={"n": 3}) as wf:
        first = inc(wf.param("n"))
        second = inc.with_options(retries=2, priority=4)(first)
        spread = inc.map([1, 2, 3])
        total(spread)
        add(first, second)
    g = wf.graph
    assert isinstance(spread, MapRef) and [r.name for r in spread] == ["inc-3[0]", "inc-3[1]", "inc-3[2]"]
    assert set(g.predecessors("total")) == {"inc-3[0]", "inc-3[1]", "inc-3[2]"}
    assert set(g.predecessors("add")) == {"inc", "inc-2"}
    assert g.nodes["inc-2"]["retries"] == 2 and g.nodes["inc-2"]["priority"] == 4
    assert wf.params == {"n": 3}
    assert inc(41) == 42  # outside a workflow a task is its plain function


def test_from_graph_wires_edges_by_arg_and_params_by_name() -> None:
    def load(n):
        return list(range(n))

    def both(left, right, scale):
        return (left, right, scale)

    g = nx.DiGraph(params={"n": 2, "scale": 3})
    g.add_node("load", func=load)
    g.add_node("l2", func=load)
    g.add_node("both", func=both)
    g.add_edge("load", "both", arg="left")
    g.add_edge("l2", "both", arg="right")
    wf = Workflow.from_graph(g, name="fg")
    params, bindings = validate(wf)
    assert params == {"n": 2, "scale": 3}
    _args, kwargs = bindings["both"]
    assert kwargs["left"] == Ref("load") and kwargs["right"] == Ref("l2")
    assert kwargs["scale"].name == "scale"
    assert bindings["load"][1]["n"].name == "n"


def test_cycle_is_named() -> None:
    g = nx.DiGraph()
    for name in "abc":
        g.add_node(name, func=inc.func)
    g.add_edge("a", "b", arg="x")
    g.add_edge("b", "c", arg="x")
    g.add_edge("c", "a", arg="x")
    with pytest.raises(WorkflowInvalid, match=r"cycle: (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        validate(Workflow.from_graph(g, name="loop"))


def test_missing_input_is_named() -> None:
    with Workflow("w") as wf:
        add(1)
    with pytest.raises(WorkflowInvalid, match=r"task 'add' is missing input\(s\) 'b'"):
        validate(wf)


def test_edge_to_a_node_without_callable() -> None:
    g = nx.DiGraph()
    g.add_node("use", func=inc.func)
    g.add_edge("ghost", "use", arg="x")
    with pytest.raises(WorkflowInvalid, match=r"task 'ghost' \(an input of 'use'\) has no callable"):
        validate(Workflow.from_graph(g))


def test_unknown_and_missing_parameters() -> None:
    with Workflow("w", params={"n": 1}) as wf:
        inc(wf.param("n"))
        inc(wf.param("m"))
    assert wf.params["m"] is REQUIRED
    with pytest.raises(WorkflowInvalid, match=r"unknown parameter\(s\) 'zzz' for workflow 'w'; known: m, n"):
        validate(wf, {"zzz": 1, "m": 2})
    with pytest.raises(WorkflowInvalid, match=r"needs parameter\(s\) 'm'; pass -p NAME=VALUE"):
        validate(wf, {})
    validate(wf, {"m": 2})


def test_unpicklable_callable() -> None:
    lock = threading.Lock()

    def guarded(x):
        with lock:
            return x

    with Workflow("w") as wf:
        task(guarded)(1)
    with pytest.raises(WorkflowInvalid, match=r"task 'guarded': its callable .*guarded.* cannot be pickled"):
        validate(wf)


def test_bad_options() -> None:
    with Workflow("w") as wf:
        inc.with_options(timeout=-1)(1)
        inc.with_options(resources={"gpu_count": 1})(2)
    with pytest.raises(WorkflowInvalid) as info:
        validate(wf)
    assert "timeout must be a number of seconds > 0" in str(info.value)
    assert "unknown resource requirement(s) ['gpu_count']" in str(info.value)
    with pytest.raises(Exception, match="unknown task option"):
        task(inc.func, retry=3)


def test_unmeetable_requirement_fails_unless_fallback() -> None:
    machines = [{"id": "m", "hostname": "m", "ip_address": "1.2.3.4", "platform": "linux", "status": "online",
                 "workers": [{"address": "tcp://1.2.3.4:1", "resources": {"CPU": 2}}]}]
    with Workflow("w") as wf:
        inc.with_options(resources={"gpu_required": True})(1)
    with pytest.raises(UnsatisfiableRequirement, match=r"task 'inc': no machine can meet the requirement \(gpu_required=True\)"):
        check_requirements(wf, machines)
    with Workflow("w2") as wf2:
        inc.with_options(resources={"gpu_required": True}, fallback=True)(1)
        inc.with_options(resources={"cpu_cores": 2})(2)
    assert check_requirements(wf2, machines) == {"inc": {}, "inc-2": {"resources": {"CPU": 2.0}}}


def test_cache_keys_follow_code_inputs_and_params() -> None:
    def build(n: int, factor: int):
        with Workflow("w", params={"n": n}) as wf:
            x = inc(wf.param("n"))
            add(x, factor)
            inc(5)
        return wf

    def keys(wf, params=None):
        values, bindings = validate(wf, params)
        return cache_keys(wf, values, bindings, list(nx.topological_sort(wf.graph)))

    base = keys(build(1, 2))
    assert base == keys(build(1, 2))  # deterministic
    changed_param = keys(build(1, 2), {"n": 7})
    assert changed_param["inc"] != base["inc"] and changed_param["add"] != base["add"]
    assert changed_param["inc-2"] == base["inc-2"]  # independent of n
    changed_const = keys(build(1, 3))
    assert changed_const["add"] != base["add"] and changed_const["inc"] == base["inc"]


def test_compile_one_graph_unique_prefixed_keys_and_annotations(tmp_path) -> None:
    with Workflow("w") as wf:
        a = inc.with_options(priority=7)(1)
        b = inc.with_options(resources={"gpu_required": True})(a)
        total([a, b])
    values, bindings = validate(wf)
    placement = {"inc-2": {"resources": {"GPU": 1.0}}}
    c1 = compile_workflow(wf, values, bindings, placement, "run1", str(tmp_path))
    c2 = compile_workflow(wf, values, bindings, placement, "run2", str(tmp_path))
    # Dask's <name>-<token> convention: the prefix is the step (both uses of inc share it), the
    # run id is in the token, so two runs never share a key
    assert {n: key_split(k) for n, k in c1.keys.items()} == {"inc": "inc", "inc-2": "inc", "total": "total"}
    assert all("-run1." in k for k in c1.keys.values()) and len(set(c1.keys.values())) == 3
    assert not set(c1.keys.values()) & set(c2.keys.values())
    annotations = {k: layer.annotations for layer in c1.graph.layers.values() for k in layer}
    assert annotations[c1.keys["inc"]] == {"priority": 7, "caelum_kind": "workflow"}
    assert annotations[c1.keys["inc-2"]] == {"resources": {"GPU": 1.0}, "caelum_kind": "workflow"}
    assert annotations[c1.keys["total"]] == {"caelum_kind": "workflow"}
    assert c1.targets == [c1.keys["total"]]
    # cached nodes needed by nobody are not submitted at all; needed ones are loaded
    c3 = compile_workflow(wf, values, bindings, {}, "run3", str(tmp_path), reusable={"inc", "inc-2"})
    assert c3.computed == ["total"] and c3.loaded == ["inc", "inc-2"]
    c4 = compile_workflow(wf, values, bindings, {}, "run4", str(tmp_path), reusable={"inc", "inc-2", "total"})
    assert c4.computed == [] and c4.loaded == ["total"] and set(c4.reused) == {"inc", "inc-2", "total"}


def test_result_cache_roundtrip_and_listing(tmp_path) -> None:
    cache = ResultCache(str(tmp_path / "c"))
    assert cache.keys() == set()
    assert cache.store("ab" * 32, {"x": [1, 2]})
    assert not cache.store("cd" * 32, threading.Lock())  # unpicklable: not cached
    assert cache.keys() == {"ab" * 32} and cache.exists("ab" * 32)
    assert cache.load("ab" * 32) == {"x": [1, 2]}
    cache.clear()  # cleared under a live instance: the next write recreates the folders
    assert cache.keys() == set() and cache.store("ab" * 32, 3) and cache.load("ab" * 32) == 3
    remote = ResultCache(f"memory://caelum-test-{tmp_path.name}")
    remote.store("ef" * 32, 5)
    assert remote.keys() == {"ef" * 32} and remote.load("ef" * 32) == 5


def test_run_store_migrates_version_1(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO runs VALUES ('r1', 'old', '{\"n\": 1}', 'completed', 1.0, 2.0)")
    db.execute("INSERT INTO runs VALUES ('r0', 'old', '{}', 'running', 0.5, NULL)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with RunStore(path) as store:
        assert store.version == SCHEMA_VERSION == 4
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        run = store.run("r1")
        assert run["workflow"] == "old" and run["parameters"] == {"n": 1} and run["computed"] == 0
        assert run["tasks"] == []
        assert run["owner_pid"] is None and run["reason"] is None and run["estimated"] is None
        # a run stored before owners were recorded has nobody to check: it is left as it was
        assert store.run("r0")["state"] == "running"


def test_run_store_records_attempts(tmp_path) -> None:
    with RunStore(tmp_path / "s.sqlite") as store:
        store.start_run("r", "wf", {"n": 1}, ["t"])
        store.record("r", [
            {"task": "t", "state": "running", "worker": "w1", "machine": "m", "attempt": 1, "timestamp": 1.0},
            {"task": "t", "state": "running", "worker": "w1", "machine": "m", "attempt": 2, "timestamp": 2.0,
             "previous_error": "ValueError: x", "previous_traceback": "tb"},
            {"task": "t", "state": "completed", "worker": "w1", "machine": "m", "timestamp": 3.0, "cache_key": "k"},
        ])
        store.finish_run("r", "completed", {"computed": 1})
        run = store.run("r")
    assert [(a["attempt"], a["state"], a["error"]) for a in run["attempts"]] == [(1, "failed", "ValueError: x"), (2, "completed", None)]
    assert run["tasks"][0]["state"] == "completed" and run["tasks"][0]["attempts"] == 2
    assert run["tasks"][0]["cache_key"] == "k" and run["state"] == "completed" and run["computed"] == 1
    with pytest.raises(Exception, match="no run 'nope'"):
        RunStore(tmp_path / "s.sqlite").run("nope")

"""The compiler: a whole workflow DiGraph becomes ONE Dask graph, submitted in one call.

Every node becomes one Dask task keyed ``<node>-<run id>.<n>`` (Dask's ``<name>-<token>``
convention, :mod:`caelum_dask.keys`: the task prefix is the step; annotated ``caelum_kind:
workflow``) (unique per run: the
scheduler would otherwise hand back another run's result and ignore our annotations). Per-task
placement (resources, workers) and priority travel as annotations of HighLevelGraph layers —
one MaterializedLayer per distinct annotation set — which the scheduler applies key by key;
the graph is submitted as-is (no delayed-style fusion that could drop annotations). Before
compiling, every node gets a cache key (code + upstream keys + constants + parameters); nodes
whose result is already cached are not computed: they are loaded where a computed dependent
or the caller needs them, and skipped entirely otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from dask.task_spec import Task, TaskRef
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from caelum_dask import compat
from caelum_dask.keys import KIND, task_key
from caelum_dask.workflow.cache import code_hash
from caelum_dask.workflow.model import MapRef, ParamRef, Ref, Workflow, options_of
from caelum_dask.workflow.runtime import NodeRuntime, RunContext, load_cached, run_map, run_node

KEY_PREFIX = "caelum-wf"


@dataclass
class CompiledRun:
    """The Dask graph of one run plus what the runner needs to follow it."""

    run_id: str
    prefix: str
    graph: HighLevelGraph
    keys: dict[str, str]  # node -> Dask key (computed and loaded nodes)
    targets: list[str]  # Dask keys to wait for (sinks of the compiled graph)
    cache_keys: dict[str, str]
    computed: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # cached and never needed: not submitted
    sinks: list[str] = field(default_factory=list)  # workflow outputs (nodes without dependents)


def _resolve(value: Any, refs: dict[str, Any], params: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        return refs[value.name]
    if isinstance(value, ParamRef):
        return params[value.name]
    if isinstance(value, list):
        return [_resolve(v, refs, params) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, refs, params) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, refs, params) for k, v in value.items()}
    return value


_PLAIN = (int, float, bool, type(None))


def _fingerprint(value: Any, keys: dict[str, str], param_tokens: dict[str, str]) -> str:
    """A stable text for a node's inputs: upstream cache keys, parameter tokens, constants.

    Plain data is spelled out directly (much cheaper than ``tokenize`` for 10,000 nodes);
    anything else goes through Dask's ``tokenize``.
    """
    kind = type(value)
    if kind is Ref:
        return "R" + keys[value.name]
    if kind is ParamRef:
        return "P" + param_tokens[value.name]
    if kind in _PLAIN:
        return f"{kind.__name__}:{value!r}"
    if kind is str:
        return f"s{len(value)}:{value}"
    if kind in (list, tuple, MapRef):
        return kind.__name__[0] + "[" + ",".join(_fingerprint(v, keys, param_tokens) for v in value) + "]"
    if kind is dict and all(type(k) is str for k in value):
        return "d{" + ",".join(f"{k!r}:{_fingerprint(v, keys, param_tokens)}" for k, v in sorted(value.items())) + "}"
    return "T" + tokenize(value)


def cache_keys(wf: Workflow, params: dict[str, Any], bindings: dict[str, tuple[tuple[Any, ...], dict[str, Any]]],
               order: list[str]) -> dict[str, str]:
    """Every node's cache key, in topological order (a key covers all of its upstream)."""
    keys: dict[str, str] = {}
    param_tokens = {name: tokenize(value) for name, value in params.items()}
    g = wf.graph
    for node in order:
        attrs = g.nodes[node]
        args, kwargs = bindings[node]
        text = "\x00".join((code_hash(attrs["func"]), "map" if attrs.get("map_over") is not None else "task",
                            _fingerprint((args, kwargs), keys, param_tokens)))
        keys[node] = hashlib.sha256(text.encode()).hexdigest()
    return keys


def _plan(g: Any, order: list[str], reusable: set[str]) -> tuple[set[str], set[str]]:
    """``(compute, load)``: nodes to run, and reusable nodes whose cached result is needed.

    Walking back from the sinks: a node is needed when it is a sink or feeds a node that runs;
    a needed reusable node is loaded from the cache, a needed other one (or an uncached one)
    runs; a reusable node nobody needs is neither.
    """
    compute: set[str] = set()
    load: set[str] = set()
    for node in reversed(order):
        needed = g.out_degree(node) == 0 or any(s in compute for s in g.successors(node))
        if node in reusable:
            if needed:
                load.add(node)
        elif needed or not options_of(g.nodes[node])["cache"]:
            compute.add(node)
    return compute, load


def _node_task(node: str, attrs: dict[str, Any], key: str, ctx: RunContext, cache_key: str,
               binding: tuple[tuple[Any, ...], dict[str, Any]], refs: dict[str, TaskRef], params: dict[str, Any],
               place: dict[str, Any]) -> tuple[Task, dict[str, Any]]:
    """The Dask task of a node that runs, and the annotations of its layer."""
    opts = options_of(attrs)
    args = tuple(compat.parse_task_input(a) for a in _resolve(binding[0], refs, params))
    kwargs = {k: compat.parse_task_input(v) for k, v in _resolve(binding[1], refs, params).items()}
    priority = opts["priority"]
    is_map = attrs.get("map_over") is not None
    rt = NodeRuntime(
        name=node, func=attrs["func"], retries=opts["retries"], retry_delay=opts["retry_delay"],
        retry_backoff=opts["retry_backoff"], retry_jitter=opts["retry_jitter"], timeout=opts["timeout"],
        cache=bool(opts["cache"]), cache_key=cache_key if opts["cache"] else None, check_cache=False,
        key_parts=(code_hash(attrs["func"]), cache_key) if is_map else None,
        map_over=attrs.get("map_over"),
        item_annotations={**place, **({"priority": priority} if priority else {}),
                          **({"retries": opts["retries"]} if opts["retries"] else {})} if is_map else {},
    )
    task = Task(key, run_map if is_map else run_node, rt, ctx, *args, **kwargs)
    annotations = {} if is_map else dict(place)
    if priority:
        annotations["priority"] = priority
    if opts["retries"] and not is_map:
        # the wrapper retries failures with backoff; Dask's own retries cover the rare
        # failure of the wrapper itself (e.g. a worker that cannot unpickle the task)
        annotations["retries"] = opts["retries"]
    return task, annotations


def _layered_graph(prefix: str, tasks: list[tuple[str, Task, dict[str, Any]]]) -> HighLevelGraph:
    """One materialized layer per distinct set of annotations (kept through optimisation)."""
    layers: dict[tuple[Any, ...], dict[str, Any]] = {}
    layer_annotations: dict[tuple[Any, ...], dict[str, Any]] = {}
    for key, task, annotations in tasks:
        group = tuple(sorted((k, repr(v)) for k, v in annotations.items()))
        layers.setdefault(group, {})[key] = task
        layer_annotations[group] = annotations
    hlg_layers = {f"{prefix}-layer{i}": MaterializedLayer(dsk, annotations={**layer_annotations[group], KIND: "workflow"})
                  for i, (group, dsk) in enumerate(layers.items())}
    return HighLevelGraph(hlg_layers, {name: set() for name in hlg_layers})


def compile_workflow(wf: Workflow, params: dict[str, Any], bindings: dict[str, tuple[tuple[Any, ...], dict[str, Any]]],
                     placement: dict[str, dict[str, Any]], run_id: str, cache_url: str,
                     reusable: set[str] | None = None, keys: dict[str, str] | None = None,
                     reuse_items: bool = True) -> CompiledRun:
    """Compile ``wf`` for run ``run_id``; ``reusable`` names nodes whose cached result may be used."""
    g = wf.graph
    order = list(nx.topological_sort(g))
    keys = keys if keys is not None else cache_keys(wf, params, bindings, order)
    prefix = f"{KEY_PREFIX}-{run_id}"
    ctx = RunContext(run_id=run_id, prefix=prefix, cache_url=cache_url, workflow=wf.name, reuse=reuse_items)
    compute, load = _plan(g, order, reusable or set())
    dask_key = {n: task_key(n, run_id, i) for i, n in enumerate(order) if n in compute or n in load}
    refs = {n: TaskRef(k) for n, k in dask_key.items()}
    tasks: list[tuple[str, Task, dict[str, Any]]] = []
    depended: set[str] = set()
    for node, key in dask_key.items():
        if node in load:
            tasks.append((key, Task(key, load_cached, ctx, node, keys[node]), {}))
            continue
        depended.update(dask_key[p] for p in g.predecessors(node))
        task, annotations = _node_task(node, g.nodes[node], key, ctx, keys[node], bindings[node], refs, params,
                                       dict(placement.get(node, {})))
        tasks.append((key, task, annotations))
    return CompiledRun(
        run_id=run_id, prefix=prefix, graph=_layered_graph(prefix, tasks), keys=dask_key,
        targets=[k for k in dask_key.values() if k not in depended], cache_keys=keys,
        computed=[n for n in order if n in compute], loaded=[n for n in order if n in load],
        reused=[n for n in order if n not in compute], sinks=[n for n in order if g.out_degree(n) == 0],
    )


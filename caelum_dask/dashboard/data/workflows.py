"""Workflows page data: recent runs and one run's DAG, coloured by task state.

Fed by ``caelum.workflows`` events (schema in DESIGN/common conventions)::

    run-started  {run_id, workflow, nodes: [names], edges: [[a, b], ...]}
    task-state   {run_id, task, state: pending|running|completed|failed|cached|skipped, worker, machine}
    run-finished {run_id, state, computed, cached, failed}

The DAG is laid out once per run with networkx (topological generations as layers, then
``multipartite_layout``); a state change only touches counters. Runs bigger than
``aggregate_above`` nodes are drawn as task groups (Dask's own ``key_split`` of the task
name, or layers of the graph when names do not group) so a 10,000-node run costs a few
hundred glyphs per update, not 10,000.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from dask.utils import key_split

from caelum_dask.dashboard.data.recent import RecentRuns

STATES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cached", "skipped")
STATE_COLOURS: dict[str, str] = {
    "pending": "#c7c7c7",
    "running": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "cached": "#17becf",
    "skipped": "#f7e17c",
}
DONE = {"completed", "cached", "skipped"}


@dataclass
class WorkflowRun:
    """One run as the events describe it; ``version`` changes whenever anything shown changes."""

    run_id: str
    workflow: str = "?"
    nodes: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    machines: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    state: str = "running"
    started: str = ""
    finished: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    structure_version: int = 0  # bumped when nodes/edges change (layout must be redone)
    # task-group aggregation, built on first use and then kept up to date incrementally
    group_of: dict[str, str] | None = None
    group_counts: dict[str, Counter[str]] = field(default_factory=dict)
    _layout: dict[str, Any] = field(default_factory=dict)

    def set_structure(self, nodes: list[str], edges: list[tuple[str, str]]) -> None:
        self.nodes = [str(n) for n in nodes]
        self.edges = [(str(a), str(b)) for a, b in edges]
        old = self.states
        self.states = {n: old.get(n, "pending") for n in self.nodes}
        for a, b in self.edges:  # edges may name nodes the list forgot
            for n in (a, b):
                if n not in self.states:
                    self.nodes.append(n)
                    self.states[n] = "pending"
        self.counts = Counter(self.states.values())
        self.group_of = None
        self.group_counts = {}
        self._layout = {}
        self.structure_version += 1
        self.version += 1

    def set_state(self, task: str, state: str, machine: str | None = None) -> None:
        task = str(task)
        if task not in self.states:
            self.nodes.append(task)
            self.states[task] = "pending"
            self.counts["pending"] += 1
            self.group_of = None
            self._layout = {}
            self.structure_version += 1
        previous = self.states[task]
        self.states[task] = state
        self.counts[previous] -= 1
        self.counts[state] += 1
        if self.group_of is not None:
            counts = self.group_counts[self.group_of[task]]
            counts[previous] -= 1
            counts[state] += 1
        if machine:
            self.machines[task] = machine
        self.version += 1


def _time_text(value: Any) -> str:
    if not value:
        return ""
    try:
        return _dt.datetime.fromisoformat(str(value)).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return str(value)


class WorkflowRuns(RecentRuns[WorkflowRun]):
    """The runs seen on ``caelum.workflows``, most recent last, at most ``keep`` of them."""

    run_class = WorkflowRun

    def apply(self, msg: Any) -> None:
        """Feed one event message (anything that is not a workflow event is ignored)."""
        if not isinstance(msg, dict) or "run_id" not in msg:
            return
        event = msg.get("event")
        run_id = str(msg["run_id"])
        if event == "run-started":
            run = self._run(run_id)
            run.workflow = str(msg.get("workflow") or run.workflow)
            run.started = _time_text(msg.get("time"))
            run.state = "running"
            run.set_structure(list(msg.get("nodes") or []), [tuple(e) for e in msg.get("edges") or []])
        elif event == "task-state" and msg.get("task") is not None:
            run = self._run(run_id)
            run.set_state(msg["task"], str(msg.get("state") or "pending"), msg.get("machine"))
        elif event == "run-finished":
            run = self._run(run_id)
            run.state = str(msg.get("state") or "finished")
            run.finished = _time_text(msg.get("time"))
            run.summary = {k: msg.get(k) for k in ("computed", "cached", "failed") if k in msg}
            run.version += 1
        else:
            return
        self.version += 1


def runs_source(runs: WorkflowRuns) -> dict[str, list[Any]]:
    """The recent runs table, most recent first."""
    out: dict[str, list[Any]] = {
        k: [] for k in ("run_id", "workflow", "state", "state_colour", "nodes", "pending", "running",
                        "completed", "cached", "failed", "skipped", "started", "finished")
    }
    for run in reversed(runs.runs.values()):
        out["run_id"].append(run.run_id)
        out["workflow"].append(run.workflow)
        out["state"].append(run.state)
        out["state_colour"].append(
            STATE_COLOURS.get(run.state, STATE_COLOURS["running"] if run.state == "running" else "#7f7f7f")
        )
        out["nodes"].append(len(run.states))
        for state in STATES:
            out[state].append(run.counts.get(state, 0))
        out["started"].append(run.started)
        out["finished"].append(run.finished)
    return out


def group_state(counts: Counter[str] | dict[str, int]) -> str:
    """The state a group of tasks is shown in: failed > running > pending > done."""
    if counts.get("failed", 0) > 0:
        return "failed"
    if counts.get("running", 0) > 0:
        return "running"
    if counts.get("pending", 0) > 0:
        return "pending"
    if counts.get("completed", 0) > 0:
        return "completed"
    if counts.get("cached", 0) > 0:
        return "cached"
    return "skipped"


def _graph(run: WorkflowRun) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(run.states)
    graph.add_edges_from(run.edges)
    return graph


def _generations(graph: nx.DiGraph) -> dict[Any, int]:
    """Layer of every node: its topological generation (0 for every node of a cyclic graph)."""
    try:
        return {n: i for i, gen in enumerate(nx.topological_generations(graph)) for n in gen}
    except nx.NetworkXUnfeasible:
        return {n: 0 for n in graph}


def _positions(graph: nx.DiGraph, layers: dict[Any, int]) -> dict[Any, tuple[float, float]]:
    if graph.number_of_nodes() == 0:
        return {}
    nx.set_node_attributes(graph, layers, "layer")
    pos = nx.multipartite_layout(graph, subset_key="layer", align="vertical")
    return {n: (float(x), float(y)) for n, (x, y) in pos.items()}


def assign_groups(run: WorkflowRun, max_groups: int) -> dict[str, str]:
    """Task groups for a big run: ``key_split`` names, else layers (at most ``max_groups``)."""
    groups = {n: key_split(n) for n in run.states}
    if len(set(groups.values())) <= max_groups:
        return groups
    layers = _generations(_graph(run))
    depth = max(layers.values(), default=0) + 1
    width = -(-depth // max_groups)  # ceil: layers per group
    def name(layer: int) -> str:
        first = (layer // width) * width
        return f"layer {first}" if width == 1 else f"layers {first}-{min(first + width, depth) - 1}"
    return {n: name(layers[n]) for n in run.states}


def _ensure_groups(run: WorkflowRun, max_groups: int) -> None:
    if run.group_of is None:
        run.group_of = assign_groups(run, max_groups)
        run.group_counts = {}
        for node, group in run.group_of.items():
            run.group_counts.setdefault(group, Counter())[run.states[node]] += 1


def _layout(run: WorkflowRun, aggregate_above: int) -> dict[str, Any]:
    """Positions and edge lines of the drawn graph (tasks or groups), cached per structure."""
    key = (run.structure_version, aggregate_above)
    if run._layout.get("key") == key:
        return run._layout
    aggregated = len(run.states) > aggregate_above
    if aggregated:
        _ensure_groups(run, aggregate_above)
        assert run.group_of is not None
        full_layers = _generations(_graph(run))
        layers: dict[str, int] = {}
        for node, group in run.group_of.items():
            layers[group] = min(layers.get(group, full_layers[node]), full_layers[node])
        graph = nx.DiGraph()
        graph.add_nodes_from(layers)
        graph.add_edges_from(
            {(run.group_of[a], run.group_of[b]) for a, b in run.edges if run.group_of[a] != run.group_of[b]}
        )
    else:
        graph = _graph(run)
        layers = _generations(graph)
    pos = _positions(graph, layers)
    xs, ys = [], []
    for a, b in graph.edges:
        xs.append([pos[a][0], pos[b][0]])
        ys.append([pos[a][1], pos[b][1]])
    run._layout = {"key": key, "aggregated": aggregated, "pos": pos, "edges": {"xs": xs, "ys": ys}}
    return run._layout


def dag_source(run: WorkflowRun, aggregate_above: int = 300) -> dict[str, Any]:
    """``{"aggregated", "nodes", "edges"}``: ColumnDataSource data for the run's DAG.

    ``nodes`` has x, y, name, state, colour, size, count, detail (hover text) and machine;
    with aggregation one row is one task group and ``detail`` gives its state counts.
    """
    layout = _layout(run, aggregate_above)
    pos = layout["pos"]
    nodes: dict[str, list[Any]] = {
        k: [] for k in ("x", "y", "name", "state", "colour", "size", "count", "detail", "machine")
    }
    if layout["aggregated"]:
        for group, counts in run.group_counts.items():
            total = sum(counts.values())
            state = group_state(counts)
            nodes["x"].append(pos[group][0])
            nodes["y"].append(pos[group][1])
            nodes["name"].append(group)
            nodes["state"].append(state)
            nodes["colour"].append(STATE_COLOURS.get(state, "#7f7f7f"))
            nodes["size"].append(min(40.0, 10.0 + 4.0 * total ** 0.5))
            nodes["count"].append(total)
            nodes["detail"].append(", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s)))
            nodes["machine"].append("")
    else:
        for name, state in run.states.items():
            nodes["x"].append(pos[name][0])
            nodes["y"].append(pos[name][1])
            nodes["name"].append(name)
            nodes["state"].append(state)
            nodes["colour"].append(STATE_COLOURS.get(state, "#7f7f7f"))
            nodes["size"].append(14.0)
            nodes["count"].append(1)
            nodes["detail"].append(state)
            nodes["machine"].append(run.machines.get(name, ""))
    return {"aggregated": layout["aggregated"], "nodes": nodes, "edges": layout["edges"]}


def run_title(run: WorkflowRun) -> str:
    counts = ", ".join(f"{run.counts[s]} {s}" for s in STATES if run.counts.get(s))
    return f"{run.workflow} — run {run.run_id} — {run.state} ({len(run.states)} tasks: {counts})"

"""Workflows page data: recent runs and one run's DAG, coloured by task state.

Fed by ``caelum.workflows`` events (schema in DESIGN/common conventions)::

    run-started  {run_id, workflow, nodes: [names], edges: [[a, b], ...]}
    task-state   {run_id, task, state: pending|running|completed|failed|cached|skipped, worker, machine}
    run-finished {run_id, state, computed, cached, failed}

The DAG is laid out once per run (topological generations as layers, left to right; map
fan-outs folded into one node until clicked open; labels cut to fit and never overlapping); a
state change only touches counters. Runs bigger than
``aggregate_above`` nodes are drawn as task groups (Dask's own ``key_split`` of the task
name, or layers of the graph when names do not group) so a 10,000-node run costs a few
hundred glyphs per update, not 10,000.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
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
    estimates: dict[str, float] = field(default_factory=dict)  # learned seconds per task (run-started)
    actuals: dict[str, float] = field(default_factory=dict)  # seconds each finished task took
    subjobs: dict[str, str] = field(default_factory=dict)  # a step's sub-job progress ("12/40 tests, …")
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
        handler = _HANDLERS.get(str(msg.get("event")))
        if handler is None or (handler is not _run_started and handler is not _run_finished
                               and msg.get("task") is None):
            return
        handler(self._run(str(msg["run_id"])), msg)
        self.version += 1


def _run_started(run: WorkflowRun, msg: dict[str, Any]) -> None:
    run.workflow = str(msg.get("workflow") or run.workflow)
    run.started = _time_text(msg.get("time"))
    run.state = "running"
    run.estimates = {str(k): float(v) for k, v in (msg.get("estimates") or {}).items()}
    run.set_structure(list(msg.get("nodes") or []), [tuple(e) for e in msg.get("edges") or []])


def _task_state(run: WorkflowRun, msg: dict[str, Any]) -> None:
    if isinstance(msg.get("duration"), (int, float)):
        run.actuals[str(msg["task"])] = float(msg["duration"])
    run.set_state(msg["task"], str(msg.get("state") or "pending"), msg.get("machine"))


def _task_progress(run: WorkflowRun, msg: dict[str, Any]) -> None:
    """A step's sub-job (tests, analysis, BI): shown in its row while it runs."""
    run.subjobs[str(msg["task"])] = str(msg.get("text") or "")
    run.version += 1


def _run_finished(run: WorkflowRun, msg: dict[str, Any]) -> None:
    run.state = str(msg.get("state") or "finished")
    run.finished = _time_text(msg.get("time"))
    run.summary = {k: msg.get(k) for k in ("computed", "cached", "failed") if k in msg}
    run.version += 1


#: what each ``caelum.workflows`` event does to its run (task events need a ``task``)
_HANDLERS: dict[str, Callable[[WorkflowRun, dict[str, Any]], None]] = {
    "run-started": _run_started, "task-state": _task_state, "task-progress": _task_progress,
    "run-finished": _run_finished,
}


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
    """Layers left to right across the whole width, each layer's nodes spread top to bottom.

    networkx's ``multipartite_layout`` scales both axes together, so a wide fan-out squeezes
    the layers into a thin vertical stack; here the axes are spread independently. Within a
    layer, nodes are ordered by the mean height of their parents (the barycentre heuristic), so
    edges cross less.
    """
    if graph.number_of_nodes() == 0:
        return {}
    by_layer: dict[int, list[Any]] = defaultdict(list)
    for node in graph.nodes:
        by_layer[layers.get(node, 0)].append(node)
    depth = max(by_layer) + 1
    pos: dict[Any, tuple[float, float]] = {}
    for layer in sorted(by_layer):
        members = sorted(by_layer[layer], key=lambda n: (-_parents_height(graph, pos, n), _natural(str(n))))
        x = -1.0 + 2.0 * layer / (depth - 1) if depth > 1 else 0.0
        for i, node in enumerate(members):
            pos[node] = (x, 1.0 - 2.0 * i / (len(members) - 1) if len(members) > 1 else 0.0)
    return pos


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``task[2]`` before ``task[10]``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _parents_height(graph: nx.DiGraph, pos: dict[Any, tuple[float, float]], node: Any) -> float:
    heights = [pos[p][1] for p in graph.predecessors(node) if p in pos]
    return sum(heights) / len(heights) if heights else 0.0


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


#: a mapped task's name, as ``Workflow.map`` makes it: ``base[i]``
MAPPED = re.compile(r"^(?P<base>.+)\[(?P<index>\d+)\]$")
#: nominal size in pixels of the DAG figure, for placing labels (its height is fixed; its width
#: stretches with the window, so labels are placed for a typical laptop width)
DAG_WIDTH_PX = 1000.0
DAG_HEIGHT_PX = 520.0
_CHAR_PX = 6.6  # 11px font
_LINE_PX = 13.0


def fanout_groups(nodes: Iterable[str], least: int) -> dict[str, str]:
    """``node -> "base[…]"`` for the members of every map fan-out of at least ``least`` tasks.

    A fan-out drawn node by node is a column of dots whose labels overlap; drawn as one node
    with a count, it reads as what it is. The page expands a group on click.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        match = MAPPED.match(node)
        if match:
            members[match["base"]].append(node)
    return {node: f"{base}[…]" for base, group in members.items() if len(group) >= least for node in group}


def _collapsed_graph(run: WorkflowRun, shown_as: dict[str, str]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(dict.fromkeys(shown_as.get(n, n) for n in run.states))
    graph.add_edges_from({(shown_as.get(a, a), shown_as.get(b, b)) for a, b in run.edges
                          if shown_as.get(a, a) != shown_as.get(b, b)})
    return graph


def _aggregated_graph(run: WorkflowRun, aggregate_above: int) -> tuple[nx.DiGraph, dict[str, int]]:
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
    return graph, layers


def place_labels(names: list[str], pos: dict[str, tuple[float, float]], sizes: dict[str, float],
                 texts: dict[str, str] | None = None) -> dict[str, str]:
    """A label per node that fits between its layer and the next and overlaps no other label.

    Positions are in the figure's data range (-1.1..1.1 both ways); a label sits right of its
    dot (a fan-out column then reads as a list), is cut to the room before the next layer, and
    is left out (the hover still names the node) where it would cover one already placed —
    layer by layer, top to bottom.
    """
    def px(x: float, y: float) -> tuple[float, float]:
        return (x + 1.1) / 2.2 * DAG_WIDTH_PX, (1.1 - y) / 2.2 * DAG_HEIGHT_PX

    columns = sorted({round(px(*pos[n])[0], 1) for n in names})
    gaps = [b - a for a, b in zip(columns, columns[1:])]
    room = min(gaps) if gaps else DAG_WIDTH_PX / 2
    most = max(4, int((room - 30) / _CHAR_PX))  # leave the next layer's dot free
    placed: list[tuple[float, float, float, float]] = []
    labels: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (round(pos[n][0], 6), -pos[n][1])):
        full = (texts or {}).get(name, name)
        text = full if len(full) <= most else full[: most - 1] + "…"
        x, y = px(*pos[name])
        left = x + sizes.get(name, 14.0) / 2 + 4
        box = (left, y - _LINE_PX / 2, left + len(text) * _CHAR_PX, y + _LINE_PX / 2)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            labels[name] = ""
            continue
        placed.append(box)
        labels[name] = text
    return labels


def _layout(run: WorkflowRun, aggregate_above: int, expanded: Collection[str] = (),
            fanout_at: int = 0) -> dict[str, Any]:
    """Positions, edge lines and labels of the drawn graph (tasks, fan-outs or groups).

    Cached per structure and set of expanded fan-outs: a state change never lays out again.
    """
    key = (run.structure_version, aggregate_above, frozenset(expanded), fanout_at)
    if run._layout.get("key") == key:
        return run._layout
    aggregated = len(run.states) > aggregate_above
    shown_as: dict[str, str] = {}
    if aggregated:
        graph, layers = _aggregated_graph(run, aggregate_above)
    else:
        if fanout_at:
            shown_as = {n: g for n, g in fanout_groups(run.states, fanout_at).items() if g not in expanded}
        graph = _collapsed_graph(run, shown_as)
        layers = _generations(graph)
    pos = _positions(graph, layers)
    xs, ys = [], []
    for a, b in graph.edges:
        xs.append([pos[a][0], pos[b][0]])
        ys.append([pos[a][1], pos[b][1]])
    members: dict[str, list[str]] = defaultdict(list)
    for node in run.states:
        members[shown_as.get(node, node)].append(node)
    run._layout = {"key": key, "aggregated": aggregated, "pos": pos, "edges": {"xs": xs, "ys": ys},
                   "members": dict(members) if not aggregated else {}}
    return run._layout


def _node_size(count: int) -> float:
    return 14.0 if count == 1 else min(40.0, 14.0 + 3.0 * count ** 0.5)


def _mean_text(values: dict[str, float], members: Iterable[str]) -> str:
    """Mean seconds of the members that have a value, as table text ("" when none has)."""
    known = [values[m] for m in members if m in values]
    return f"{sum(known) / len(known):.2f}" if known else ""


def _row(nodes: dict[str, list[Any]], xy: tuple[float, float], name: str, counts: Counter[str],
         machine: str, size: float, times: tuple[str, str] = ("", "")) -> None:
    total = sum(counts.values())
    state = group_state(counts)
    nodes["x"].append(xy[0])
    nodes["y"].append(xy[1])
    nodes["name"].append(name)
    nodes["state"].append(state)
    nodes["colour"].append(STATE_COLOURS.get(state, "#7f7f7f"))
    nodes["size"].append(size)
    nodes["count"].append(total)
    nodes["detail"].append(state if total == 1 else ", ".join(f"{counts[s]} {s}" for s in STATES if counts.get(s)))
    nodes["machine"].append(machine)
    nodes["estimate"].append(times[0])
    nodes["actual"].append(times[1])


def dag_source(run: WorkflowRun, aggregate_above: int = 300, expanded: Collection[str] = (),
               fanout_at: int = 0) -> dict[str, Any]:
    """``{"aggregated", "nodes", "edges"}``: ColumnDataSource data for the run's DAG.

    ``nodes`` has x, y, name, state, colour, size, count, detail (hover text), machine,
    estimate and actual (seconds per task as text: the learned estimate, the time taken; a
    group's mean) and label. With aggregation one row is one task group; otherwise a map fan-out of at least
    ``fanout_at`` tasks (0: never) is one row named ``base[…]`` unless its name is in
    ``expanded``; a group's ``detail`` gives its state counts.
    """
    layout = _layout(run, aggregate_above, expanded, fanout_at)
    pos = layout["pos"]
    nodes: dict[str, list[Any]] = {
        k: [] for k in ("x", "y", "name", "state", "colour", "size", "count", "detail", "machine", "estimate",
                        "actual")
    }
    if layout["aggregated"]:
        in_group: dict[str, list[str]] = defaultdict(list)
        for task, group in (run.group_of or {}).items():
            in_group[group].append(task)
        for group, counts in run.group_counts.items():
            times = (_mean_text(run.estimates, in_group[group]), _mean_text(run.actuals, in_group[group]))
            _row(nodes, pos[group], group, counts, "", min(40.0, 10.0 + 4.0 * sum(counts.values()) ** 0.5), times)
    else:
        for shown, members in layout["members"].items():
            counts = Counter(run.states[m] for m in members)
            machine = run.machines.get(members[0], "") if len(members) == 1 else ""
            times = (_mean_text(run.estimates, members), _mean_text(run.actuals, members))
            _row(nodes, pos[shown], shown, counts, machine, _node_size(len(members)), times)
            if len(members) == 1 and members[0] in run.subjobs and counts.get("running"):
                nodes["detail"][-1] = f"running — {run.subjobs[members[0]]}"
    if "labels" not in layout or layout["labels_for"] != nodes["name"]:
        texts = {n: f"{n} ×{c}" for n, c in zip(nodes["name"], nodes["count"]) if c > 1}
        layout["labels"] = place_labels(nodes["name"], pos, dict(zip(nodes["name"], nodes["size"])), texts)
        layout["labels_for"] = list(nodes["name"])
    nodes["label"] = [layout["labels"][n] for n in nodes["name"]]
    return {"aggregated": layout["aggregated"], "nodes": nodes, "edges": layout["edges"]}


def run_title(run: WorkflowRun) -> str:
    counts = ", ".join(f"{run.counts[s]} {s}" for s in STATES if run.counts.get(s))
    return f"{run.workflow} — run {run.run_id} — {run.state} ({len(run.states)} tasks: {counts})"

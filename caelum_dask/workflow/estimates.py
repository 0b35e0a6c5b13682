"""How long a run should take, from what the scheduler learned, before it starts.

Every workflow task's Dask prefix is its step (:func:`caelum_dask.keys.step_name`), and the
scheduler's learning plugin (:mod:`caelum_dask.learned`) knows the average duration of every
prefix it has seen, this session or saved from earlier ones. A task's estimate is its step's
average (Dask's ``unknown-task-duration`` for a step never seen, as Dask itself plans it); the
run's estimate is the longest path through the DAG weighted by those estimates — the
critical path, what the run takes with enough workers — with reused (cached) tasks costing
nothing. Both are recorded in the run store so ``caelum runs show`` and the dashboard put
them next to the actual times.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import networkx as nx

from caelum_dask.keys import step_name
from caelum_dask.learned import known_durations, unknown_duration


def task_estimates(nodes: Iterable[str], known: dict[str, float], unknown: float) -> dict[str, float]:
    """Seconds per node: its step's learned average, else ``unknown``."""
    return {n: round(known.get(step_name(n), unknown), 6) for n in nodes}


def critical_path(graph: nx.DiGraph, seconds: dict[str, float], skip: Collection[str] = ()) -> float:
    """The longest chain of the DAG weighted by ``seconds`` (nodes in ``skip`` cost nothing)."""
    finish: dict[str, float] = {}
    for node in nx.topological_sort(graph):
        own = 0.0 if node in skip else seconds.get(node, 0.0)
        finish[node] = own + max((finish[p] for p in graph.predecessors(node)), default=0.0)
    return round(max(finish.values(), default=0.0), 6)


def estimate_run(client: Any, graph: nx.DiGraph, reused: Collection[str] = ()) -> tuple[dict[str, float], float]:
    """``(seconds per task, seconds for the run)`` as the scheduler's learned durations predict."""
    per_task = task_estimates(graph.nodes, known_durations(client), unknown_duration(client))
    return per_task, critical_path(graph, per_task, reused)


__all__ = ["critical_path", "estimate_run", "task_estimates"]

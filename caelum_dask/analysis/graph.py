"""The project's module import graph (networkx): cycles, fan-in/fan-out, centrality."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pandas as pd

MAX_CYCLES = 200


def resolve_target(target: str, names: str, modules: set[str]) -> str | None:
    """The project module an import refers to: ``from a import b`` is ``a.b`` when that is a
    module, else ``a``; an import of ``a.b.c`` where only ``a.b`` is a module is ``a.b``."""
    if not target and not names:
        return None
    candidates = [f"{target}.{n}" if target else n for n in names.split(",") if n and n != "*"]
    for cand in candidates:
        if cand in modules:
            return cand
    parts = target.split(".") if target else []
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def import_graph(files: pd.DataFrame, imports: pd.DataFrame) -> tuple[nx.DiGraph, pd.DataFrame]:
    """The graph (nodes: project modules; edges: importer → imported) and ``imports`` with a
    ``resolved`` column (the project module, or empty for third-party/stdlib imports)."""
    graph = nx.DiGraph()
    modules = set(files["module"]) if len(files) else set()
    graph.add_nodes_from(sorted(modules))
    if imports.empty:
        return graph, imports.assign(resolved=pd.Series(dtype="object"))
    resolved = [
        resolve_target(t, n, modules) for t, n in zip(imports["target"], imports["names"])
    ]
    imports = imports.assign(resolved=[r or "" for r in resolved])
    for importer, target in zip(imports["module"], imports["resolved"]):
        if target and target != importer:
            graph.add_edge(importer, target)
    return graph, imports


def module_table(graph: nx.DiGraph) -> pd.DataFrame:
    """One row per module: fan-in, fan-out, betweenness centrality,
    and the import cycle (strongly connected component) it belongs to, if any.

    Without edges (no ``imports`` analyzer) every centrality is 0 and networkx's sampled
    computation is skipped: it still costs a pass over every node per sample (0.2 s for the
    standard library, after the last batch)."""
    if graph.number_of_nodes() == 0:
        return pd.DataFrame(columns=["module", "fan_in", "fan_out", "centrality", "cycle"])
    if graph.number_of_edges() == 0:  # e.g. `--analyzer cc`: no path through any module, all 0
        between: dict[str, float] = {}
    else:
        k = None if graph.number_of_nodes() <= 500 else 128  # sampled (seeded) on big graphs
        between = nx.betweenness_centrality(graph, k=k, seed=0)
    cycle_of: dict[str, int] = {}
    for index, comp in enumerate(sorted((c for c in nx.strongly_connected_components(graph) if len(c) > 1),
                                        key=lambda c: (-len(c), sorted(c)[0]))):
        for node in comp:
            cycle_of[node] = index
    rows = [{"module": n, "fan_in": graph.in_degree(n), "fan_out": graph.out_degree(n),
             "centrality": between.get(n, 0.0), "cycle": cycle_of.get(n, -1)} for n in graph.nodes]
    return pd.DataFrame(rows).sort_values(["centrality", "module"], ascending=[False, True], ignore_index=True)


def cycles(graph: nx.DiGraph, limit: int = MAX_CYCLES) -> list[list[str]]:
    """Up to ``limit`` elementary import cycles, shortest first."""
    found: list[list[str]] = []
    for cycle in nx.simple_cycles(graph, length_bound=8):
        found.append(cycle)
        if len(found) >= limit:
            break
    return sorted(found, key=lambda c: (len(c), c))


def graph_summary(graph: nx.DiGraph, modules: pd.DataFrame) -> dict[str, Any]:
    found = cycles(graph)
    top = modules.head(10)
    return {
        "modules": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "cycles": found[:20],
        "cycle_groups": int(modules["cycle"].max() + 1) if len(modules) else 0,
        "most_central": top["module"].tolist(),
        "max_fan_in": _top(modules, "fan_in"),
        "max_fan_out": _top(modules, "fan_out"),
    }


def _top(modules: pd.DataFrame, column: str, n: int = 5) -> list[list[Any]]:
    if modules.empty:
        return []
    top = modules[modules[column] > 0].sort_values([column, "module"], ascending=[False, True]).head(n)
    return [[m, int(v)] for m, v in zip(top["module"], top[column])]

"""Build a workflow from a plain networkx graph and run it on the cluster.

    python examples/networkx_workflow.py          # embedded cluster on this machine
    CAELUM_SCHEDULER=tcp://host:8786 python examples/networkx_workflow.py

Nodes carry the callable (``func``) and task options; an edge ``a -> b`` passes ``a``'s
result to ``b`` as the keyword argument named by the edge attribute ``arg`` (default: the
name of ``a``); function arguments named like a workflow parameter receive its value.
"""

from __future__ import annotations

import json

import networkx as nx

from caelum_dask.workflow import Workflow, run


def load(n: int) -> list[int]:
    return list(range(1, n + 1))


def evens(numbers: list[int]) -> list[int]:
    return [x for x in numbers if x % 2 == 0]


def odds(numbers: list[int]) -> list[int]:
    return [x for x in numbers if x % 2]


def summary(evens: list[int], odds: list[int], scale: int) -> dict[str, int]:
    return {"evens": sum(evens) * scale, "odds": sum(odds) * scale, "count": len(evens) + len(odds)}


def build_graph() -> nx.DiGraph:
    g = nx.DiGraph(name="networkx-example", params={"n": 10, "scale": 1})
    g.add_node("load", func=load)                       # n comes from the parameter
    g.add_node("evens", func=evens, retries=1)
    g.add_node("odds", func=odds, priority=5)
    g.add_node("summary", func=summary)                 # scale comes from the parameter
    g.add_edge("load", "evens", arg="numbers")
    g.add_edge("load", "odds", arg="numbers")
    g.add_edge("evens", "summary")                      # arg defaults to the source name
    g.add_edge("odds", "summary")
    return g


wf = Workflow.from_graph(build_graph())

if __name__ == "__main__":
    result = run(wf, params={"n": 100, "scale": 2})
    print(json.dumps({"run_id": result.run_id, "state": result.state, "computed": result.computed,
                      "cached": result.cached, "summary": result["summary"]}))
    raise SystemExit(0 if result.ok else 1)

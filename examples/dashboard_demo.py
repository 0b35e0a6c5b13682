"""Fill the caelum dashboard pages with a live workflow run and tasks of every kind.

Run it (embedded cluster, or --scheduler tcp://HOST:8786) and open the printed URL::

    python examples/dashboard_demo.py --hold 120

It submits real Dask tasks whose keys carry the caelum kind prefixes (so the Tasks page
counts them per machine), and emits ``caelum.workflows`` events for a small DAG while those
tasks run (so the Workflows page colours the nodes live). Without --hold it checks that the
pages answer and exits.
"""

from __future__ import annotations

import argparse
import time
import urllib.request
import uuid

from caelum_dask import connect, events
from caelum_dask.dashboard import pages_url


def work(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None, help="scheduler address (default: embedded cluster)")
    parser.add_argument("--fanout", type=int, default=6, help="parallel tasks in the middle of the DAG")
    parser.add_argument("--hold", type=float, default=0, help="seconds to keep the cluster up for browsing")
    args = parser.parse_args()

    with connect(args.scheduler) as client:
        index = pages_url(client.dashboard_link)
        print(f"dashboard  {client.dashboard_link}")
        print(f"caelum     {index}", flush=True)

        run_id = uuid.uuid4().hex[:8]
        middle = [f"analyze-{i}" for i in range(args.fanout)]
        nodes = ["checkout", *middle, "report"]
        edges = [["checkout", m] for m in middle] + [[m, "report"] for m in middle]
        events.emit(events.WORKFLOWS, "run-started", sink=client, run_id=run_id,
                    workflow="dashboard-demo", nodes=nodes, edges=edges)

        def step(name: str, kind: str, seconds: float) -> None:
            events.emit(events.WORKFLOWS, "task-state", sink=client, run_id=run_id, task=name,
                        state="running", worker="", machine="")
            future = client.submit(work, seconds, key=f"caelum-{kind}-{run_id}-{name}")
            client.gather(future)
            who = client.who_has(future).get(future.key, ())
            events.emit(events.WORKFLOWS, "task-state", sink=client, run_id=run_id, task=name,
                        state="completed", worker=who[0] if who else "", machine="")

        step("checkout", "wf", 0.2)
        for name in middle:
            events.emit(events.WORKFLOWS, "task-state", sink=client, run_id=run_id, task=name,
                        state="running", worker="", machine="")
        kinds = ["analyze", "test", "bi"]
        futures = [client.submit(work, 0.3, key=f"caelum-{kinds[i % 3]}-{run_id}-{name}")
                   for i, name in enumerate(middle)]
        for name, future in zip(middle, futures):
            future.result()
            events.emit(events.WORKFLOWS, "task-state", sink=client, run_id=run_id, task=name,
                        state="completed", worker="", machine="")
        step("report", "wf", 0.2)
        events.emit(events.WORKFLOWS, "run-finished", sink=client, run_id=run_id, state="completed",
                    computed=len(nodes), cached=0, failed=0)

        def summary(dask_scheduler) -> dict:  # type: ignore[no-untyped-def]
            state = dask_scheduler.plugins["caelum-dashboard"]
            run = state.workflows.get(run_id)
            done = {m: sum(c.values()) for m, c in state.tasks.completed.items()}
            return {"states": dict(run.counts), "completed_per_machine": done}

        result = client.run_on_scheduler(summary)
        print(f"workflow run {run_id}: {result['states']}")
        print(f"tasks completed per machine: {result['completed_per_machine']}")
        for page in ("", "machines", "workflows", "tasks"):
            with urllib.request.urlopen(f"{index}{page}", timeout=30) as response:
                print(f"page /caelum/{page}: HTTP {response.status}")
        if args.hold:
            print(f"holding the cluster for {args.hold:g}s; open {index}", flush=True)
            time.sleep(args.hold)


if __name__ == "__main__":
    main()

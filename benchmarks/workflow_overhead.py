"""Workflow overhead: a layered DAG of trivial tasks, compiled and run, against plain Dask.

Compares, on the same embedded cluster (2 worker processes, 1 thread each):

* ``workflow cold``  — ``caelum_dask.workflow.run`` (validate + cache keys + compile + one
  graph submission + events + run store + result cache writes), empty cache;
* ``dask.delayed``   — the same graph as plain ``dask.delayed`` computed with ``client.compute``
  (goal: workflow cold <= 1.3x this);
* ``raw graph``      — the same DAG as a low-level Task graph and one ``client.get``: the
  least any Dask front end can cost (reported because ``dask.delayed`` builds one graph layer
  per call, which makes it a slow baseline at 10,000 nodes);
* ``submit per node``— one ``client.submit`` per node, futures as arguments (the prefect-dask
  pattern; the ratio is reported);
* ``workflow warm``  — the same workflow again, every task cached (goal: <= 0.1x the cold run).

Run (from the repository root)::

    PYTHONPATH=$PWD python benchmarks/workflow_overhead.py            # 10,000 tasks
    PYTHONPATH=$PWD python benchmarks/workflow_overhead.py --layers 20 --width 50   # quick

Each measurement is the best of ``--repeat`` runs; prints the ratios at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import dask
from dask import delayed
from distributed import wait

from caelum_dask import connect
from caelum_dask.workflow import Workflow, run, task


def seed(i: int) -> int:
    return i


def combine(a: int, b: int) -> int:
    return (a + b) % 1000003


def build_workflow(layers: int, width: int) -> Workflow:
    seed_t, comb_t = task(seed), task(combine)
    with Workflow("layered") as wf:
        prev = [seed_t.with_options(name=f"n0-{i}")(i) for i in range(width)]
        for layer in range(1, layers):
            prev = [comb_t.with_options(name=f"n{layer}-{i}")(prev[i], prev[(i + 1) % width]) for i in range(width)]
    return wf


def run_delayed(client, layers: int, width: int) -> list[int]:
    prev = [delayed(seed, pure=False)(i) for i in range(width)]
    for _ in range(1, layers):
        prev = [delayed(combine, pure=False)(prev[i], prev[(i + 1) % width]) for i in range(width)]
    futures = client.compute(prev)
    return client.gather(futures)


def run_raw_graph(client, layers: int, width: int) -> list[int]:
    """The minimum Dask cost: the same DAG as a low-level task graph, one ``client.get``."""
    from dask._task_spec import Task, TaskRef

    dsk = {}
    prev = []
    for i in range(width):
        dsk[f"raw-0-{i}"] = Task(f"raw-0-{i}", seed, i)
        prev.append(f"raw-0-{i}")
    for layer in range(1, layers):
        cur = []
        for i in range(width):
            key = f"raw-{layer}-{i}"
            dsk[key] = Task(key, combine, TaskRef(prev[i]), TaskRef(prev[(i + 1) % width]))
            cur.append(key)
        prev = cur
    return client.get(dsk, prev)


def run_submit(client, layers: int, width: int) -> list[int]:
    prev = [client.submit(seed, i, pure=False) for i in range(width)]
    for _ in range(1, layers):
        prev = [client.submit(combine, prev[i], prev[(i + 1) % width], pure=False) for i in range(width)]
    return client.gather(prev)


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    n = args.layers * args.width
    home = tempfile.mkdtemp(prefix="caelum-bench-")
    with dask.config.set({"caelum.home": home, "caelum.embedded.n-workers": 2}):
        client = connect()
        try:
            client.wait_for_workers(2)
            wf = build_workflow(args.layers, args.width)
            # warm up the cluster (imports, connections) once, outside the timings
            run_delayed(client, 2, 10)

            t_delayed, out_d = best(lambda: run_delayed(client, args.layers, args.width), args.repeat)
            t_submit, out_s = best(lambda: run_submit(client, args.layers, args.width), args.repeat)
            t_raw, out_r = best(lambda: run_raw_graph(client, args.layers, args.width), args.repeat)
            cold = []
            for i in range(args.repeat):
                cache = os.path.join(home, f"cache-{i}")
                start = time.perf_counter()
                result = run(wf, client=client, cache_url=cache)
                cold.append(time.perf_counter() - start)
                assert result.ok and result.computed == n, result.to_dict(results=False)
            t_cold = min(cold)
            t_warm, warm = best(lambda: run(wf, client=client, cache_url=cache), args.repeat)
            assert warm.ok and warm.cached == n and warm.computed == 0
            out_w = [result.results[f"n{args.layers - 1}-{i}"] for i in range(args.width)]
            assert out_w == out_d == out_s == list(out_r), "the four ways disagree"
        finally:
            client.close()
    print(f"layered DAG: {args.layers} layers x {args.width} = {n} tasks, 2 workers x 1 thread, best of {args.repeat}")
    print(f"  dask.delayed          {t_delayed:8.2f} s   1.00x")
    print(f"  submit per node       {t_submit:8.2f} s   {t_submit / t_delayed:.2f}x")
    print(f"  raw graph client.get  {t_raw:8.2f} s   {t_raw / t_delayed:.2f}x  (workflow cold = {t_cold / t_raw:.2f}x this)")
    print(f"  workflow cold         {t_cold:8.2f} s   {t_cold / t_delayed:.2f}x  (goal <= 1.3x)")
    print(f"  workflow warm rerun   {t_warm:8.2f} s   {t_warm / t_cold:.3f}x of cold  (goal <= 0.1x)")


if __name__ == "__main__":
    main()

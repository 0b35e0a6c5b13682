"""Recovery and scale of a caelum *analysis* run: scheduler memory, and a worker lost mid-run.

The analysis variant of ``benchmarks/recovery.py`` (same cluster, imported from there: a real
`caelum scheduler` and 2 `caelum worker` subprocesses on 127.0.0.1, worker-ttl 2 s, so the
scheduler's RSS can be sampled with psutil). Run from the repository root (several minutes on
2 cores for 20,000 files)::

    PYTHONPATH=$PWD python benchmarks/recovery_analysis.py                 # 20,000 files, baseline 2,000
    PYTHONPATH=$PWD python benchmarks/recovery_analysis.py --files 10000   # quicker

A synthetic tree of N small Python files (packages of 100 modules; each file a few imports,
functions with branches/loops, a class or two with methods; seeded, so the same tree every
time) is generated in a temporary folder, and :func:`caelum_dask.analysis.engine.analyze`
(default analyzers, no cache) runs on it:

1. Scheduler memory: idle RSS (after the workers joined and a 50-file warm-up analysis, so
   first-use imports/allocations are not counted as per-file cost) and peak RSS (sampled every 50 ms)
   of a fresh scheduler analysing N files, per file above idle and wall time, against a fresh
   scheduler analysing a baseline tree of N/10 files (the ratio shows how memory scales).
2. Recovery: on the same N-file cluster, a clean run is timed from the moment half the files
   are done to completion; then a second run in which one worker gets ``kill -9`` at that same
   moment (from the progress callback), timed from the kill to completion. The killed worker's
   batches start over on the survivor, which then does the rest alone, so the fair expectation
   is about 2x the clean remainder (one worker instead of two) plus the lost batches. The
   files, functions and imports tables of both runs must be identical.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DASK_CAELUM__HOME", tempfile.mkdtemp(prefix="caelum-bench-home-"))

import psutil  # noqa: E402

import caelum_dask  # noqa: E402
from caelum_dask.analysis.engine import AnalysisResult, analyze  # noqa: E402
from caelum_dask.progress import ProgressEvent  # noqa: E402
from recovery import Cluster, PeakRSS  # noqa: E402

WORDS = ["load", "save", "parse", "render", "merge", "split", "count", "check", "build", "fetch",
         "score", "clean", "index", "route", "order", "price", "user", "item", "batch", "event"]


def _function(rng: random.Random, name: str, indent: str, method: bool) -> list[str]:
    args = (["self"] if method else []) + [f"{rng.choice(WORDS)}_{i}" for i in range(rng.randint(0, 3))]
    body = [f"{indent}def {name}({', '.join(args)}):", f'{indent}    """{name.replace("_", " ").capitalize()}."""',
            f"{indent}    total = 0"]
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(["if", "for", "while", "try", "plain"])
        if kind == "if":
            body += [f"{indent}    if total > {rng.randint(0, 99)}:", f"{indent}        total -= {i + 1}",
                     f"{indent}    elif total == {i}:", f"{indent}        total += 1"]
        elif kind == "for":
            body += [f"{indent}    for n in range({rng.randint(2, 20)}):",
                     f"{indent}        if n % {rng.randint(2, 5)}:", f"{indent}            total += n"]
        elif kind == "while":
            body += [f"{indent}    while total < {rng.randint(5, 50)}:", f"{indent}        total += {i + 2}"]
        elif kind == "try":
            body += [f"{indent}    try:", f"{indent}        total = int(str(total)) + {i}",
                     f"{indent}    except ValueError:", f"{indent}        total = 0"]
        else:
            body += [f"{indent}    total = total * {rng.randint(2, 9)} + len(str({args[-1] if args else 'total'}))"]
    body.append(f"{indent}    return total")
    return body


def make_tree(root: Path, n_files: int, seed: int = 7) -> int:
    """Write ``n_files`` modules in packages of 100 under ``root``; return the number of lines."""
    rng = random.Random(seed)
    lines_total = 0
    for i in range(n_files):
        pkg, mod = divmod(i, 100)
        folder = root / f"pkg{pkg:03d}"
        if mod == 0:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "__init__.py").write_text(f'"""Package {pkg}."""\n')
        lines = [f'"""Module {mod} of package {pkg}: synthetic benchmark code."""', "",
                 "from __future__ import annotations", "", "import os", f"import {rng.choice(['json', 're', 'math'])}"]
        if mod:
            lines.append(f"from pkg{pkg:03d} import mod{rng.randrange(mod):03d}")
        if pkg:
            lines.append(f"from pkg{rng.randrange(pkg):03d}.mod{rng.randrange(100):03d} import *  # noqa")
        lines.append("")
        for f in range(rng.randint(1, 3)):
            lines += ["", *_function(rng, f"{rng.choice(WORDS)}_{rng.choice(WORDS)}_{f}", "", False)]
        for c in range(rng.randint(0, 2)):
            lines += ["", "", f"class {rng.choice(WORDS).capitalize()}{c}:", f'    """A {rng.choice(WORDS)} holder."""', ""]
            lines += [f"    limit = {rng.randint(1, 100)}", ""]
            for m in range(rng.randint(1, 3)):
                lines += [*_function(rng, f"{rng.choice(WORDS)}_{m}", "    ", True), ""]
        text = "\n".join(lines).rstrip() + "\n"
        (folder / f"mod{mod:03d}.py").write_text(text)
        lines_total += text.count("\n")
    return lines_total


def _tables(result: AnalysisResult) -> dict[str, Any]:
    """The tables two runs must agree on (``cached`` and each file's own ``seconds`` aside)."""
    files = result.tables["files"].drop(columns=["cached", "seconds"], errors="ignore")
    return {"files": files, "functions": result.tables["functions"], "imports": result.tables["imports"]}


def timed_analysis(client: Any, root: Path, kill: Any = None) -> tuple[AnalysisResult, float, float]:
    """Run analyze(); return (result, total seconds, seconds from half the files done to the end).
    ``kill`` (if given) is called once, at the half-way point."""
    half: list[float] = []
    last = [0.0]

    def progress(event: ProgressEvent) -> None:
        if event.total is None:  # a status line, nothing counted
            return
        last[0] = time.monotonic()
        if not half and event.done * 2 >= event.total:
            half.append(time.monotonic())
            if kill:
                kill()

    start = time.monotonic()
    result = analyze(root, client=client, use_cache=False, progress=progress)
    end = time.monotonic()
    result.summary["assembly_s"] = end - last[0]  # client side: tables + import graph, after the last batch
    return result, end - start, end - half[0]


def run_size(root: Path, n_files: int, recovery: bool, warmup: Path) -> dict[str, Any]:
    """Memory figures of a fresh cluster analysing ``root``; with ``recovery`` the kill run too."""
    cluster = Cluster()
    out: dict[str, Any] = {"files": n_files}
    try:
        cluster.start(["a1", "a2"])
        with caelum_dask.connect(cluster.address) as client:
            client.wait_for_workers(2, timeout=90)
            pid = cluster.procs["scheduler"].pid
            out["cold"] = psutil.Process(pid).memory_info().rss
            analyze(warmup, client=client, use_cache=False)  # imports and first-use allocations done
            with PeakRSS(pid) as rss:
                clean, out["seconds"], out["clean_tail"] = timed_analysis(client, root)
            out.update(idle=rss.idle, peak=rss.peak, tasks=clean.stats["tasks"],
                       functions=len(clean.tables["functions"]), errors=len(clean.tables["errors"]),
                       clean_assembly=clean.summary["assembly_s"])
            assert clean.stats["files"] == n_files + (n_files + 99) // 100, clean.stats  # + __init__.py
            if not recovery:
                return out
            # the half-way timestamp is taken just before the kill: the tail is kill -> end
            faulty, out["kill_seconds"], out["kill_tail"] = timed_analysis(
                client, root, lambda: cluster.signal("a1", signal.SIGKILL))
            assert cluster.procs["a1"].wait(30) is not None
            out["kill_assembly"] = faulty.summary["assembly_s"]
            a, b = _tables(clean), _tables(faulty)
            out["identical"] = {name: a[name].equals(b[name]) for name in a}
            out["task_errors"] = int((faulty.tables["errors"]["stage"] == "task").sum()) if len(faulty.tables["errors"]) else 0
            return out
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000, help="files of the big tree (baseline: a tenth)")
    args = parser.parse_args()
    mib = 1024**2
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} UTC, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="caelum-bench-tree-"))
    try:
        rows = []
        warmup = work / "warmup"
        make_tree(warmup, 50, seed=1)
        for n, recovery in ((args.files // 10, False), (args.files, True)):
            root = work / f"tree{n}"
            t0 = time.monotonic()
            lines = make_tree(root, n)
            print(f"# tree of {n} files, {lines} lines, generated in {time.monotonic() - t0:.1f} s", flush=True)
            r = run_size(root, n, recovery, warmup)
            rows.append(r)
            print(f"{n:>7} files ({r['tasks']} tasks, {r['functions']} functions, {r['errors']} error rows): "
                  f"scheduler fresh {r['cold'] / mib:.0f} MiB, idle after a 50-file warm-up {r['idle'] / mib:.0f} MiB, peak {r['peak'] / mib:.0f} MiB, "
                  f"{(r['peak'] - r['idle']) / n / 1024:.2f} KiB/file above idle, peak/idle {r['peak'] / r['idle']:.2f}x, "
                  f"wall {r['seconds']:.1f} s ({n / r['seconds']:.0f} files/s, {lines / r['seconds']:.0f} lines/s)",
                  flush=True)
        small, big = rows
        print(f"10x the files -> {(big['peak'] - big['idle']) / max(1, small['peak'] - small['idle']):.1f}x the "
              f"scheduler memory above idle, {big['seconds'] / small['seconds']:.1f}x the wall time")
        print(f"recovery ({args.files} files): clean run, half done -> end {big['clean_tail']:.1f} s "
              f"(whole run {big['seconds']:.1f} s); kill -9 one of 2 workers at half done -> end "
              f"{big['kill_tail']:.1f} s (whole run {big['kill_seconds']:.1f} s); "
              f"ratio {big['kill_tail'] / big['clean_tail']:.2f}x (1 worker left: ~2x expected on idle cores); "
              f"of which client-side assembly after the last batch {big['clean_assembly']:.1f} s / {big['kill_assembly']:.1f} s; "
              f"cluster part only: {(big['kill_tail'] - big['kill_assembly']) / (big['clean_tail'] - big['clean_assembly']):.2f}x")
        print(f"results identical to the clean run: {big['identical']}; task-failure error rows: {big['task_errors']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

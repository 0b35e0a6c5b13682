"""Benchmark: distributed analysis of the running interpreter's standard library.

    PYTHONPATH=. python benchmarks/analysis.py --limit 300          # a few minutes on 2 cores
    PYTHONPATH=. python benchmarks/analysis.py --limit 0             # the whole stdlib (long)

Measured in one process, same files for every figure (a deterministic every-k-th sample of
the stdlib's .py files when --limit is given, copied to a temporary folder):

* cold run on a 1-worker vs a 2-worker LocalCluster (fresh cache each): parallel efficiency
  = T1 / (2 * T2)  (goal >= 85 %);
* warm re-run (unchanged tree, cache hit for every file) vs the cold 2-worker run (goal >= 20x);
* radon cc + raw + mi run serially in this process on the same files vs caelum with 2 workers
  (radon's raw pass is quadratic on long statements: files over --radon-timeout seconds are
  counted and cut off, which flatters radon);
* lines/s per core of the cold 2-worker run, and lines per worker CPU-second (which a shared,
  busy machine distorts much less than wall-clock figures).

Clusters are started and warmed up (imports done) before timing; only analyze() is timed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import dask.config
from distributed import Client, LocalCluster

from caelum_dask.analysis import analyze


def stdlib_files(limit: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    if limit and limit < len(files):
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def copy_tree(files: list[Path], dest: Path) -> int:
    root = Path(sysconfig.get_paths()["stdlib"])
    lines = 0
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = f.read_bytes()
        target.write_bytes(data)
        lines += data.count(b"\n")
    return lines


def _worker_cpu(client: Client) -> float:
    """CPU seconds used so far by all worker processes (load-independent cost)."""
    import psutil

    return sum(client.run(lambda: sum(psutil.Process().cpu_times()[:2])).values())


def timed_run(client: Client, path: Path, cache: Path, batch_bytes: int | None) -> tuple[float, dict]:
    cpu = _worker_cpu(client)
    start = time.perf_counter()
    result = analyze(path, client=client, cache_path=cache, batch_bytes=batch_bytes, include_all=True)
    elapsed = time.perf_counter() - start
    return elapsed, {**result.stats, "worker_cpu": _worker_cpu(client) - cpu}


def radon_serial(files: list[Path], per_file_timeout: int) -> tuple[float, int]:
    from radon.complexity import cc_visit
    from radon.metrics import mi_visit
    from radon.raw import analyze as raw

    class Timeout(Exception):
        pass

    def alarm(*_: object) -> None:
        raise Timeout

    old = signal.signal(signal.SIGALRM, alarm)
    timeouts = 0
    start = time.perf_counter()
    for f in files:
        try:
            src = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        signal.alarm(per_file_timeout)
        try:
            cc_visit(src)
            raw(src)
            mi_visit(src, True)
        except Timeout:
            timeouts += 1
        except (SyntaxError, ValueError):
            pass
        finally:
            signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    return time.perf_counter() - start, timeouts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="number of stdlib files (0: all)")
    parser.add_argument("--batch-bytes", type=int, default=None, help="target bytes per task")
    parser.add_argument("--radon-timeout", type=int, default=10, help="seconds per file for radon")
    args = parser.parse_args()

    files = stdlib_files(args.limit)
    work = Path(tempfile.mkdtemp(prefix="caelum-bench-"))
    try:
        lines = copy_tree(files, work / "src")
        warm_dir = work / "warmup"
        warm_dir.mkdir()
        (warm_dir / "w.py").write_text("def f(x):\n    return x and 1\n")
        print(f"files: {len(files)}  lines: {lines}  python {sys.version.split()[0]}", flush=True)
        times: dict[object, float] = {}
        cpu: dict[int, float] = {}
        with dask.config.set({"caelum.analysis.file-time-limit": 120}):
            for n in (1, 2):
                with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, Client(cluster) as client:
                    analyze(warm_dir, client=client, cache_path=work / f"warm{n}.sqlite")
                    times[n], stats = timed_run(client, work / "src", work / f"cache{n}.sqlite", args.batch_bytes)
                    cpu[n] = stats["worker_cpu"]
                    print(f"cold, {n} worker(s): {times[n]:.2f} s  ({stats['tasks']} tasks, "
                          f"{cpu[n]:.2f} worker CPU-s)", flush=True)
                    if n == 2:
                        times["warm"], wstats = timed_run(client, work / "src", work / "cache2.sqlite",
                                                          args.batch_bytes)
                        assert wstats["analysed"] == 0, wstats
                        print(f"warm, 2 workers: {times['warm']:.3f} s  (cached {wstats['cached']})", flush=True)
        radon_t, radon_timeouts = radon_serial(files, args.radon_timeout)
        print(f"radon cc+raw+mi serial: {radon_t:.2f} s  ({radon_timeouts} files cut at {args.radon_timeout} s)")
        print("---")
        print(f"parallel efficiency 1->2 workers: {times[1] / (2 * times[2]) * 100:.0f} %  (goal >= 85 %)")
        print(f"warm vs cold (2 workers): {times[2] / times['warm']:.1f}x faster  (goal >= 20x)")
        print(f"caelum 2 workers vs radon serial: {radon_t / times[2]:.2f}x")
        print(f"lines/s per core (cold, 2 workers): {lines / (times[2] * 2):.0f}")
        print(f"lines/s (cold, 1 worker): {lines / times[1]:.0f}")
        print(f"lines per worker CPU-second (load-independent): 1 worker {lines / cpu[1]:.0f}, "
              f"2 workers {lines / cpu[2]:.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: analysis of the running interpreter's standard library, cold and warm, against
the single-process pipeline and radon, plus a small tree through the real CLI.

    PYTHONPATH=. python benchmarks/analysis.py --limit 300          # a few minutes on 2 cores
    PYTHONPATH=. python benchmarks/analysis.py --limit 0             # the whole stdlib (long)

Measured in one process, same files for every figure (a deterministic every-k-th sample of
the stdlib's .py files when --limit is given, copied to a temporary folder), each figure with
the 1-minute load average when it was taken (the box is shared: compare only ratios of one run):

* single-process pipeline: every file through the built-in analyzers in this process, no
  Dask (also with ``cc`` alone). The box's ideal for 2 workers is that time / 1.6 (two
  CPU-bound processes get 1.6x here, not 2x); goal: cold 2-worker run >= 85 % of the ideal;
* cold run on caelum's embedded 2-worker cluster (fresh cache and home), and the warm re-run of the unchanged
  tree (goal: >= 25x faster than cold);
* ``--analyzer cc`` cold on the same 2 workers vs ``radon cc`` (the real command, serial, output
  to /dev/null) on the same files (goal: <= 0.6x radon's time);
* a small tree (--small files) through the real ``caelum analyze --json`` (embedded 2-worker
  cluster): cold, then warm (median of 3) against ``caelum --help`` (goal: warm <= 2x help);
* ``--only cc``: just the cc comparison (single-process cc pipeline, ``radon cc``, the cold cc
  run on a freshly started 2-worker cluster) with its CPU figures: worker CPU-s, client CPU-s
  (this process: the client and the embedded scheduler), task count, cluster start-up time;
* optionally (--one-worker) the 1-worker cold run: parallel efficiency T1 / (2 * T2), and
  (--radon-all) radon cc + raw + mi serially in this process (radon's raw pass is quadratic on
  long statements: files over --radon-timeout seconds are cut off, which flatters radon).

Clusters are started and warmed up (imports done) before timing; only analyze() is timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import dask.config
from distributed import Client

from caelum_dask import connect
from caelum_dask.analysis import analyze
from caelum_dask.analysis.discovery import discover
from caelum_dask.analysis.loader import make_spec
from caelum_dask.analysis.tasks import analyze_batch

REPO = Path(__file__).resolve().parent.parent
TWO_PROCESS_SPEEDUP = 1.6  # what two CPU-bound processes get on this box (issue #17)


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


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


def timed_run(client: Client, path: Path, cache: Path, batch_bytes: int | None,
              analyzers: list[str] | None = None) -> tuple[float, dict]:
    cpu, own = _worker_cpu(client), time.process_time()
    last = [0.0]  # when the last file's rows arrived: what follows is the client's own work

    def progress(event: object) -> None:
        if getattr(event, "total", None) and event.done == event.total:  # type: ignore[attr-defined]
            last[0] = time.perf_counter()

    start = time.perf_counter()
    result = analyze(path, client=client, cache_path=cache, batch_bytes=batch_bytes, include_all=True,
                     analyzers=analyzers, progress=progress)
    end = time.perf_counter()
    own = time.process_time() - own
    return end - start, {**result.stats, "worker_cpu": _worker_cpu(client) - cpu, "client_cpu": own,
                         "tail": end - (last[0] or end)}


def single_process(path: Path, analyzers: list[str] | None) -> tuple[float, float]:
    """The per-file pipeline over every file in this process: what one worker would do, no Dask.
    Wall seconds and CPU seconds (the latter hardly moved by the neighbours' load)."""
    files, _ = discover(path, include_all=True)
    spec = make_spec(analyzers)
    items = [(f.rel, f.module, f.is_package, Path(f.abspath).read_bytes()) for f in files]
    start, cpu = time.perf_counter(), time.process_time()
    analyze_batch("bench", items, spec, 120.0)
    return time.perf_counter() - start, time.process_time() - cpu


def radon_cc_command(path: Path) -> float:
    """``radon cc PATH`` (the real command, serial), its output thrown away."""
    radon = Path(sys.executable).with_name("radon")
    command = [str(radon)] if radon.exists() else [sys.executable, "-m", "radon"]
    start = time.perf_counter()
    subprocess.run([*command, "cc", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


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


def cli_seconds(*args: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "caelum_dask", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def small_tree_cli(small: Path, home: Path) -> dict[str, float]:
    """A small project through the real CLI: cold (cluster start-up included), warm, --help."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_CAELUM__HOME": str(home),
           "DASK_CAELUM__EMBEDDED__N_WORKERS": "2"}
    env.pop("CAELUM_SCHEDULER", None)
    cold = cli_seconds("analyze", str(small), "--json", env=env)
    warm = statistics.median(cli_seconds("analyze", str(small), "--json", env=env) for _ in range(3))
    helps = statistics.median(cli_seconds("--help", env=env) for _ in range(3))
    return {"cold": cold, "warm": warm, "help": helps}


def cc_only(work: Path, files: list[Path], lines: int, batch_bytes: int | None) -> None:
    """``--only cc``: the cc comparison alone, with the CPU figures that find where time goes."""
    print(f"files: {len(files)}  lines: {lines}  python {sys.version.split()[0]}  {load()}", flush=True)
    single, single_cpu = single_process(work / "src", ["cc"])
    print(f"single-process pipeline, cc only: {single:.2f} s, {single_cpu:.2f} CPU-s  ({load()})", flush=True)
    radon = radon_cc_command(work / "src")
    print(f"radon cc (command, serial): {radon:.2f} s  ({load()})", flush=True)
    warm_dir = work / "warmup"
    settings = {"caelum.analysis.file-time-limit": 120, "caelum.home": str(work / "home-api"),
                "caelum.scheduler-address": None, "caelum.embedded.n-workers": 2}
    with dask.config.set(settings):
        start = time.perf_counter()
        with connect() as client:
            started = time.perf_counter() - start
            analyze(warm_dir, client=client, cache_path=work / "warm.sqlite", analyzers=["raw"])
            warmed = time.perf_counter() - start - started
            seconds, stats = timed_run(client, work / "src", work / "cache-cc.sqlite", batch_bytes, ["cc"])
    print(f"cluster start {started:.2f} s, warm-up run {warmed:.2f} s (not timed below)", flush=True)
    print(f"--analyzer cc cold, 2 workers: {seconds:.2f} s  ({stats['tasks']} tasks, {stats['worker_cpu']:.2f} "
          f"worker CPU-s, {stats['client_cpu']:.2f} client CPU-s, {stats['tail']:.2f} s after the last batch, "
          f"{load()})", flush=True)
    print("---")
    print(f"--analyzer cc on 2 workers / radon cc: {seconds / radon:.2f}x  (goal <= 0.6x)")
    print(f"single-process cc pipeline / radon cc: {single / radon:.2f}x")
    print(f"worker CPU-s / single-process CPU-s: {stats['worker_cpu'] / single_cpu:.2f}; client CPU-s / "
          f"single-process CPU-s: {stats['client_cpu'] / single_cpu:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300, help="number of stdlib files (0: all)")
    parser.add_argument("--small", type=int, default=150, help="files of the small tree (CLI figures)")
    parser.add_argument("--batch-bytes", type=int, default=None, help="target bytes per task")
    parser.add_argument("--only", choices=["cc"], default=None,
                        help="only this comparison (cc: --analyzer cc vs radon cc, with CPU figures)")
    parser.add_argument("--one-worker", action="store_true", help="also the cold 1-worker run")
    parser.add_argument("--radon-all", action="store_true", help="also radon cc+raw+mi in this process")
    parser.add_argument("--radon-timeout", type=int, default=10, help="seconds per file for --radon-all")
    args = parser.parse_args()

    files = stdlib_files(args.limit)
    work = Path(tempfile.mkdtemp(prefix="caelum-bench-"))
    try:
        lines = copy_tree(files, work / "src")
        warm_dir = work / "warmup"
        warm_dir.mkdir()
        (warm_dir / "w.py").write_text("def f(x):\n    return x and 1\n")
        if args.only == "cc":
            cc_only(work, files, lines, args.batch_bytes)
            return 0
        copy_tree(stdlib_files(args.small), work / "small")
        print(f"files: {len(files)}  lines: {lines}  python {sys.version.split()[0]}  {load()}", flush=True)
        t: dict[str, float] = {}
        t["single"], t["single_cpu"] = single_process(work / "src", None)
        print(f"single-process pipeline, all built-ins: {t['single']:.2f} s, {t['single_cpu']:.2f} CPU-s  "
              f"({load()})", flush=True)
        t["single_cc"], _ = single_process(work / "src", ["cc"])
        print(f"single-process pipeline, cc only: {t['single_cc']:.2f} s  ({load()})", flush=True)
        t["radon_cc"] = radon_cc_command(work / "src")
        print(f"radon cc (command, serial): {t['radon_cc']:.2f} s  ({load()})", flush=True)
        # caelum's own embedded cluster, as `caelum analyze` starts it: its worker preload
        # (profile interval), its scheduler plugins (learned batch sizes), a fresh home.
        settings = {"caelum.analysis.file-time-limit": 120, "caelum.home": str(work / "home-api"),
                    "caelum.scheduler-address": None}
        with dask.config.set(settings):
            for n in (1, 2) if args.one_worker else (2,):
                with dask.config.set({"caelum.embedded.n-workers": n}), connect() as client:
                    # imports done on the workers; another analyzer set, so that no seconds-per-byte
                    # figure is learned from this one tiny file for the timed runs
                    analyze(warm_dir, client=client, cache_path=work / f"warm{n}.sqlite", analyzers=["raw"])
                    t[f"cold{n}"], stats = timed_run(client, work / "src", work / f"cache{n}.sqlite",
                                                     args.batch_bytes)
                    t[f"cold{n}_cpu"] = stats["worker_cpu"]
                    print(f"cold, {n} worker(s): {t[f'cold{n}']:.2f} s  ({stats['tasks']} tasks, "
                          f"{stats['worker_cpu']:.2f} worker CPU-s, {stats['tail']:.2f} s after the last "
                          f"batch, {load()})", flush=True)
                    if n != 2:
                        continue
                    t["warm"], wstats = timed_run(client, work / "src", work / "cache2.sqlite", args.batch_bytes)
                    assert wstats["analysed"] == 0, wstats
                    print(f"warm, 2 workers: {t['warm']:.3f} s  (cached {wstats['cached']}, {load()})", flush=True)
                    t["cc2"], cstats = timed_run(client, work / "src", work / "cache-cc.sqlite", args.batch_bytes,
                                                 ["cc"])
                    print(f"--analyzer cc cold, 2 workers: {t['cc2']:.2f} s  ({cstats['tasks']} tasks, "
                          f"{load()})", flush=True)
        small = small_tree_cli(work / "small", work / "home")
        print(f"small tree ({args.small} files) CLI: cold {small['cold']:.2f} s, warm {small['warm']:.3f} s, "
              f"caelum --help {small['help']:.3f} s  ({load()})", flush=True)
        if args.radon_all:
            t["radon_all"], cut = radon_serial(files, args.radon_timeout)
            print(f"radon cc+raw+mi serial: {t['radon_all']:.2f} s  ({cut} files cut at {args.radon_timeout} s)")
        ideal = t["single"] / TWO_PROCESS_SPEEDUP
        print("---")
        print(f"cold 2 workers vs the box's ideal (single-process / {TWO_PROCESS_SPEEDUP}): "
              f"{ideal / t['cold2'] * 100:.0f} %  (ideal {ideal:.2f} s; goal >= 85 %)")
        print(f"worker CPU-s of the cold 2-worker run / single-process CPU-s: "
              f"{t['cold2_cpu'] / t['single_cpu']:.2f}  (the cost of distributing, load-independent)")
        print(f"warm vs cold (2 workers): {t['cold2'] / t['warm']:.1f}x faster  (goal >= 25x)")
        print(f"--analyzer cc on 2 workers / radon cc: {t['cc2'] / t['radon_cc']:.2f}x  (goal <= 0.6x)")
        print(f"single-process cc pipeline / radon cc: {t['single_cc'] / t['radon_cc']:.2f}x")
        print(f"small tree warm CLI / caelum --help: {small['warm'] / small['help']:.1f}x  (goal <= 2x)")
        if args.one_worker:
            print(f"parallel efficiency 1->2 workers: {t['cold1'] / (2 * t['cold2']) * 100:.0f} %")
        print(f"lines/s (cold, 2 workers): {lines / t['cold2']:.0f}; single process: {lines / t['single']:.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

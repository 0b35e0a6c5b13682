"""The owner comes back while a workload runs on their desktop: how fast is the machine theirs again?

Run (from the repository root; about a minute per repeat on 2 cores)::

    PYTHONPATH=$PWD python benchmarks/desktop_owner.py                 # 3 repeats, defaults below
    PYTHONPATH=$PWD python benchmarks/desktop_owner.py --repeats 1 --tasks 40

Real processes on loopback: a `caelum scheduler`, a plain caelum worker on 127.0.0.2 (another
"machine" that stays) and `caelum worker --policy desktop` on 127.0.0.1, 2 threads each. The
workload is N tasks of D seconds (sleeping, so the box's other load barely moves it), each
returning a 100 kB result that the client keeps; every computation leaves a line in a log file.

Per repeat:

1. baseline: the workload with the owner away (both machines work);
2. the same workload; when a quarter of it is done "the owner" returns: a real CPU-burning
   process (``python -c "while True: pass"``). The desktop worker counts only processes whose
   command line carries this run's marker (``--owner-match``), so the shared box's other load
   never looks like the owner; thresholds are flags: active after 1 s above 0.05 cores,
   sampled every 250 ms, grace 10 s, away after 3 s.

Figures (from the owner's start, scheduler event times, same clock):
* ``closed``: the machine shows owner-active — the moment the scheduler stops giving it tasks;
* ``last start``: the last task that started on it (must be before ``closed``);
* ``gone``: the worker has left the cluster, its results moved (Dask's retire_workers);
* ratio: workload time with the owner against the baseline (the machine's share of the work
  moves to the other one, so > 1 is expected);
* lost / twice: results missing or wrong, and tasks computed more than once (both must be 0);
* ``rejoin``: owner's process killed -> the desktop worker is back (away-after 3 s + start).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from distributed import Client, as_completed, get_worker

ENV = {"PYTHONUNBUFFERED": "1"}


def work(name: str, log: str, seconds: float) -> bytes:
    """One task of the workload: a line per computation, D seconds, a 100 kB result."""
    address = get_worker().address
    with open(log, "a") as out:
        out.write(f"{time.time():.4f} {name} {address}\n")
    time.sleep(seconds)
    return name.encode().ljust(100_000, b".")


class Bench:
    """The cluster's processes (own sessions, all stopped at the end)."""

    def __init__(self, marker: str) -> None:
        self.logs = Path(tempfile.mkdtemp(prefix="caelum-desktop-bench-"))
        self.marker = marker
        self.procs: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=open(self.logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **ENV})
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        caelum = [sys.executable, "-m", "caelum_dask"]
        self.spawn("scheduler", [*caelum, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--dashboard-address", "127.0.0.1:0"])
        deadline = time.monotonic() + 120
        while not self.address and time.monotonic() < deadline:
            found = re.search(r"Scheduler at:\s+(\S+)", (self.logs / "scheduler.log").read_text())
            self.address = found.group(1) if found else ""
            time.sleep(0.1)
        self.spawn("keeper", [*caelum, "worker", self.address, "--name", "keeper", "--nthreads", "2",
                              "--host", "127.0.0.2", "--dashboard-address", "127.0.0.2:0"])
        self.spawn("desk", [*caelum, "worker", self.address, "--name", "desk", "--nthreads", "2",
                            "--policy", "desktop", "--owner-cpu", "0.05", "--active-after", "1s",
                            "--away-after", "3s", "--grace", "10s", "--sample-interval", "250ms",
                            "--owner-match", self.marker, "--host", "127.0.0.1",
                            "--dashboard-address", "127.0.0.1:0"])

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 15)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


def desk_address(client: Client, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "desk"]
        if found:
            return found[0]
        time.sleep(0.1)
    raise RuntimeError("the desktop worker did not (re)join")


def run_workload(client: Client, tag: str, args: argparse.Namespace, log: Path,
                 on_quarter: object = None) -> tuple[float, list]:
    started = time.time()
    futures = [client.submit(work, f"{tag}-{i}", str(log), args.seconds, key=f"{tag}-{i}", pure=False)
               for i in range(args.tasks)]
    for done, _ in enumerate(as_completed(futures), start=1):
        if done == args.tasks // 4 and callable(on_quarter):
            on_quarter()
    return time.time() - started, futures


def event_time(client: Client, event: str, after: float, **match: str) -> float | None:
    for stamp, message in client.get_events("caelum.machines"):
        if stamp >= after and message.get("event") == event and all(message.get(k) == v for k, v in match.items()):
            return stamp
    return None


def one_repeat(client: Client, bench: Bench, args: argparse.Namespace, rep: int, log: Path) -> dict[str, float]:
    desk = desk_address(client)
    baseline, futures = run_workload(client, f"base{rep}", args, log)
    client.cancel(futures)
    owner: dict[str, object] = {}

    def owner_returns() -> None:
        owner["t0"] = time.time()
        owner["proc"] = subprocess.Popen([sys.executable, "-c", f"while True: pass  # {bench.marker}"])

    with_owner, futures = run_workload(client, f"owner{rep}", args, log, on_quarter=owner_returns)
    t0 = float(owner["t0"])  # type: ignore[arg-type]
    deadline = time.monotonic() + 120
    while (gone := event_time(client, "worker-left", t0, worker=desk)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    closed = event_time(client, "machine-owner-active", t0)
    results = client.gather(futures)
    lost = sum(1 for i, r in enumerate(results) if not r.startswith(f"owner{rep}-{i}".encode()))
    rows = [line.split() for line in log.read_text().splitlines()]
    names = [name for _, name, _ in rows if name.startswith(f"owner{rep}-")]
    twice = len(names) - len(set(names))
    starts_on_desk = [float(stamp) for stamp, name, addr in rows if name.startswith(f"owner{rep}-") and addr == desk]
    client.cancel(futures)
    proc = owner["proc"]
    killed = time.time()
    proc.kill()  # type: ignore[attr-defined]
    proc.wait()  # type: ignore[attr-defined]
    desk_address(client)
    rejoin = time.time() - killed
    return {
        "baseline": baseline, "with_owner": with_owner, "ratio": with_owner / baseline,
        "closed": (closed - t0) if closed else float("nan"),
        "last_start": (max(starts_on_desk) - t0) if starts_on_desk else float("nan"),
        "gone": (gone - t0) if gone else float("nan"), "lost": lost, "twice": twice, "rejoin": rejoin,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=80)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = Bench(f"caelum-bench-owner-{uuid.uuid4().hex[:12]}")
    log = bench.logs / "computed.log"
    bench.start()
    rows = []
    try:
        with Client(bench.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=180)
            for rep in range(args.repeats):
                row = one_repeat(client, bench, args, rep, log)
                rows.append(row)
                print(f"repeat {rep}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    finally:
        bench.stop()
    print(f"\n{args.tasks} tasks x {args.seconds}s, {len(rows)} repeats (median; logs in {bench.logs})")
    for key in ("baseline", "with_owner", "ratio", "closed", "last_start", "gone", "rejoin"):
        print(f"  {key:<11} {statistics.median(r[key] for r in rows):.2f}")
    print(f"  lost        {sum(r['lost'] for r in rows)}  (all repeats)")
    print(f"  twice       {sum(r['twice'] for r in rows)}  (all repeats)")


if __name__ == "__main__":
    main()

"""``run_tests``: a pytest suite sharded over the cluster, end to end.

snapshot -> collect (a Dask task on a worker) -> estimate from recorded durations -> LPT
shards -> one Dask task per shard (keys ``caelum-test-<run>-…``, longest first) -> re-run of
failures on another machine (flaky detection) -> merged JUnit XML, summary, durations file.
With ``platforms`` the whole pipeline runs once per platform, concurrently, each pinned to
that platform's workers.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, as_completed

from caelum_dask import events as ev
from caelum_dask.errors import CaelumError, InvalidInput, UnsatisfiableRequirement
from caelum_dask.testing import durations as durations_mod
from caelum_dask.testing import merge
from caelum_dask.testing.collect import run_collection
from caelum_dask.testing.partition import DIST_MODES, auto_shard_count, imbalance, partition
from caelum_dask.testing.shard import CANNOT_START, run_shard
from caelum_dask.testing.snapshot import build_snapshot, is_unpacked

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "flaky", "notrun")
Progress = Callable[[str], None]


class RunInterrupted(CaelumError):
    """The cluster could not run the suite at all (pytest's exit code 2: interrupted)."""

    exit_code = 2


@dataclass
class TestOptions:
    """Everything ``caelum test`` can be told (the CLI options, one to one)."""

    __test__ = False  # not a pytest test class, despite the name

    shards: int | str = "auto"
    dist: str = "load"
    platforms: str | Sequence[str] | None = None
    retry_failed: int = 1
    junit: str | None = None
    python: str | None = None
    pytest_args: list[str] = field(default_factory=list)
    timeout: float = 300.0
    env: dict[str, str] = field(default_factory=dict)
    flaky_fails: bool = False
    record_durations: bool = True

    def validate(self) -> None:
        if self.dist not in DIST_MODES:
            raise InvalidInput(f"unknown --dist {self.dist!r}; use one of {', '.join(DIST_MODES)}")
        if self.shards != "auto":
            try:
                self.shards = int(self.shards)
            except (TypeError, ValueError):
                raise InvalidInput(f"--shards must be 'auto' or a positive number (got {self.shards!r})") from None
            if self.shards < 1:
                raise InvalidInput(f"--shards must be 'auto' or a positive number (got {self.shards})")
        if self.retry_failed < 0:
            raise InvalidInput(f"--retry-failed must be 0 or more (got {self.retry_failed})")
        if self.timeout <= 0:
            raise InvalidInput(f"--timeout must be positive (got {self.timeout})")


def _online_workers(client: Client) -> list[dict[str, Any]]:
    """Every worker of every online machine, with its machine's id and platform."""
    from caelum_dask.cluster import machines

    rows = []
    for node in machines(client):
        if node.get("status") == "offline":
            continue
        for worker in node.get("workers", []):
            rows.append({**worker, "machine": node["id"], "hostname": node["hostname"],
                         "platform": node["platform"]})
    return rows


def _platform_list(requested: str | Sequence[str] | None, workers: list[dict[str, Any]]) -> list[str | None]:
    present = sorted({w["platform"] for w in workers})
    if requested is None:
        return [None]
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    if list(requested) == ["all"]:
        if not present:
            raise UnsatisfiableRequirement("--platforms all: the cluster has no online machines")
        return list(present)
    missing = [p for p in requested if p.lower() not in present]
    if missing:
        raise UnsatisfiableRequirement(
            f"--platforms {','.join(requested)}: no machine runs {', '.join(missing)} "
            f"(the cluster has: {', '.join(present) or 'no machines'}); use --platforms all")
    return [p.lower() for p in requested]


def _placement(platform: str | None, workers: list[dict[str, Any]]) -> dict[str, Any]:
    if platform is None:
        return {}
    return {"workers": [w["address"] for w in workers if w["platform"] == platform],
            "allow_other_workers": False}


def _lost(nodeids: Sequence[str], exc: BaseException, shard: str) -> dict[str, Any]:
    reason = f"shard {shard} lost: {type(exc).__name__}: {exc}".strip()
    return {"shard": shard, "worker": "", "machine": "", "duration": 0.0, "runs": [], "junit": [],
            "lost": True, "output_tail": "",
            "results": [{"nodeid": n, "outcome": "error", "duration": 0.0, "message": reason,
                         "longrepr": reason, "worker": "", "machine": "", "lost": True} for n in nodeids]}


class _PlatformRun:
    """The state of one platform's pass over the suite."""

    def __init__(self, platform: str | None, workers: list[dict[str, Any]]) -> None:
        self.platform = platform
        self.label = platform or "all"
        self.workers = [w for w in workers if platform is None or w["platform"] == platform]
        self.collection: dict[str, Any] = {}
        self.nodeids: list[str] = []
        self.shards: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.junit: list[str] = []
        self.lost = 0
        self.estimates: dict[str, float] = {}

    @property
    def slots(self) -> int:
        return max(1, sum(int(w.get("nthreads") or 1) for w in self.workers))


def run_tests(path: str | os.PathLike[str], options: TestOptions | None = None, *,
              client: Client | None = None, scheduler: str | None = None,
              progress: Progress | None = None) -> dict[str, Any]:
    """Run the pytest suite at ``path`` on the cluster; returns the JSON-able run summary.

    ``client`` (or ``scheduler``, or the usual connect() resolution) picks the cluster.
    The summary's ``exit_code`` has pytest's meaning: 0 all passed, 1 tests failed, 2
    interrupted (collection errors, lost shards), 4 usage error, 5 nothing collected.
    """
    options = options or TestOptions()
    options.validate()
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"{path}: no such project folder; give the folder that holds the tests")
    root = root.resolve()
    if options.junit:  # fail before running anything, not after
        junit_dir = Path(options.junit).expanduser().resolve().parent
        try:
            junit_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"--junit {options.junit}: cannot create {junit_dir} ({exc.strerror})") from None
        if not os.access(junit_dir, os.W_OK):
            raise InvalidInput(f"--junit {options.junit}: {junit_dir} is not writable")
    say = progress or (lambda _msg: None)
    own_client = client is None
    if client is None:
        from caelum_dask.cluster import connect

        client = connect(scheduler)
    try:
        return _run(root, options, client, say)
    finally:
        if own_client:
            client.close()


def _run(root: Path, options: TestOptions, client: Client, say: Progress) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:12]
    started = time.time()
    snap = build_snapshot(root)
    say(f"snapshot {snap.digest[:12]}: {snap.files} files, {snap.size / 1e6:.2f} MB")
    workers = _online_workers(client)
    if not workers:
        raise UnsatisfiableRequirement("the cluster has no online workers; start one with `caelum worker`")
    runs = [_PlatformRun(p, workers) for p in _platform_list(options.platforms, workers)]
    dataset = _ship_snapshot(client, snap, workers, run_id, say)
    try:
        return _run_shipped(root, options, client, say, run_id, started, snap, workers, runs, dataset)
    finally:
        client.unpublish_dataset(dataset)


def _ship_snapshot(client: Client, snap: Any, workers: list[dict[str, Any]], run_id: str, say: Progress) -> str:
    """Put one copy of the snapshot on each machine that has not unpacked it yet.

    The copies are published as a Dask dataset; a shard on a machine without the unpacked
    snapshot gathers it from there (the nearest copy), so a lost worker loses no snapshot
    while any machine still holds one.
    """
    has = client.run(is_unpacked, snap.digest)
    first_by_machine: dict[str, str] = {}
    covered = set()
    for worker in workers:
        first_by_machine.setdefault(worker["machine"], worker["address"])
        if has.get(worker["address"]):
            covered.add(worker["machine"])
    targets = [addr for machine, addr in first_by_machine.items() if machine not in covered]
    targets = targets or [next(iter(first_by_machine.values()))]
    [future] = client.scatter([snap.data], workers=targets, broadcast=True, hash=False)
    name = f"caelum-test-{run_id}-snapshot"
    client.publish_dataset(future, name=name)
    say(f"snapshot sent to {len(targets)} machine(s); {len(covered)} already had it unpacked")
    return name


def _run_shipped(root: Path, options: TestOptions, client: Client, say: Progress, run_id: str, started: float,
                 snap: Any, workers: list[dict[str, Any]], runs: list[_PlatformRun], dataset: str) -> dict[str, Any]:
    snapshot_ref = {"digest": snap.digest, "dataset": dataset}
    base = {"run_id": run_id, "snapshot": snapshot_ref, "pytest_args": list(options.pytest_args),
            "timeout": options.timeout, "env": dict(options.env)}

    # 1. collection, once per platform, on that platform's workers
    futures = {}
    for prun in runs:
        spec = {**base, "python": options.python, "platform": prun.platform}
        futures[prun.label] = client.submit(run_collection, spec, key=f"caelum-test-{run_id}-collect-{prun.label}",
                                            pure=False, **_placement(prun.platform, workers))
    for prun in runs:
        try:
            prun.collection = futures[prun.label].result()
        except Exception as exc:  # the task itself failed (lost workers, unreadable snapshot)
            raise RunInterrupted(f"collecting the tests failed on the cluster: {type(exc).__name__}: {exc}; "
                                 "check `caelum status` and the worker logs") from None
        prun.nodeids = list(prun.collection["nodeids"])
        if prun.collection["rc"] == CANNOT_START:
            raise InvalidInput(f"--python: {prun.collection['output']} (on {prun.collection['machine']}); "
                               "give an interpreter that exists on the workers")
        cached = " (cached)" if prun.collection.get("cached") else ""
        say(f"[{prun.label}] collected {len(prun.nodeids)} tests on {prun.collection['machine']}{cached}")
    if any(_collection_failed(p.collection) for p in runs):
        return _finish(root, options, client, run_id, started, snap, runs, say, collection_failed=True)

    # 2. partition by recorded durations
    known = durations_mod.load(root)
    total_shards = 0
    for prun in runs:
        prun.estimates = durations_mod.estimate(prun.nodeids, known)
        fraction = sum(1 for n in prun.nodeids if n in known) / max(1, len(prun.nodeids))
        if options.shards == "auto":
            from caelum_dask.testing.partition import units_of

            n = auto_shard_count(len(units_of(prun.nodeids, options.dist)), prun.slots,
                                 sum(prun.estimates.values()), fraction)
        else:
            n = int(options.shards)
        parts = partition(prun.nodeids, prun.estimates, n, options.dist) if prun.nodeids else []
        prun.shards = [{"shard": f"{prun.label}-{s.index}", "nodeids": s.nodeids, "estimate": s.estimate}
                       for s in parts]
        total_shards += len(parts)
    ev.emit(ev.TESTS, "run-started", sink=client, run_id=run_id, shards=total_shards,
            tests=sum(len(p.nodeids) for p in runs), platforms=[p.label for p in runs],
            project=str(root), dist=options.dist)
    say(f"run {run_id}: {sum(len(p.nodeids) for p in runs)} tests in {total_shards} shards "
        f"(dist={options.dist}) on {len({w['machine'] for w in workers})} machine(s)")

    # 3. shards, longest first
    pending: dict[Any, tuple[_PlatformRun, dict[str, Any]]] = {}
    for prun in runs:
        for i, shard in enumerate(prun.shards):
            spec = {**base, "python": options.python, "platform": prun.platform,
                    "shard": shard["shard"], "nodeids": shard["nodeids"]}
            future = client.submit(run_shard, spec, key=f"caelum-test-{run_id}-shard-{shard['shard']}",
                                   priority=len(prun.shards) - i, pure=False,
                                   **_placement(prun.platform, workers))
            pending[future] = (prun, shard)
    _gather_shards(pending, say, record_shard=True)

    # 4. failures re-run on another machine: flaky or broken
    for attempt in range(1, options.retry_failed + 1):
        retry: dict[Any, tuple[_PlatformRun, dict[str, Any]]] = {}
        for prun in runs:
            failing = [r for r in prun.results.values() if r["outcome"] in ("failed", "error")
                       and not r.get("retried_ok")]
            by_machine: dict[str, list[str]] = {}
            for result in failing:
                by_machine.setdefault(result.get("machine", ""), []).append(result["nodeid"])
            for machine, ids in by_machine.items():
                other_workers = [w for w in prun.workers if w["hostname"] != machine]
                others = [w["address"] for w in other_workers]
                placement = ({"workers": others, "allow_other_workers": False} if others
                             else _placement(prun.platform, workers))
                slots = sum(int(w.get("nthreads") or 1) for w in other_workers) or prun.slots
                for part in partition(ids, prun.estimates, max(1, slots), "load"):
                    name = f"{prun.label}-retry{attempt}-{len(retry)}"
                    spec = {**base, "python": options.python, "platform": prun.platform,
                            "shard": name, "nodeids": part.nodeids, "attempt": attempt}
                    future = client.submit(run_shard, spec, key=f"caelum-test-{run_id}-shard-{name}",
                                           pure=False, **placement)
                    retry[future] = (prun, {"shard": name, "nodeids": part.nodeids, "estimate": part.estimate})
        if not retry:
            break
        say(f"re-running {sum(len(s['nodeids']) for _, s in retry.values())} failed test(s) (attempt {attempt})")
        _gather_shards(retry, say, record_shard=False)
    return _finish(root, options, client, run_id, started, snap, runs, say, collection_failed=False)


def _gather_shards(pending: dict[Any, tuple[_PlatformRun, dict[str, Any]]], say: Progress,
                   record_shard: bool) -> None:
    for future in as_completed(list(pending)):
        prun, shard = pending[future]
        try:
            out = future.result()
        except Exception as exc:  # KilledWorker after Dask's own retries, or a bug in the runner
            out = _lost(shard["nodeids"], exc, shard["shard"])
            prun.lost += 1
        prun.junit.extend(out["junit"])
        for result in out["results"]:
            result = {**result, "shard": shard["shard"]}
            previous = prun.results.get(result["nodeid"])
            if previous is None or (previous.get("lost") and not result.get("lost")):
                prun.results[result["nodeid"]] = result  # first result, or the first real one
            elif result["outcome"] in ("passed", "xfailed", "skipped", "xpassed"):
                earlier = previous.get("flaky_failures", []) + [
                    {k: previous.get(k) for k in ("message", "longrepr", "machine", "outcome")}]
                prun.results[result["nodeid"]] = {**result, "outcome": "flaky", "flaky_failures": earlier,
                                                  "retried_ok": True}
            else:
                previous.setdefault("attempts", []).append(
                    {k: result.get(k) for k in ("outcome", "message", "machine")})
        counts = {k: sum(1 for r in out["results"] if r["outcome"] == k) for k in OUTCOMES}
        if record_shard:
            shard.update({"worker": out["worker"], "machine": out["machine"], "duration": out["duration"],
                          "runs": out["runs"], "lost": out.get("lost", False), "output_tail": out["output_tail"],
                          "env_removed": out.get("env_removed", [])})
        brief = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        say(f"[{prun.label}] shard {shard['shard']} on {out['machine'] or '?'}: {brief or 'no tests'} "
            f"in {out['duration']:.2f}s" + (" (LOST)" if out.get("lost") else ""))


def _collection_failed(collection: dict[str, Any]) -> bool:
    return collection.get("timed_out") or collection.get("rc") not in (0, 5)


def _exit_code(prun: _PlatformRun, flaky_fails: bool) -> int:
    rc = prun.collection.get("rc", 0)
    if prun.collection.get("timed_out"):
        return 2
    if rc not in (0, 5):
        return int(rc)
    if not prun.nodeids:
        return 5
    if any(r.get("lost") for r in prun.results.values()):  # tests that never got to run
        return 2
    bad = {"failed", "error"} | ({"flaky"} if flaky_fails else set())
    return 1 if any(r["outcome"] in bad for r in prun.results.values()) else 0


def _combine_exit_codes(codes: Sequence[int]) -> int:
    for code in (2, 3, 4, 1):
        if code in codes:
            return code
    return 5 if codes and all(c == 5 for c in codes) else 0


def _finish(root: Path, options: TestOptions, client: Client, run_id: str, started: float, snap: Any,
            runs: list[_PlatformRun], say: Progress, collection_failed: bool) -> dict[str, Any]:
    duration = time.time() - started
    platforms = []
    suites = []
    measured: dict[str, float] = {}
    for prun in runs:
        ordered = [prun.results[n] for n in prun.nodeids if n in prun.results]
        missing = [n for n in prun.nodeids if n not in prun.results]
        for nodeid in missing:  # never silently drop a test
            ordered.append({"nodeid": nodeid, "outcome": "error", "duration": 0.0, "machine": "",
                            "message": "no shard reported this test", "longrepr": ""})
        for result in ordered:
            if result["outcome"] not in ("error", "notrun") and not result.get("flaky_failures"):
                measured[result["nodeid"]] = float(result.get("duration") or 0.0)
        counts = {k: sum(1 for r in ordered if r["outcome"] == k) for k in OUTCOMES}
        counts["total"] = len(prun.nodeids)
        shard_times = [s.get("duration", 0.0) for s in prun.shards]
        name = "caelum" if prun.platform is None else f"caelum[{prun.platform}]"
        suites.append(merge.testsuite(name, ordered, prun.junit, duration, run_id))
        platforms.append({
            "platform": prun.label, "exit_code": _exit_code(prun, options.flaky_fails), "counts": counts,
            "collection": {"rc": prun.collection.get("rc"), "machine": prun.collection.get("machine"),
                           "output": prun.collection.get("output", "") if _collection_failed(prun.collection) else ""},
            "shards": [{k: s.get(k) for k in ("shard", "worker", "machine", "estimate", "duration", "runs", "lost")}
                       | {"tests": len(s["nodeids"]), "nodeids": s["nodeids"]} for s in prun.shards],
            "imbalance": round(imbalance(shard_times), 3) if prun.shards else None,
            "lost_shards": prun.lost,
            "env_removed": next((s.get("env_removed") for s in prun.shards if s.get("env_removed")), []),
            "tests": ordered,
        })
    exit_code = _combine_exit_codes([p["exit_code"] for p in platforms])
    junit_path = None
    if options.junit:
        junit_path = Path(options.junit).expanduser().resolve()
        junit_path.parent.mkdir(parents=True, exist_ok=True)
        junit_path.write_text(merge.junit_document(suites), encoding="utf-8")
    durations_file = None
    if options.record_durations and measured and not collection_failed:
        try:
            durations_file = str(durations_mod.save(root, measured))
        except OSError as exc:  # a read-only checkout still gets its results
            say(f"durations not recorded: {exc}")
    totals = {k: sum(p["counts"][k] for p in platforms) for k in (*OUTCOMES, "total")}
    summary = {
        "run_id": run_id, "project": str(root), "exit_code": exit_code, "duration": round(duration, 3),
        "dist": options.dist, "snapshot": {"digest": snap.digest, "files": snap.files, "bytes": snap.size},
        "counts": totals, "platforms": platforms, "junit": str(junit_path) if junit_path else None,
        "durations_file": durations_file,
    }
    ev.emit(ev.TESTS, "run-finished", sink=client, run_id=run_id, exit_code=exit_code,
            duration=round(duration, 3), **{k: totals[k] for k in ("passed", "failed", "skipped", "flaky")},
            errors=totals["error"])
    return summary

"""``run_tests``: a pytest suite run over the cluster, end to end.

snapshot (shipped once per machine) -> one long-lived pytest session per worker slot, each
collecting once -> one queue fed longest first by recorded durations, handed out in shrinking
chunks with stealing at the tail (:mod:`.engine`, :mod:`.dispatch`) -> failures re-run on
another machine (flaky detection) -> merged JUnit XML, summary, durations file and the
scheduler's learned test durations (:mod:`.durations`: a fresh clone plans with them). With
``platforms`` every platform gets its own sessions and queue, all in the same run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from distributed import Client

from caelum_dask import events as ev
from caelum_dask.cluster import client_scope
from caelum_dask.errors import InvalidInput, UnsatisfiableRequirement
from caelum_dask.options import ConfiguredOptions
from caelum_dask.progress import ProgressCallback, reporter
from caelum_dask.testing import durations as durations_mod
from caelum_dask.testing import merge
from caelum_dask.testing.collect import maxfail_of, shard_options
from caelum_dask.testing.engine import CANNOT_START, RunSettings, SuiteRun, TestProgress, new_run_id, settle
from caelum_dask.testing.partition import DIST_MODES, imbalance
from caelum_dask.testing.result import PlatformSummary, SnapshotInfo, TestRunResult
from caelum_dask.testing.snapshot import build_snapshot, is_unpacked

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "flaky", "notrun")
Progress = Callable[[str], None]


@dataclass
class TestOptions(ConfiguredOptions):
    """Everything ``caelum test`` can be told (the CLI options, one to one).

    A field left ``None`` takes its default from ``caelum.testing.*`` when the run starts
    (:meth:`resolved`), so the CLI, MCP and ``pytest --caelum`` pass only what the user said
    and every front door behaves alike.
    """

    __test__ = False  # not a pytest test class, despite the name
    CONFIG: ClassVar[Mapping[str, str]] = {"shards": "testing.sessions", "dist": "testing.dist",
                                           "retry_failed": "testing.retry-failed", "timeout": "testing.timeout"}

    shards: int | str | None = None  # sessions: "auto" = one per worker thread
    dist: str | None = None
    platforms: str | Sequence[str] | None = None
    retry_failed: int | None = None
    junit: str | None = None
    python: str | None = None
    pytest_args: list[str] = field(default_factory=list)
    timeout: float | None = None
    env: dict[str, str] = field(default_factory=dict)
    flaky_fails: bool = False
    record_durations: bool = True
    #: the folder, relative to the project, pytest runs in (``pytest --caelum`` from a subfolder)
    workdir: str = ""
    #: stream pytest's own serialised reports too (``pytest --caelum`` replays them)
    full_reports: bool = False

    def validate(self) -> None:
        """Refuse bad values with one line each (call on a :meth:`resolved` copy)."""
        if self.dist not in DIST_MODES:
            raise InvalidInput(f"unknown --dist {self.dist!r}; use one of {', '.join(DIST_MODES)}")
        if self.shards != "auto":
            try:
                self.shards = int(self.shards)
            except (TypeError, ValueError):
                raise InvalidInput(f"--shards must be 'auto' or a positive number (got {self.shards!r})") from None
            if self.shards < 1:
                raise InvalidInput(f"--shards must be 'auto' or a positive number (got {self.shards})")
        if int(self.retry_failed or 0) < 0:
            raise InvalidInput(f"--retry-failed must be 0 or more (got {self.retry_failed})")
        self.timeout = float(self.timeout or 0)
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


def _session_slots(platform: str | None, workers: list[dict[str, Any]], wanted: int | str) -> list[str]:
    """One worker address per session: every thread of every worker (``auto``), or N spread."""
    mine = [w for w in workers if platform is None or w["platform"] == platform]
    threads = [w["address"] for w in mine for _ in range(max(1, int(w.get("nthreads") or 1)))]
    by_machine: dict[str, list[str]] = {}
    for w in mine:  # interleave machines so that N < slots still spreads over machines
        by_machine.setdefault(w["machine"], []).extend([w["address"]] * max(1, int(w.get("nthreads") or 1)))
    interleaved = [addr for group in _zip_longest(list(by_machine.values())) for addr in group]
    if wanted == "auto":
        return interleaved or threads
    return [interleaved[i % len(interleaved)] for i in range(int(wanted))]


def _zip_longest(groups: list[list[str]]) -> list[list[str]]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


def run_tests(path: str | os.PathLike[str], options: TestOptions | None = None, *,
              client: Client | None = None, scheduler: str | None = None,
              progress: ProgressCallback | None = None, listener: Any = None) -> TestRunResult:
    """Run the pytest suite at ``path`` on the cluster; returns the run's :class:`TestRunResult`.

    ``progress`` gets :class:`~caelum_dask.progress.ProgressEvent` (``job="test"``): status
    lines (snapshot, collection, sessions) and the counts (done/total, failed, running, ETA)
    as reports stream in. ``listener`` (:class:`~caelum_dask.testing.engine.Listener`) hears each
    test's result as it arrives (``pytest --caelum`` replays them).

    ``client`` (or ``scheduler``, or the usual connect() resolution) picks the cluster.
    The result's ``exit_code`` has pytest's meaning: 0 all passed, 1 tests failed, 2
    interrupted (collection errors, lost shards), 4 usage error, 5 nothing collected.
    """
    options = (options or TestOptions()).resolved()
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
    with client_scope(client, scheduler) as active:
        result = _run(root, options, active, progress, listener)
        if client is None:  # ours to close: let the sessions finish exiting first
            settle(active, result.run_id)
        return result


class _Quiet:
    """A listener that hears nothing (the default)."""

    def collected(self, platform: str, collection: dict[str, Any]) -> None:
        pass

    def result(self, platform: str, result: dict[str, Any], final: bool) -> None:
        pass

    def progress(self, progress: TestProgress) -> None:
        pass


class _Events:
    """Wraps the caller's listener: progress also goes to the dashboard as Dask events."""

    def __init__(self, inner: Any, client: Client, run_id: str, say: Progress,
                 events: ProgressCallback | None = None) -> None:
        self.inner = inner or _Quiet()
        self.client = client
        self.run_id = run_id
        self.say = say
        self.events = events
        self.last = 0.0

    def collected(self, platform: str, collection: dict[str, Any]) -> None:
        self.say(f"[{platform}] collected {len(collection.get('ids') or [])} tests on {collection.get('machine')}")
        self.inner.collected(platform, collection)

    def result(self, platform: str, result: dict[str, Any], final: bool) -> None:
        self.inner.result(platform, result, final)

    def progress(self, progress: TestProgress) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0 or progress.done >= progress.total:
            self.last = now
            ev.emit(ev.TESTS, "progress", sink=self.client, run_id=self.run_id, **progress.to_dict())
        if self.events is not None:
            self.events(progress.event(self.run_id))
        self.inner.progress(progress)


def _run(root: Path, options: TestOptions, client: Client, progress: ProgressCallback | None,
         listener: Any) -> TestRunResult:
    say = reporter("test", progress)
    run_id = new_run_id()
    started = time.time()
    snap = build_snapshot(root)
    say(f"snapshot {snap.digest[:12]}: {snap.files} files, {snap.size / 1e6:.2f} MB")
    workers = _online_workers(client)
    if not workers:
        raise UnsatisfiableRequirement("the cluster has no online workers; start one with `caelum worker`")
    platforms = _platform_list(options.platforms, workers)
    dataset = _ship_snapshot(client, snap, workers, run_id, say)
    project = durations_mod.project_id(root)
    try:
        slots = {p or "all": _session_slots(p, workers, options.shards) for p in platforms}
        known = durations_mod.known(root, client, project)
        settings = _settings(options, run_id, {"digest": snap.digest, "dataset": dataset}, known)
        events = _Events(listener, client, run_id, say, progress)
        ev.emit(ev.TESTS, "run-started", sink=client, run_id=run_id, shards=sum(len(v) for v in slots.values()),
                tests=None, platforms=list(slots), project=str(root), dist=options.dist)
        say(f"run {run_id}: {sum(len(v) for v in slots.values())} pytest sessions (dist={options.dist}) "
            f"on {len({w['machine'] for w in workers})} machine(s)")
        suite = SuiteRun(client, settings, slots, events, {w["address"]: w["machine"] for w in workers})
        suite.run()
    finally:
        client.unpublish_dataset(dataset)
    return _finish(root, options, client, run_id, started, snap, suite, project)


def _settings(options: TestOptions, run_id: str, snapshot: dict[str, str], known: dict[str, float]) -> RunSettings:
    """What the engine needs; ``known`` are the durations to plan with (:func:`.durations.known`)."""
    from caelum_dask import config

    args = shard_options(options.pytest_args)

    def estimate(ids: list[str]) -> tuple[dict[str, float], bool]:
        return durations_mod.estimate(ids, known), any(i in known for i in ids)

    return RunSettings(
        run_id=run_id, snapshot=snapshot, args=args,
        python=options.python, env=dict(options.env), timeout=options.timeout,
        collect_timeout=float(config.get("testing.collect-timeout")), dist=options.dist,
        retries=options.retry_failed, maxfail=maxfail_of(args), workdir=options.workdir,
        full_reports=options.full_reports, junit=bool(options.junit), estimate=estimate,
        start_grace=float(config.get("testing.start-grace")),
        freeze_collected=bool(config.get("testing.freeze-collected")))


def _ship_snapshot(client: Client, snap: Any, workers: list[dict[str, Any]], run_id: str, say: Progress) -> str:
    """Put one copy of the snapshot on each machine that has not unpacked it yet.

    The copies are published as a Dask dataset; a session on a machine without the unpacked
    snapshot gathers it from there (the nearest copy), so a lost worker loses no snapshot
    while any machine still holds one.
    """
    # a worker dying meanwhile answers with its error, not the whole run's (it holds no copy)
    has = {addr: ok is True for addr, ok in client.run(is_unpacked, snap.digest, on_error="return").items()}
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


def _ordered_results(plat: Any, stopped: bool) -> list[dict[str, Any]]:
    """Every collected test once, in collection order: its result, not-run, or an error."""
    ids = list((plat.collection or {}).get("ids") or [])
    notrun = set(plat.notrun) if not stopped else set(ids) - set(plat.lost)
    ordered = []
    for nodeid in ids:
        result = plat.results.get(nodeid)
        if result is None and nodeid in notrun:
            result = {"nodeid": nodeid, "outcome": "notrun", "categories": [], "duration": 0.0, "machine": "",
                      "message": "not run: the run stopped early (-x/--maxfail)", "longrepr": ""}
        elif result is None:  # never silently drop a test
            why = "lost: no session was left to run it" if nodeid in plat.lost else "no session reported this test"
            result = {"nodeid": nodeid, "outcome": "error", "categories": ["error"], "duration": 0.0,
                      "machine": "", "message": why, "longrepr": why, "lost": True}
        ordered.append({k: v for k, v in result.items() if k != "reports"})
    return ordered


def _counts(plat: Any, ordered: list[dict[str, Any]]) -> dict[str, int]:
    """pytest's final-line counts: every report's category, collection reports included."""
    counts = dict.fromkeys((*OUTCOMES, "deselected"), 0)
    collection = plat.collection or {}
    for category, n in (collection.get("categories") or {}).items():
        counts[category] = counts.get(category, 0) + int(n)
    counts["deselected"] += int(collection.get("deselected") or 0)
    for result in ordered:
        if result["outcome"] in ("flaky", "notrun"):
            counts[result["outcome"]] += 1
            continue
        for category in result.get("categories") or [result["outcome"]]:
            counts[category] = counts.get(category, 0) + 1
    counts["total"] = len(ordered)
    return counts


def _exit_code(plat: Any, ordered: list[dict[str, Any]], flaky_fails: bool) -> int:
    if plat.failure is not None:
        return int(plat.failure.get("rc") or 2) if plat.failure.get("rc") in (2, 3, 4) else 2
    collection = plat.collection or {}
    if collection.get("errors") and not ordered:
        return 2
    if not ordered:
        return 5
    if any(r.get("lost") for r in ordered):  # tests that never got to run
        return 2
    bad = {"failed", "error"} | ({"flaky"} if flaky_fails else set())
    failed = any(r["outcome"] in bad for r in ordered) or bool(collection.get("errors"))
    return 1 if failed else 0


def _collection_output(plat: Any) -> str:
    """Collection errors as pytest prints them, or why no session could collect."""
    if plat.failure is not None:
        return str(plat.failure.get("output") or "")
    errors = (plat.collection or {}).get("errors") or []
    return "\n".join(f"{'_' * 20} ERROR collecting {e['nodeid']} {'_' * 20}\n{e['longrepr']}" for e in errors)


def _platform_summary(plat: Any, suite: SuiteRun, options: TestOptions) -> PlatformSummary:
    ordered = _ordered_results(plat, bool(suite.stopped)) if not (plat.collection or {}).get("errors") or plat.results else []
    sessions = [s for s in suite.sessions.values() if s.platform == plat.label]
    busy = [s.busy for s in sessions if s.ran]
    return {
        "platform": plat.label, "exit_code": _exit_code(plat, ordered, options.flaky_fails),
        "counts": _counts(plat, ordered),
        "collection": {"rc": (plat.failure or {}).get("rc", 2 if (plat.collection or {}).get("errors") else 0),
                       "machine": (plat.collection or {}).get("machine"), "output": _collection_output(plat),
                       "mismatches": (plat.collection or {}).get("mismatches", [])},
        "shards": [{"shard": s.name, "worker": s.worker, "machine": s.machine, "estimate": round(s.estimate, 3),
                    "duration": round(s.busy, 3), "runs": s.outcome.get("runs", []), "lost": s.lost,
                    "tests": len(s.ran), "nodeids": s.ran} for s in sessions],
        "imbalance": round(imbalance(busy), 3) if busy else None,
        "lost_shards": sum(1 for s in sessions if s.lost),
        "env_removed": next((s.outcome.get("env_removed") for s in sessions if s.outcome.get("env_removed")), []),
        "stopped": suite.stopped,
        "tests": ordered,
    }


def _combine_exit_codes(codes: Sequence[int]) -> int:
    for code in (2, 3, 4, 1):
        if code in codes:
            return code
    return 5 if codes and all(c == 5 for c in codes) else 0


def _measured(platforms: list[PlatformSummary]) -> dict[str, float]:
    return {r["nodeid"]: float(r.get("duration") or 0.0) for p in platforms for r in p["tests"]
            if r["outcome"] not in ("error", "notrun", "flaky") and not r.get("crash")}


def _write_junit(options: TestOptions, suite: SuiteRun, platforms: list[PlatformSummary], duration: float,
                 run_id: str) -> str | None:
    if not options.junit:
        return None
    suites = []
    for summary in platforms:
        documents = [doc for s in suite.sessions.values() if s.platform == summary["platform"]
                     for doc in s.outcome.get("junit", [])]
        name = "caelum" if summary["platform"] == "all" else f"caelum[{summary['platform']}]"
        suites.append(merge.testsuite(name, summary["tests"], documents, duration, run_id))
    path = Path(options.junit).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(merge.junit_document(suites), encoding="utf-8")
    return str(path)


def _finish(root: Path, options: TestOptions, client: Client, run_id: str, started: float, snap: Any,
            suite: SuiteRun, project: str) -> TestRunResult:
    duration = time.time() - started
    _raise_if_unrunnable(suite)
    platforms = [_platform_summary(p, suite, options) for p in suite.platforms.values()]
    exit_code = _combine_exit_codes([p["exit_code"] for p in platforms])
    junit_path = _write_junit(options, suite, platforms, duration, run_id)
    durations_file = None
    measured = _measured(platforms)
    if options.record_durations and measured and not any(p["collection"]["output"] for p in platforms):
        durations_mod.record(client, project, measured)  # the cluster's figures, for every clone
        try:
            durations_file = str(durations_mod.save(root, measured))
        except OSError:  # a read-only checkout still gets its results
            durations_file = None
    totals = {k: sum(p["counts"].get(k, 0) for p in platforms) for k in (*OUTCOMES, "deselected", "total")}
    _emit_sessions(client, run_id, suite, platforms)
    result = TestRunResult(
        run_id=run_id, project=str(root), exit_code=exit_code, duration=round(duration, 3),
        dist=str(options.dist), snapshot=SnapshotInfo(digest=snap.digest, files=snap.files, bytes=snap.size),
        counts=totals, platforms=platforms, junit=junit_path, durations_file=durations_file,
        stopped=suite.stopped)
    ev.emit(ev.TESTS, "run-finished", sink=client, run_id=run_id, exit_code=exit_code,
            duration=round(duration, 3), **{k: totals[k] for k in ("passed", "failed", "skipped", "flaky")},
            errors=totals["error"])
    return result


def _emit_sessions(client: Client, run_id: str, suite: SuiteRun, platforms: list[PlatformSummary]) -> None:
    """One ``shard-finished`` event per session (the dashboard's per-machine table)."""
    outcome = {r["nodeid"]: r["outcome"] for p in platforms for r in p["tests"]}
    for info in suite.sessions.values():
        if not info.ran:
            continue
        mine = [outcome.get(n) for n in set(info.ran)]
        ev.emit(ev.TESTS, "shard-finished", sink=client, run_id=run_id, shard=info.name, worker=info.worker,
                machine=info.machine, platform=info.platform, passed=mine.count("passed"),
                failed=mine.count("failed"), skipped=mine.count("skipped"), errors=mine.count("error"),
                duration=round(info.busy, 3))


def _raise_if_unrunnable(suite: SuiteRun) -> None:
    """A --python that exists on no worker is bad input, not a test failure."""
    for plat in suite.platforms.values():
        failure = plat.failure or {}
        if failure.get("rc") == CANNOT_START:
            raise InvalidInput(f"--python: {failure.get('output')}; give an interpreter that exists on the workers")

"""The run store: every run and every task attempt, in SQLite on the client's machine.

One writer per run (the client running the workflow, its *owner*) in WAL mode, so ``caelum
runs list`` can read while a run is writing. The one exception: a reader that finds a
``running`` run whose owner is gone (see :mod:`caelum_dask.workflow.owner`) records it as
``interrupted`` — in one ``BEGIN IMMEDIATE`` transaction that changes the run only if it is
still ``running``, so it never overwrites how a live owner ended its run, and an owner that
was wrongly given up for dead simply records its real end later. The schema version is
SQLite's ``user_version``; opening an older file applies the missing :data:`MIGRATIONS` in
order, keeping its rows.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from caelum_dask import config
from caelum_dask.errors import InvalidInput
from caelum_dask.workflow.owner import Owner, OwnerCheck

MIGRATIONS: list[str] = [
    # 1: runs and task attempts
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, workflow TEXT NOT NULL, parameters TEXT NOT NULL,
        state TEXT NOT NULL, started REAL NOT NULL, finished REAL
    );
    CREATE TABLE attempts (
        run_id TEXT NOT NULL REFERENCES runs(id), task TEXT NOT NULL, attempt INTEGER NOT NULL,
        state TEXT NOT NULL, started REAL, finished REAL, machine TEXT, worker TEXT,
        error TEXT, traceback TEXT, PRIMARY KEY (run_id, task, attempt)
    );
    """,
    # 2: per-task summary (cache keys for resume), run counts, source file, resume link
    """
    ALTER TABLE runs ADD COLUMN file TEXT;
    ALTER TABLE runs ADD COLUMN resumed_from TEXT;
    ALTER TABLE runs ADD COLUMN computed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE tasks (
        run_id TEXT NOT NULL REFERENCES runs(id), task TEXT NOT NULL, state TEXT NOT NULL,
        cache_key TEXT, machine TEXT, worker TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        started REAL, finished REAL, error TEXT, PRIMARY KEY (run_id, task)
    );
    CREATE INDEX runs_started ON runs(started);
    """,
    # 3: the run's owner (who may finish it) and why a run ended without finishing
    """
    ALTER TABLE runs ADD COLUMN owner_host TEXT;
    ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
    ALTER TABLE runs ADD COLUMN owner_started REAL;
    ALTER TABLE runs ADD COLUMN scheduler TEXT;
    ALTER TABLE runs ADD COLUMN owner_client TEXT;
    ALTER TABLE runs ADD COLUMN reason TEXT;
    CREATE INDEX runs_state ON runs(state);
    """,
    # 4: what the scheduler's learned durations predicted: per task and the run's critical path
    """
    ALTER TABLE runs ADD COLUMN estimated REAL;
    ALTER TABLE tasks ADD COLUMN estimated REAL;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

FINAL_STATES = ("completed", "cached", "failed", "skipped")
#: states of a run that ended without finishing: ``cancelled`` on request, ``interrupted``
#: otherwise (its client stopped or died, or lost the scheduler); both can be resumed
UNFINISHED_STATES = ("cancelled", "interrupted")


def default_path() -> pathlib.Path:
    """``caelum.workflow.store``, else ``<caelum home>/workflows.sqlite``."""
    configured = config.get("workflow.store")
    return pathlib.Path(configured).expanduser() if configured else config.home() / "workflows.sqlite"


class RunStore:
    """Runs and task attempts; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | pathlib.Path | None = None) -> None:
        self.path = pathlib.Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._set_wal()
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.migrate()

    def _set_wal(self) -> None:
        """Switch to WAL; a new file opened by several processes at once may be briefly busy."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring the file up to :data:`SCHEMA_VERSION`, one transaction per step.

        Each step re-reads the version under a write lock, so two processes opening a new
        store at once never apply a step twice.
        """
        while True:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                current = self.version
                if current > SCHEMA_VERSION:
                    raise InvalidInput(f"run store {self.path} has schema {current}, newer than this caelum "
                                       f"({SCHEMA_VERSION}); upgrade caelum-dask")
                if current == SCHEMA_VERSION:
                    self.db.execute("COMMIT")
                    return
                for statement in MIGRATIONS[current].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {current + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    # -- writing (the client that runs the workflow) ------------------------------------------
    def start_run(self, run_id: str, workflow: str, parameters: dict[str, Any], tasks: Iterable[str],
                  file: str | None = None, resumed_from: str | None = None,
                  cache_keys: dict[str, str] | None = None, cached: Iterable[str] = (),
                  owner: Owner | None = None, estimates: dict[str, float] | None = None,
                  estimated: float | None = None) -> None:
        """Record a new run with every task ``pending``, or ``cached`` for those reused.

        ``owner`` (default: this process, no scheduler) is who drives the run; readers use it
        to find out a run whose owner died. ``estimates`` (seconds per task) and ``estimated``
        (the run's critical path) are what the learned durations predicted, kept so the
        actual times can be compared with them afterwards.
        """
        now = time.time()
        who = (owner or Owner.current()).columns()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: no busy-snapshot upgrade failures
            self.db.execute(
                "INSERT INTO runs (id, workflow, parameters, state, started, file, resumed_from, owner_host, "
                "owner_pid, owner_started, scheduler, owner_client, estimated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, workflow, json.dumps(parameters, default=repr, sort_keys=True), "running", now, file,
                 resumed_from, who["owner_host"], who["owner_pid"], who["owner_started"], who["scheduler"],
                 who["owner_client"], estimated),
            )
            keys = cache_keys or {}
            reused = set(cached)
            guesses = estimates or {}
            self.db.executemany(
                "INSERT INTO tasks (run_id, task, state, cache_key, started, finished, estimated) VALUES (?,?,?,?,?,?,?)",
                ((run_id, t, "cached" if t in reused else "pending", keys.get(t),
                  now if t in reused else None, now if t in reused else None, guesses.get(t)) for t in tasks))

    def record(self, run_id: str, messages: list[dict[str, Any]]) -> None:
        """Apply a batch of ``task-state`` messages (one transaction)."""
        if not messages:
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: no busy-snapshot upgrade failures
            for msg in messages:
                self._apply(run_id, msg)

    def _apply(self, run_id: str, msg: dict[str, Any]) -> None:
        """One task-state message. A quick task's ``running`` may never come (its final message
        replaced it on the worker and carries ``started``); a retry's ``running`` carries the
        failed attempt (``previous_*``)."""
        task, state = msg["task"], msg["state"]
        stamp = msg.get("timestamp") or time.time()
        worker, machine = msg.get("worker"), msg.get("machine")
        row = self.db.execute("SELECT attempts FROM tasks WHERE run_id=? AND task=?", (run_id, task)).fetchone()
        if row is None:  # a dynamic fan-out item appears when its items are known
            self.db.execute("INSERT INTO tasks (run_id, task, state) VALUES (?,?,'pending')", (run_id, task))
            attempts = 0
        else:
            attempts = row["attempts"]
        latest = self.db.execute("SELECT state, worker FROM attempts WHERE run_id=? AND task=? AND attempt=?",
                                 (run_id, task, attempts)).fetchone() if attempts else None
        open_here = latest is not None and latest["state"] == "running" and latest["worker"] == worker
        if latest is not None and latest["state"] == "running" and latest["worker"] != worker:
            # started elsewhere and never finished there: that worker was lost, Dask rescheduled
            self.db.execute("UPDATE attempts SET state='lost', finished=?, error=? WHERE run_id=? AND task=? AND attempt=?",
                            (stamp, f"worker {latest['worker']} was lost; rescheduled on {worker}", run_id, task, attempts))

        def new_attempt(state_: str, started: float | None, error: str | None = None, tb: str | None = None,
                        finished: float | None = None) -> None:
            nonlocal attempts
            attempts += 1
            self.db.execute(
                "INSERT OR REPLACE INTO attempts (run_id, task, attempt, state, started, finished, machine, worker, "
                "error, traceback) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, task, attempts, state_, started, finished, machine, worker, error, tb))

        if state == "running":
            if msg.get("previous_error"):
                if open_here:
                    self.db.execute(
                        "UPDATE attempts SET state='failed', finished=?, error=?, traceback=? WHERE run_id=? AND task=? AND attempt=?",
                        (stamp, msg["previous_error"], msg.get("previous_traceback"), run_id, task, attempts))
                else:
                    new_attempt("failed", msg.get("previous_started"), msg["previous_error"], msg.get("previous_traceback"), stamp)
            began = msg.get("started") or stamp  # the worker's clock, as final states report it
            new_attempt("running", began)
            self.db.execute(
                "UPDATE tasks SET state='running', attempts=?, started=COALESCE(started, ?), machine=?, worker=? WHERE run_id=? AND task=?",
                (attempts, began, machine, worker, run_id, task))
            return
        if state in ("completed", "failed"):
            if open_here:
                self.db.execute(
                    "UPDATE attempts SET state=?, finished=?, error=?, traceback=? WHERE run_id=? AND task=? AND attempt=?",
                    (state, stamp, msg.get("error"), msg.get("traceback"), run_id, task, attempts))
            else:
                new_attempt(state, msg.get("started", stamp), msg.get("error"), msg.get("traceback"), stamp)
        self.db.execute(
            "UPDATE tasks SET state=?, attempts=?, started=COALESCE(started, ?), finished=?, error=?, "
            "cache_key=COALESCE(?, cache_key), machine=COALESCE(?, machine), worker=COALESCE(?, worker) "
            "WHERE run_id=? AND task=?",
            (state, attempts, msg.get("started"), stamp, msg.get("error"), msg.get("cache_key"), machine, worker,
             run_id, task))

    def set_cache_keys(self, run_id: str, keys: dict[str, str]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # take the write lock now: no busy-snapshot upgrade failures
            self.db.executemany("UPDATE tasks SET cache_key=? WHERE run_id=? AND task=?",
                                ((k, run_id, t) for t, k in keys.items()))

    def finish_run(self, run_id: str, state: str, counts: dict[str, int]) -> None:
        """The owner's final word on its run (clears a reason a reader may have recorded)."""
        with self.db:
            self.db.execute(
                "UPDATE runs SET state=?, finished=?, computed=?, cached=?, failed=?, skipped=?, reason=NULL WHERE id=?",
                (state, time.time(), counts.get("computed", 0), counts.get("cached", 0), counts.get("failed", 0),
                 counts.get("skipped", 0), run_id))

    def end_unfinished(self, run_id: str, state: str, reason: str, at: float | None = None) -> bool:
        """Record that ``run_id`` ended without finishing (``cancelled`` or ``interrupted``).

        Its counts come from its task rows, its tasks and attempts still ``running`` take
        ``state`` too (they will never report), and ``finished`` is ``at`` (default: now).
        Only a run still ``running`` changes, checked under the write lock, so this is safe
        for a reader to call while the owner may be writing; returns whether it changed.
        """
        if state not in UNFINISHED_STATES:
            raise ValueError(f"{state!r} is not one of {UNFINISHED_STATES}")
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
            if row is None or row["state"] != "running":
                return False
            stamp = at if at is not None else time.time()
            self.db.execute("UPDATE attempts SET state=?, finished=?, error=COALESCE(error, ?) "
                            "WHERE run_id=? AND state='running'", (state, stamp, reason, run_id))
            self.db.execute("UPDATE tasks SET state=?, finished=? WHERE run_id=? AND state='running'",
                            (state, stamp, run_id))
            counts = {r["state"]: r["n"] for r in self.db.execute(
                "SELECT state, COUNT(*) AS n FROM tasks WHERE run_id=? GROUP BY state", (run_id,))}
            self.db.execute(
                "UPDATE runs SET state=?, finished=?, computed=?, cached=?, failed=?, skipped=?, reason=? WHERE id=?",
                (state, stamp, counts.get("completed", 0), counts.get("cached", 0), counts.get("failed", 0),
                 counts.get("skipped", 0), reason, run_id))
        return True

    def reconcile(self, check: OwnerCheck | None = None) -> list[str]:
        """Record as ``interrupted`` every ``running`` run whose owner is known to be gone.

        Called by every reader (:meth:`runs`, :meth:`run`), so a run whose client was killed
        reads ``interrupted`` — with the reason — the next time anyone looks. The run's
        ``finished`` is the last moment it was heard of (its latest task event). Returns the
        ids it changed.
        """
        check = check or OwnerCheck()
        changed = []
        for row in self.db.execute("SELECT * FROM runs WHERE state='running'").fetchall():
            reason = check.reason(dict(row))
            if reason and self.end_unfinished(row["id"], "interrupted", reason, at=self._last_heard(row)):
                changed.append(row["id"])
        return changed

    def _last_heard(self, row: sqlite3.Row) -> float:
        latest = self.db.execute(
            "SELECT MAX(MAX(COALESCE(started, 0)), MAX(COALESCE(finished, 0))) FROM tasks WHERE run_id=?",
            (row["id"],)).fetchone()[0]
        return max(row["started"], latest or 0)

    # -- reading ------------------------------------------------------------------------------
    def runs(self, limit: int = 20, reconcile: bool = True) -> list[dict[str, Any]]:
        """The ``limit`` most recent runs, newest first (after :meth:`reconcile`, unless told not to)."""
        if reconcile:
            self.reconcile()
        rows = self.db.execute("SELECT * FROM runs ORDER BY started DESC LIMIT ?", (limit,)).fetchall()
        return [_run_dict(r) for r in rows]

    def run(self, run_id: str, reconcile: bool = True) -> dict[str, Any]:
        """One run with its tasks and attempts; a unique prefix of the id is enough.

        Runs are reconciled first (see :meth:`reconcile`), so a run whose owner died reads
        ``interrupted`` here, as in ``caelum runs show`` and before ``--resume``.
        """
        if reconcile:
            self.reconcile()
        rows = self.db.execute("SELECT * FROM runs WHERE id LIKE ? ORDER BY started DESC", (run_id + "%",)).fetchall()
        if not rows:
            raise InvalidInput(f"no run {run_id!r} in the run store {self.path}; see `caelum runs list`")
        if len(rows) > 1 and rows[0]["id"] != run_id:
            raise InvalidInput(f"run id {run_id!r} is ambiguous ({len(rows)} runs start with it); give more of it")
        run = _run_dict(rows[0])
        rid = run["id"]
        run["tasks"] = [dict(r) for r in self.db.execute(
            "SELECT task, state, cache_key, machine, worker, attempts, started, finished, error, estimated, "
            "CASE WHEN state IN ('completed', 'failed') AND finished IS NOT NULL AND started IS NOT NULL "
            "THEN ROUND(finished - started, 3) END AS duration FROM tasks "
            "WHERE run_id=? ORDER BY COALESCE(started, 1e18), task", (rid,))]
        run["attempts"] = [dict(r) for r in self.db.execute(
            "SELECT task, attempt, state, started, finished, machine, worker, error, traceback FROM attempts "
            "WHERE run_id=? ORDER BY started, task, attempt", (rid,))]
        return run

    def task_states(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {r["task"]: dict(r) for r in self.db.execute("SELECT * FROM tasks WHERE run_id=?", (run_id,))}


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
    run = dict(row)
    run["parameters"] = json.loads(run["parameters"])
    if run.get("finished"):
        run["duration"] = round(run["finished"] - run["started"], 3)
    return run

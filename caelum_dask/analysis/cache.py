"""Results cache keyed by (path, file content hash, analyzer fingerprint), plus the last run's
assembled tables per tree and what was exported where.

One SQLite file under the caelum home on the machine that runs ``caelum analyze``; values are
the JSON rows a file produced. Re-analysing an unchanged tree reads every file here and sends
nothing to the cluster; changed files miss and only they are parsed.

Why the two extra tables: an unchanged tree's re-run used to rebuild every DataFrame, the
import graph and its centrality from the per-file rows, and re-export everything — seconds of
client work for nothing. ``runs`` keeps, per tree (``scope``), the digest of the whole input
(every file key, the skipped files) with the summary and the pickled tables of the run that
produced it; ``exports`` keeps, per output folder, which input and which files were written
there. A run's new rows are written in one transaction at its end (:meth:`stage` then
:meth:`flush`), not one per batch: a commit is an fsync, and a long-open write transaction
would block a concurrent run's writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from caelum_dask import config

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (scope TEXT PRIMARY KEY, digest TEXT NOT NULL, summary TEXT NOT NULL,"
    " tables BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS exports (folder TEXT PRIMARY KEY, record TEXT NOT NULL)",
)


def file_key(rel: str, data: bytes, fingerprint: str) -> str:
    """The cache key of one file's rows: its path, its bytes and what analyses it."""
    digest = hashlib.sha256()
    for part in (fingerprint.encode(), b"\0", rel.encode("utf-8", "surrogateescape"), b"\0", data):
        digest.update(part)
    return digest.hexdigest()


class ResultCache:
    """A small key→JSON store (SQLite, WAL) safe to share between runs on one machine."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else config.home() / "analysis-cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA:
            self._db.execute(statement)
        self._db.commit()
        self._pending: list[tuple[str, str]] = []
        self._exports: list[tuple[str, str]] = []

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The cached rows of those keys that are cached."""
        keys = list(keys)
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def stage(self, items: Iterable[tuple[str, Any]]) -> None:
        """Serialise rows now (while the workers still run), write them at :meth:`flush`."""
        self._pending.extend((k, json.dumps(v, default=str)) for k, v in items)

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        """Store rows at once (one transaction)."""
        self.stage(items)
        self.flush()

    def flush(self, run: tuple[str, str, dict[str, Any], bytes] | None = None) -> None:
        """Write the staged rows and exports and, given, the run's ``(scope, digest, summary,
        tables)``, in one transaction (none when there is nothing to write)."""
        if not (self._pending or self._exports or run):
            return
        with self._db:
            if self._exports:
                self._db.executemany("INSERT OR REPLACE INTO exports (folder, record) VALUES (?, ?)", self._exports)
            if self._pending:
                self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)", self._pending)
            if run is not None:
                scope, digest, summary, tables = run
                self._db.execute("INSERT OR REPLACE INTO runs (scope, digest, summary, tables) VALUES (?, ?, ?, ?)",
                                 (scope, digest, json.dumps(summary, default=str), tables))
        self._pending, self._exports = [], []

    def get_run(self, scope: str, digest: str) -> dict[str, Any] | None:
        """The summary of the last run of ``scope``, if its input was ``digest``."""
        row = self._db.execute("SELECT summary FROM runs WHERE scope = ? AND digest = ?", (scope, digest)).fetchone()
        return json.loads(row[0]) if row else None

    def get_run_tables(self, scope: str, digest: str) -> bytes | None:
        """The pickled tables of that run (read only when someone uses them: megabytes for a
        large tree), or None if another run of the tree has replaced it since."""
        row = self._db.execute("SELECT tables FROM runs WHERE scope = ? AND digest = ?", (scope, digest)).fetchone()
        return bytes(row[0]) if row else None

    def get_export(self, folder: str) -> dict[str, Any] | None:
        """What was last exported to ``folder`` (see :func:`caelum_dask.analysis.snapshot.export_record`)."""
        row = self._db.execute("SELECT record FROM exports WHERE folder = ?", (folder,)).fetchone()
        return json.loads(row[0]) if row else None

    def stage_export(self, folder: str, record: dict[str, Any]) -> None:
        """Remember what was exported to ``folder``, written at :meth:`flush`."""
        self._exports.append((folder, json.dumps(record)))

    def close(self) -> None:
        self._db.close()

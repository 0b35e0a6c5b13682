"""Results cache keyed by (path, file content hash, analyzer fingerprint).

One SQLite file under the caelum home on the machine that runs ``caelum analyze``; values are
the JSON rows a file produced. Re-analysing an unchanged tree reads every file here and sends
nothing to the cluster; changed files miss and only they are parsed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from caelum_dask import config


def file_key(rel: str, data: bytes, fingerprint: str) -> str:
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
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: Iterable[tuple[str, Any]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                             [(k, json.dumps(v, default=str)) for k, v in items])
        self._db.commit()

    def close(self) -> None:
        self._db.close()

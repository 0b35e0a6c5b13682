"""Optional readers for what other caelum capabilities leave under the caelum home.

``caelum test``, ``caelum analyze`` and the workflow run store are built independently, so BI
reads their files defensively: a missing folder is simply "no data", an unreadable file is a
problem row, never a failed collection. Each reader is keyed on a documented location
(docs/bi.md, "Data sources"), relative to :func:`caelum_dask.config.home` unless configured:

- tests:     ``<home>/tests/**/*.xml`` (JUnit XML, one file per run) and
             ``<home>/tests/**/*.jsonl`` (rows ``{run_id, test, outcome, duration, time}``)
- metrics:   ``<home>/analysis/**/*.{parquet,csv,jsonl}`` tables with a ``path`` column and a
             complexity column (``complexity``, ``cyclomatic_complexity``, ``cc``, ``mean_cc``)
- workflows: the SQLite run store (config ``caelum.workflow.store``, else
             ``<home>/**/*.sqlite`` / ``*.db``) table ``runs``

A reader returns ``(DataFrame, problems)``; the frame's columns are fixed (see ``*_COLUMNS``)
so an absent source still aggregates to empty tables.
"""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from caelum_dask import config

TEST_COLUMNS = ["run_id", "test", "outcome", "duration", "time"]
METRIC_COLUMNS = ["path", "complexity", "snapshot", "time"]
WORKFLOW_COLUMNS = ["run_id", "workflow", "state", "started", "finished"]
COMPLEXITY_NAMES = ("complexity", "cyclomatic_complexity", "cc", "mean_cc", "max_cc")

Problem = tuple[str, str, str]  # (location, kind, message)
Reader = Callable[[Path], tuple[pd.DataFrame, list[Problem]]]


def _files(folder: Path, *patterns: str) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})


def _junit_rows(path: Path) -> list[dict[str, Any]]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    stamp = pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC")
    rows = []
    for suite in suites:
        when = suite.get("timestamp")
        time = pd.Timestamp(when, tz="UTC") if when else stamp
        for case in suite.iter("testcase"):
            outcome = "passed"
            for child, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
                if case.find(child) is not None:
                    outcome = name
                    break
            test = "::".join(x for x in (case.get("classname"), case.get("name")) if x)
            rows.append({"run_id": path.stem if path.name != "junit.xml" else path.parent.name,
                         "test": test, "outcome": outcome,
                         "duration": float(case.get("time") or 0.0), "time": time})
    return rows


def read_tests(home: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Test outcomes recorded by ``caelum test`` (JUnit XML or JSON lines)."""
    rows: list[dict[str, Any]] = []
    problems: list[Problem] = []
    for path in _files(home / "tests", "*.xml", "*.jsonl"):
        try:
            if path.suffix == ".xml":
                rows += _junit_rows(path)
            else:
                for line in path.read_text().splitlines():
                    if line.strip():
                        rec = json.loads(line)
                        rows.append({c: rec.get(c) for c in TEST_COLUMNS})
        except (ET.ParseError, ValueError, OSError) as exc:
            problems.append((str(path), "unreadable-tests", f"cannot read test results {path}: {exc}"))
    frame = pd.DataFrame(rows, columns=TEST_COLUMNS)
    frame["time"] = pd.to_datetime(frame["time"], utc=True, errors="coerce")
    frame["duration"] = pd.to_numeric(frame["duration"], errors="coerce")
    return frame, problems


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)


def read_metrics(home: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Per-file complexity recorded by ``caelum analyze``; one snapshot per file read."""
    frames: list[pd.DataFrame] = []
    problems: list[Problem] = []
    for path in _files(home / "analysis", "*.parquet", "*.csv", "*.jsonl"):
        try:
            table = _read_table(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
            problems.append((str(path), "unreadable-metrics", f"cannot read analysis table {path}: {exc}"))
            continue
        column = next((c for c in COMPLEXITY_NAMES if c in table.columns), None)
        if "path" not in table.columns or column is None:
            continue  # another kind of analysis table (imports, functions without path, …)
        when = (pd.to_datetime(table["time"], utc=True, errors="coerce") if "time" in table.columns
                else pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC"))
        frames.append(pd.DataFrame({"path": table["path"].astype(str),
                                    "complexity": pd.to_numeric(table[column], errors="coerce"),
                                    "snapshot": str(path.relative_to(home)), "time": when}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in METRIC_COLUMNS}), problems
    return pd.concat(frames, ignore_index=True), problems


def _stores(home: Path) -> list[Path]:
    configured = config.get("workflow.store")
    if configured:
        path = Path(str(configured)).expanduser()
        return [path] if path.is_file() else []
    return _files(home, "*.sqlite", "*.db")


def read_workflows(home: Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Workflow runs from the run store's ``runs`` table (whatever columns of ours it has)."""
    frames: list[pd.DataFrame] = []
    problems: list[Problem] = []
    for path in _stores(home):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
                tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
                if "runs" not in tables:
                    continue
                table = pd.read_sql_query("select * from runs", con)
        except (sqlite3.Error, pd.errors.DatabaseError) as exc:
            problems.append((str(path), "unreadable-store", f"cannot read run store {path}: {exc}"))
            continue
        aliases = {"id": "run_id", "name": "workflow", "status": "state", "start": "started",
                   "started_at": "started", "finished_at": "finished", "end": "finished"}
        table = table.rename(columns={k: v for k, v in aliases.items() if v not in table.columns})
        frames.append(table.reindex(columns=WORKFLOW_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=WORKFLOW_COLUMNS), problems
    return pd.concat(frames, ignore_index=True), problems


READERS: dict[str, Reader] = {"tests": read_tests, "metrics": read_metrics, "workflows": read_workflows}

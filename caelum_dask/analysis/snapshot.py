"""An unchanged tree's re-run without recomputing anything: the previous run's tables and export.

Why: the per-file cache already spared the workers, but an unchanged re-run still rebuilt every
DataFrame, the import graph and its centrality, and re-exported CSV/Parquet/HTML — seconds of
client work, and on a small project more than the analysis itself. Here the whole input of a
run (every file's cache key and module, the skipped files, the analyzers' fingerprint) is one
digest; when it equals the one the tree's last run stored, that run's summary is the answer,
its tables are unpickled only if someone looks at them, and an export to a folder that still
holds exactly what that input produced is kept (only ``summary.json``, which names the run, is
rewritten). This module imports nothing heavy: an unchanged ``caelum analyze`` never imports
pandas, networkx, distributed or libcst.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from caelum_dask.analysis.discovery import SourceFile

#: summary fields that describe the run rather than the tree (set anew on reuse)
PER_RUN = ("run_id", "root", "analysed", "cached", "tasks", "seconds")


def scope_of(root: str | os.PathLike[str], fingerprint: str, include_all: bool) -> str:
    """Which stored run a new run of the same tree with the same analyzers may reuse (one each)."""
    where = str(Path(root).resolve())
    return hashlib.sha256(f"{where}\0{fingerprint}\0{include_all}".encode()).hexdigest()


def tree_digest(fingerprint: str, files: Iterable[SourceFile], keys: dict[str, str],
                skipped: Iterable[dict[str, str]]) -> str:
    """Everything a run's tables depend on: file keys (path, bytes, analyzers), modules, skipped."""
    digest = hashlib.sha256(fingerprint.encode())
    for f in files:
        digest.update(f"\0{f.rel}\0{f.module}\0{keys[f.rel]}".encode("utf-8", "surrogateescape"))
    for s in skipped:
        digest.update(f"\1{s['path']}\0{s['reason']}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def pack(tables: dict[str, Any], graph: Any) -> bytes:
    """The tables and graph as stored for the next run (pickle keeps plugin columns' types)."""
    return pickle.dumps((tables, graph), protocol=pickle.HIGHEST_PROTOCOL)


def unpack(blob: bytes) -> tuple[dict[str, Any], Any]:
    """The stored tables and graph; raises if they no longer load (pandas upgraded…)."""
    tables, graph = pickle.loads(blob)
    return tables, graph


def reused_summary(stored: dict[str, Any], *, run_id: str, root: str, files: int) -> dict[str, Any]:
    """The stored summary as this run's: every file from the cache, nothing analysed or sent."""
    per_run = {"run_id": run_id, "root": root, "analysed": 0, "cached": files, "tasks": 0}
    return {key: per_run.get(key, value) for key, value in stored.items() if key != "seconds"}


def atomic_write(target: Path, write: Callable[[Path], Any]) -> None:
    """Write through a temporary file renamed over ``target``: a failed or interrupted export
    leaves the previous file (or none), never a half-written one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_summary(folder: Path, summary: dict[str, Any]) -> str:
    """``summary.json`` (what the run's ``--json`` prints, without ``outputs``)."""
    text = json.dumps(summary, indent=2, default=str) + "\n"
    atomic_write(folder / "summary.json", lambda tmp: tmp.write_text(text))
    return str(folder / "summary.json")


def folder_key(out: str | os.PathLike[str]) -> str:
    return str(Path(out).expanduser().resolve())


def _stamps(paths: Iterable[Path]) -> dict[str, list[int]] | None:
    found: dict[str, list[int]] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            return None
        found[path.name] = [st.st_size, st.st_mtime_ns]
    return found


def export_record(digest: str, root: str, warm: bool, outputs: dict[str, str]) -> dict[str, Any]:
    """What an export wrote: the input digest, the root as named (the report shows it), whether
    every file came from the cache (the ``cached`` column and the report say so), and each
    file's size and mtime, so that a file touched since is written again."""
    folder = Path(outputs["summary"]).parent
    names = [n for n in outputs if n not in ("summary", "report")]
    written = [folder / f"{n}.{ext}" for n in names for ext in ("csv", "parquet")] + [folder / "report.html"]
    return {"digest": digest, "root": root, "warm": warm, "tables": names, "stamps": _stamps(written)}


def reuse_export(record: dict[str, Any] | None, digest: str, root: str, out: str,
                 summary: dict[str, Any]) -> dict[str, str] | None:
    """The outputs of an earlier export to ``out`` of this very input by a fully cached run, with
    ``summary.json`` rewritten for this run; None when anything differs (then export anew)."""
    if not record or (record.get("digest"), record.get("root"), record.get("warm")) != (digest, root, True):
        return None
    folder = Path(out)
    names = list(record.get("tables", []))
    written = [folder / f"{n}.{ext}" for n in names for ext in ("csv", "parquet")] + [folder / "report.html"]
    if record.get("stamps") is None or _stamps(written) != record["stamps"]:
        return None
    outputs = {n: str(folder / f"{n}.parquet") for n in names}
    outputs["summary"] = write_summary(folder, summary)
    outputs["report"] = str(folder / "report.html")
    return outputs

"""Run an analysis: discover, consult the cache, batch the misses onto the cluster, assemble
pandas tables and the import graph."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pandas as pd

from caelum_dask import config, events
from caelum_dask.analysis.batching import batch_by_size
from caelum_dask.analysis.cache import ResultCache, file_key
from caelum_dask.analysis.discovery import SourceFile, discover
from caelum_dask.analysis.graph import graph_summary, import_graph, module_table
from caelum_dask.analysis.loader import AnalyzerSpec, make_spec
from caelum_dask.analysis.tasks import analyze_batch

Progress = Callable[[int, int], None]  # (files done, files to analyse)

COLUMNS = {
    "files": ["path", "module", "bytes", "sha256", "cached", "status"],
    "functions": ["path", "module", "name", "fullname", "kind", "classname", "lineno", "endline",
                  "col_offset", "complexity", "rank"],
    "imports": ["path", "module", "target", "names", "level", "lineno", "resolved"],
    "findings": ["path", "module", "analyzer", "code", "message", "severity", "line", "col"],
    "errors": ["path", "stage", "message", "line"],
    "skipped": ["path", "reason"],
}


@dataclass
class AnalysisResult:
    """Everything one run produced. ``tables`` holds files, functions, imports, findings,
    errors, skipped, modules and any table a plugin declared."""

    run_id: str
    root: str
    tables: dict[str, pd.DataFrame]
    graph: nx.DiGraph
    summary: dict[str, Any]
    stats: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


def analyze(
    path: str | Path,
    *,
    client: Any = None,
    scheduler: str | None = None,
    analyzers: list[str] | tuple[str, ...] | None = None,
    plugins: list[str] | tuple[str, ...] = (),
    options: dict[str, dict[str, Any]] | None = None,
    include_all: bool = False,
    use_cache: bool = True,
    cache_path: str | Path | None = None,
    batch_bytes: int | None = None,
    time_limit: float | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> AnalysisResult:
    """Analyse every Python file under ``path`` on the cluster and return the tables.

    ``client`` is used as given; otherwise one is opened with :func:`caelum_dask.connect`
    (``scheduler`` address or the configured/embedded one) only if some file missed the cache.
    """
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex[:12]
    files, skipped = discover(path, include_all=include_all)
    spec = make_spec(analyzers, plugins, options)
    fingerprint = spec.fingerprint()
    contents = {f.rel: Path(f.abspath).read_bytes() for f in files}
    keys = {f.rel: file_key(f.rel, contents[f.rel], fingerprint) for f in files}

    cache = ResultCache(cache_path) if use_cache else None
    hits = cache.get_many(keys.values()) if cache else {}
    results: dict[str, dict[str, Any]] = {f.rel: hits[keys[f.rel]] for f in files if keys[f.rel] in hits}
    from_cache = set(results)
    misses = [f for f in files if f.rel not in results]
    stats = {"files": len(files), "cached": len(results), "analysed": len(misses), "tasks": 0}

    try:
        if misses:
            stats["tasks"] = _run_on_cluster(run_id, misses, contents, keys, spec, results, cache, client,
                                             scheduler, batch_bytes, time_limit, progress, len(files))
    finally:
        if cache:
            cache.close()
    result = _assemble(run_id, str(path), files, skipped, contents, results, stats, from_cache)
    result.summary["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _run_on_cluster(run_id: str, misses: list[SourceFile], contents: dict[str, bytes], keys: dict[str, str],
                    spec: AnalyzerSpec, results: dict[str, dict[str, Any]], cache: ResultCache | None,
                    client: Any, scheduler: str | None, batch_bytes: int | None, time_limit: float | None,
                    progress: Progress | None, n_files: int) -> int:
    from distributed import as_completed

    from caelum_dask.cluster import client_scope

    with client_scope(client, scheduler) as client:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        target = int(batch_bytes or config.get("analysis.batch-bytes"))
        batches = batch_by_size(misses, [f.size for f in misses], target_bytes=target,
                                min_batches=8 * n_workers)
        limit = time_limit if time_limit is not None else config.get("analysis.file-time-limit")
        events.emit(events.ANALYSIS, "run-started", sink=client, run_id=run_id, files=n_files,
                    tasks=len(batches))
        futures = {}
        for index, batch in enumerate(batches):
            items = [(f.rel, f.module, f.is_package, contents[f.rel]) for f in batch]
            future = client.submit(analyze_batch, run_id, items, spec, limit,
                                   key=f"caelum-analyze-{run_id}-{index:05d}", pure=False,
                                   priority=len(batches) - index)
            futures[future] = batch
        done = 0
        if progress:
            progress(0, len(misses))
        for future in as_completed(list(futures)):
            batch = futures.pop(future)
            try:
                rows = future.result()
            except Exception as exc:  # the task itself failed (e.g. killed too often)
                rows = [(f.rel, _failed(f"task failed: {type(exc).__name__}: {exc}")) for f in batch]
            else:
                if cache:
                    cache.put_many((keys[rel], data) for rel, data in rows
                                   if not any(e["stage"] == "timeout" for e in data["errors"]))
            results.update(rows)
            done += len(batch)
            if progress:
                progress(done, len(misses))
        return len(batches)


def _failed(message: str) -> dict[str, Any]:
    return {"file": {"status": "error"}, "tables": {}, "errors": [{"stage": "task", "message": message, "line": None}]}


def _frame(rows: list[dict[str, Any]], name: str) -> pd.DataFrame:
    columns = COLUMNS.get(name, ["path", "module"])
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    ordered = [c for c in columns if c in frame.columns] + [c for c in frame.columns if c not in columns]
    frame = frame[ordered]
    sort = [c for c in ("path", "lineno", "line", "col_offset", "name") if c in frame.columns]
    return frame.sort_values(sort, kind="stable", ignore_index=True) if len(frame) and sort else frame


def _assemble(run_id: str, root: str, files: list[SourceFile], skipped: list[dict[str, str]],
              contents: dict[str, bytes], results: dict[str, dict[str, Any]], stats: dict[str, int],
              from_cache: set[str]) -> AnalysisResult:
    rows: dict[str, list[dict[str, Any]]] = {"files": [], "errors": []}
    for f in files:
        data = results[f.rel]
        base = {"path": f.rel, "module": f.module}
        rows["files"].append({**base, "bytes": f.size, "sha256": hashlib.sha256(contents[f.rel]).hexdigest(),
                              "cached": f.rel in from_cache, **data["file"]})
        for table, table_rows in data["tables"].items():
            rows.setdefault(table, []).extend({**base, **r} for r in table_rows)
        rows["errors"].extend({"path": f.rel, **e} for e in data["errors"])
    tables = {name: _frame(r, name) for name, r in rows.items()}
    for name in ("functions", "imports", "findings"):
        tables.setdefault(name, _frame([], name))
    tables["skipped"] = _frame(skipped, "skipped")
    graph, tables["imports"] = import_graph(tables["files"], tables["imports"])
    tables["modules"] = module_table(graph)
    result = AnalysisResult(run_id, root, tables, graph, {}, stats)
    result.summary = summarize(result)
    events.emit(events.ANALYSIS, "run-finished", run_id=run_id, files=stats["files"],
                errors=int(result.summary["errors"]), cached=stats["cached"])
    return result


def summarize(result: AnalysisResult) -> dict[str, Any]:
    """A small JSON-able summary (what ``--json`` prints and the workflow step returns)."""
    t = result.tables
    files, functions, findings = t["files"], t["functions"], t["findings"]
    worst = functions.sort_values(["complexity", "path"], ascending=[False, True]).head(10) if len(functions) else functions
    largest = files.sort_values(["loc", "path"], ascending=[False, True]).head(10) if "loc" in files else files.head(0)
    return {
        "run_id": result.run_id,
        "root": result.root,
        "files": int(len(files)),
        "analysed": int(result.stats.get("analysed", 0)),
        "cached": int(result.stats.get("cached", 0)),
        "tasks": int(result.stats.get("tasks", 0)),
        "skipped": int(len(t["skipped"])),
        "errors": int(files["status"].eq("error").sum()) if len(files) else 0,
        "error_files": [{"path": r.path, "stage": r.stage, "message": r.message}
                        for r in t["errors"].head(20).itertuples()],
        "lines": int(files["loc"].fillna(0).sum()) if "loc" in files else 0,
        "sloc": int(files["sloc"].fillna(0).sum()) if "sloc" in files else 0,
        "functions": int(len(functions)),
        "mean_complexity": round(float(functions["complexity"].mean()), 3) if len(functions) else 0.0,
        "ranks": {k: int(v) for k, v in functions["rank"].value_counts().sort_index().items()} if len(functions) else {},
        "mean_mi": round(float(files["mi"].mean()), 3) if "mi" in files and files["mi"].notna().any() else None,
        "worst_functions": [
            {"path": r.path, "name": r.fullname, "lineno": int(r.lineno), "complexity": int(r.complexity), "rank": r.rank}
            for r in worst.itertuples()
        ],
        "largest_files": [{"path": r.path, "loc": int(r.loc)} for r in largest.itertuples() if r.loc == r.loc],
        "findings": {k: int(v) for k, v in findings["code"].value_counts().sort_index().items()} if len(findings) else {},
        "imports": graph_summary(result.graph, t["modules"]),
    }

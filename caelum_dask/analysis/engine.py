"""Run an analysis: discover, consult the cache, batch the misses onto the cluster, assemble
pandas tables and the import graph.

What the run is told comes as :class:`~caelum_dask.analysis.options.AnalysisOptions`, resolved
on the caller (its configuration, never a worker's), and the values a task needs (the file time
limit, the analyzer options) travel with the task. How far the run is goes to ``progress`` as
:class:`~caelum_dask.progress.ProgressEvent` (``job="analyze"``): files done of all files
(cached ones count as done at once), files with errors as ``failed``, and status lines for
the cache hits and the batches.
"""

from __future__ import annotations

import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caelum_dask import events, keys
from caelum_dask.analysis import snapshot
from caelum_dask.analysis.batching import batch_by_size, figure_for, learning, target_bytes, unlearned_bytes
from caelum_dask.analysis.cache import ResultCache, file_key
from caelum_dask.analysis.discovery import SourceFile, discover
from caelum_dask.analysis.loader import AnalyzerSpec, make_spec
from caelum_dask.analysis.options import AnalysisOptions, given
from caelum_dask.progress import ProgressCallback, ProgressEvent, status
from caelum_dask.results import Result

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

JOB = "analyze"
#: error stages whose rows are not cached (the next run tries the file again)
NOT_CACHED = ("timeout", "task")

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
class AnalysisResult(Result):
    """Everything one run produced. ``tables`` holds files, functions, imports, findings,
    errors, skipped, modules and any table a plugin declared; ``outputs`` the files written
    when the run was given an ``out`` folder.

    A result reused from an unchanged tree's previous run (:meth:`deferred`) loads ``tables``
    and ``graph`` on first access: the summary is all ``caelum analyze`` prints, and loading
    them means importing pandas and networkx.
    """

    run_id: str
    root: str
    tables: dict[str, pd.DataFrame] = field(metadata={"json": False})
    graph: nx.DiGraph = field(metadata={"json": False})
    summary: dict[str, Any]
    stats: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def deferred(cls, run_id: str, root: str, summary: dict[str, Any], stats: dict[str, int],
                 load: Callable[[], tuple[dict[str, pd.DataFrame], nx.DiGraph]]) -> AnalysisResult:
        """A result whose ``tables`` and ``graph`` come from ``load()`` when first used."""
        result = cls.__new__(cls)
        result.__dict__.update(run_id=run_id, root=root, summary=summary, stats=stats, outputs={}, _load=load)
        return result

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with its tables (a deferred loader does not travel)."""
        if "_load" in self.__dict__:
            self.__getattr__("tables")
        return dict(self.__dict__)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        if "_load" in state and name in ("tables", "graph"):
            state["tables"], state["graph"] = state["_load"]()
            del state["_load"]
            return state[name]
        if name.startswith("_") or name in ("tables", "graph"):
            raise AttributeError(name)
        tables = self.tables if "_load" in state or "tables" in state else {}
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def to_dict(self) -> dict[str, Any]:
        """The published JSON (``--json``, MCP, the workflow step): the summary, plus
        ``outputs`` when the tables were exported — the shape ``caelum analyze`` always printed."""
        summary = dict(self.summary)
        if self.outputs:
            summary["outputs"] = dict(self.outputs)
        return summary


@dataclass
class _Tally:
    """Files done and failed so far, sent to the caller's ``progress`` as they change."""

    run_id: str
    total: int
    callback: ProgressCallback | None
    done: int = 0
    failed: int = 0
    detail: dict[str, int] = field(default_factory=dict)

    def add(self, rows: Mapping[str, dict[str, Any]] | list[tuple[str, dict[str, Any]]]) -> None:
        items = rows.items() if isinstance(rows, Mapping) else rows
        for _, data in items:
            self.done += 1
            self.failed += bool(data["errors"])
        self.emit()

    def say(self, message: str) -> None:
        """A status line of this run (nothing counted)."""
        if self.callback is not None:
            self.callback(status(JOB, message, run_id=self.run_id))

    def emit(self) -> None:
        if self.callback is not None:
            self.callback(ProgressEvent(job=JOB, done=self.done, total=self.total, failed=self.failed,
                                        run_id=self.run_id, detail=dict(self.detail)))


@dataclass(frozen=True)
class _Input:
    """What a run found: the files, the skipped ones, their bytes and cache keys, the digest."""

    root: str
    files: list[SourceFile]
    skipped: list[dict[str, str]]
    contents: dict[str, bytes]
    keys: dict[str, str]
    scope: str
    digest: str


def analyze(
    path: str | Path,
    options: AnalysisOptions | Mapping[str, Mapping[str, Any]] | None = None,
    *,
    client: Any = None,
    scheduler: str | None = None,
    analyzers: list[str] | tuple[str, ...] | None = None,
    plugins: list[str] | tuple[str, ...] | None = None,
    include_all: bool | None = None,
    use_cache: bool | None = None,
    cache_path: str | Path | None = None,
    batch_bytes: int | None = None,
    time_limit: float | None = None,
    max_file_bytes: int | None = None,
    out: str | Path | None = None,
    progress: ProgressCallback | None = None,
    run_id: str | None = None,
) -> AnalysisResult:
    """Analyse every Python file under ``path`` on the cluster and return the tables.

    ``options`` says what to run (:class:`AnalysisOptions`); a keyword given here goes over
    it, and what neither says comes from ``caelum.analysis.*``. For the callers written before
    the options existed, a plain mapping as ``options`` is the analyzers' options
    (``plugin_options``). ``client`` is used as given; otherwise one is opened with
    :func:`caelum_dask.connect` (``scheduler`` address or the configured/embedded one) only if
    some file missed the cache. With ``out`` the tables are exported there (``outputs``).
    When nothing changed since the tree's last run (same files, bytes, analyzers), that run's
    summary and tables are reused and an export it left in ``out`` is kept.
    """
    opts = _options(options, analyzers=analyzers, plugins=plugins, include_all=include_all,
                    use_cache=use_cache, cache_path=cache_path, batch_bytes=batch_bytes,
                    time_limit=time_limit, max_file_bytes=max_file_bytes, out=out)
    started = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex[:12]
    files, skipped = discover(path, include_all=opts.include_all, max_bytes=int(opts.max_file_bytes))
    spec = make_spec(opts.analyzers, tuple(opts.plugins), opts.merged_plugin_options())
    fingerprint = spec.fingerprint()
    contents = {f.rel: Path(f.abspath).read_bytes() for f in files}
    file_keys = {f.rel: file_key(f.rel, contents[f.rel], fingerprint) for f in files}
    found = _Input(str(path), files, skipped, contents, file_keys,
                   snapshot.scope_of(path, fingerprint, bool(opts.include_all)),
                   snapshot.tree_digest(fingerprint, files, file_keys, skipped))
    cache = ResultCache(opts.cache_path) if opts.use_cache else None
    run = None
    try:
        stored = cache.get_run(found.scope, found.digest) if cache else None
        if stored is not None and cache is not None:
            result, run = _reuse(run_id, found, stored, cache.path, progress), None
        else:
            result, run = _compute(run_id, found, spec, opts, cache, client, scheduler, progress)
        result.summary["seconds"] = round(time.perf_counter() - started, 3)
        if opts.out:
            result.outputs = _export(result, opts.out, found, cache)
    finally:
        if cache:
            cache.flush(run)  # this run's rows, tables and export: one transaction
            cache.close()
    return result


def _reuse(run_id: str, found: _Input, stored: dict[str, Any], cache_path: Path,
           progress: ProgressCallback | None) -> AnalysisResult:
    """This run as the tree's previous one (nothing changed): its summary now, its tables on use."""
    n = len(found.files)
    stats = {"files": n, "cached": n, "analysed": 0, "tasks": 0}
    summary = snapshot.reused_summary(stored, run_id=run_id, root=found.root, files=n)
    tally = _Tally(run_id, n, progress, detail={"cached": n})
    tally.say(f"{n} files ({len(found.skipped)} skipped): {n} from the cache, 0 to analyse")
    tally.done, tally.failed = n, int(summary.get("errors", 0))
    tally.emit()
    _finished(run_id, n, tally.failed, n)
    return AnalysisResult.deferred(run_id, found.root, summary, stats, lambda: _stored_tables(found, cache_path))


def _stored_tables(found: _Input, cache_path: Path) -> tuple[dict[str, pd.DataFrame], nx.DiGraph]:
    """The stored run's tables (``cached`` now true for every file), or, if they are gone or no
    longer load (another pandas), the same tables assembled again from the cached rows."""
    cache = ResultCache(cache_path)
    try:
        blob = cache.get_run_tables(found.scope, found.digest)
        try:
            tables, graph = snapshot.unpack(blob) if blob is not None else (None, None)
        except Exception:  # stored by other library versions
            tables = None
        if tables is None:
            hits = cache.get_many(found.keys.values())
            rows = _Rows(found.files, found.contents)
            rows.add(((f.rel, hits[found.keys[f.rel]]) for f in found.files), cached=True)
            tables, graph = _tables(found.files, found.skipped, rows)
    finally:
        cache.close()
    tables["files"] = tables["files"].assign(cached=True)
    return tables, graph


def _compute(run_id: str, found: _Input, spec: AnalyzerSpec, opts: AnalysisOptions, cache: ResultCache | None,
             client: Any, scheduler: str | None, progress: ProgressCallback | None,
             ) -> tuple[AnalysisResult, tuple[str, str, dict[str, Any], bytes] | None]:
    """The cache hits, the misses analysed on the cluster (their rows staged in the cache), the
    tables assembled; and what to store for the next run when every file's rows are cacheable."""
    hits = cache.get_many(found.keys.values()) if cache else {}
    results = {f.rel: hits[found.keys[f.rel]] for f in found.files if found.keys[f.rel] in hits}
    misses = [f for f in found.files if f.rel not in results]
    stats = {"files": len(found.files), "cached": len(results), "analysed": len(misses), "tasks": 0}
    tally = _Tally(run_id, len(found.files), progress, detail={"cached": len(results)})
    found_line = (f"{len(found.files)} files ({len(found.skipped)} skipped): {len(results)} from the cache, "
                  f"{len(misses)} to analyse")
    if not misses:  # with work to do, said once the cluster answers (a bad address is one line)
        tally.say(found_line)
    tally.add(results)
    rows = _Rows(found.files, found.contents)
    rows.add(results.items(), cached=True)
    if misses:
        work = _Work(run_id, misses, found.contents, found.keys, spec, opts)
        stats["tasks"] = _run_on_cluster(work, rows, cache, client, scheduler, tally, found_line)
    tables, graph = _tables(found.files, found.skipped, rows)
    result = AnalysisResult(run_id, found.root, tables, graph, {}, stats)
    result.summary = summarize(result)
    _finished(run_id, stats["files"], int(result.summary["errors"]), stats["cached"])
    keep = cache is not None and rows.complete
    return result, (found.scope, found.digest, result.summary, snapshot.pack(tables, graph)) if keep else None


def _finished(run_id: str, files: int, errors: int, cached: int) -> None:
    """The run-finished event, to the client or worker around, if any (without distributed
    imported there is none: a run with every file cached never imports it)."""
    if "distributed" in sys.modules:
        events.emit(events.ANALYSIS, "run-finished", run_id=run_id, files=files, errors=errors, cached=cached)


def _export(result: AnalysisResult, out: str, found: _Input, cache: ResultCache | None) -> dict[str, str]:
    """Export the tables to ``out``, or keep what an earlier export of this very input left there."""
    warm = result.stats.get("analysed", 0) == 0 and result.stats.get("cached", 0) == len(found.files)
    folder = snapshot.folder_key(out)
    if cache and warm:
        kept = snapshot.reuse_export(cache.get_export(folder), found.digest, found.root, out, result.summary)
        if kept is not None:
            return kept
    from caelum_dask.analysis.report import export

    outputs = export(result, out)
    if cache:
        cache.stage_export(folder, snapshot.export_record(found.digest, found.root, warm, outputs))
    return outputs


def _options(options: AnalysisOptions | Mapping[str, Mapping[str, Any]] | None, **keywords: Any) -> AnalysisOptions:
    """The run's resolved options: ``options``, the keywords given over it, the config under both."""
    if isinstance(options, Mapping):  # the analyzers' options, as ``options=`` meant before
        keywords.setdefault("plugin_options", options)
        options = None
    for name in ("cache_path", "out"):
        if keywords.get(name) is not None:
            keywords[name] = str(keywords[name])
    opts: AnalysisOptions = given(options, AnalysisOptions, **keywords)
    opts.validate()
    return opts


@dataclass(frozen=True)
class _Work:
    """What the cluster part of a run needs: the files that missed the cache and the options."""

    run_id: str
    misses: list[SourceFile]
    contents: dict[str, bytes]
    keys: dict[str, str]
    spec: AnalyzerSpec
    options: AnalysisOptions


def _run_on_cluster(work: _Work, results: _Rows, cache: ResultCache | None,
                    client: Any, scheduler: str | None, tally: _Tally, found_line: str) -> int:
    """Submit the batches, fold each one's rows in as it finishes (while the others still run);
    returns the number of tasks."""
    from distributed import as_completed

    from caelum_dask.cluster import client_scope

    with client_scope(client, scheduler) as client:
        tally.say(found_line)
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        unlearned = unlearned_bytes(int(work.options.batch_bytes), sum(f.size for f in work.misses), n_workers,
                                    work.options.batches_per_worker)
        target = target_bytes(client, _figure(work.spec), unlearned, work.options.batch_seconds)
        batches = batch_by_size(work.misses, [f.size for f in work.misses],
                                target_bytes=target, min_batches=8 * n_workers)
        events.emit(events.ANALYSIS, "run-started", sink=client, run_id=work.run_id, files=tally.total,
                    tasks=len(batches))
        tally.say(f"{len(work.misses)} files in {len(batches)} batches on {n_workers} workers")
        futures = _submit(client, work, batches)
        _import_table_libraries()  # while the workers run, not after the last batch
        tally.detail.update(batches=len(batches), batches_done=0)
        for future in as_completed(list(futures)):
            rows = _batch_rows(future, futures.pop(future), work.keys, cache)
            results.add(rows, cached=False)
            tally.detail["batches_done"] += 1
            tally.add(rows)
        return len(batches)


def _import_table_libraries() -> None:
    """Import pandas and networkx, which the tables and the import graph need at the end of a
    run (a cold ``caelum analyze`` process has not imported them: 0.4 s), while the workers
    analyse the first batches."""
    import networkx  # noqa: F401
    import pandas  # noqa: F401


def _submit(client: Any, work: _Work, batches: list[list[SourceFile]]) -> dict[Any, list[SourceFile]]:
    """One task per batch; the file bytes, the analyzers and the time limit travel with it."""
    from caelum_dask.analysis.tasks import analyze_batch  # the worker side: an unchanged re-run never needs it

    limit = float(work.options.time_limit or 0)
    futures = {}
    for index, batch in enumerate(batches):
        items = [(f.rel, f.module, f.is_package, work.contents[f.rel]) for f in batch]
        with keys.kind("analysis"), learning(_figure(work.spec), sum(f.size for f in batch)):
            future = client.submit(analyze_batch, work.run_id, items, work.spec, limit,
                                   key=keys.task_key("analyze_batch", work.run_id, index), pure=False,
                                   priority=len(batches) - index)
        futures[future] = batch
    return futures


def _figure(spec: AnalyzerSpec) -> str:
    """The learned seconds-per-byte figure of this analyzer set."""
    return figure_for(spec.builtins, [p.digest for p in spec.plugins])


def _batch_rows(future: Any, batch: list[SourceFile], keys: dict[str, str],
                cache: ResultCache | None) -> list[tuple[str, dict[str, Any]]]:
    """A finished batch's rows (cached unless timed out), or an error row per file if the task failed."""
    try:
        rows = future.result()
    except Exception as exc:  # the task itself failed (e.g. killed too often)
        return [(f.rel, _failed(f"task failed: {type(exc).__name__}: {exc}")) for f in batch]
    if cache:
        cache.stage((keys[rel], data) for rel, data in rows
                    if not any(e["stage"] in NOT_CACHED for e in data["errors"]))
    return rows


def _failed(message: str) -> dict[str, Any]:
    return {"file": {"status": "error"}, "tables": {}, "errors": [{"stage": "task", "message": message, "line": None}]}


def _frame(rows: list[dict[str, Any]], name: str) -> pd.DataFrame:
    import pandas as pd

    columns = COLUMNS.get(name, ["path", "module"])
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)
    ordered = [c for c in columns if c in frame.columns] + [c for c in frame.columns if c not in columns]
    frame = frame[ordered]
    sort = [c for c in ("path", "lineno", "line", "col_offset", "name") if c in frame.columns]
    return frame.sort_values(sort, kind="stable", ignore_index=True) if len(frame) and sort else frame


class _Rows:
    """Every file's table rows with its path, module (and file facts) merged in, built as the
    batches arrive so that only the DataFrames are left to make after the last one."""

    def __init__(self, files: list[SourceFile], contents: dict[str, bytes]) -> None:
        self.files = {f.rel: f for f in files}
        self.contents = contents
        self.by_file: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.complete = True  # every file's rows can be cached (none timed out, no task failed)

    def add(self, pairs: Iterable[tuple[str, dict[str, Any]]], *, cached: bool) -> None:
        for rel, data in pairs:
            f = self.files[rel]
            base = {"path": rel, "module": f.module}
            file_row = {**base, "bytes": f.size, "sha256": hashlib.sha256(self.contents[rel]).hexdigest(),
                        "cached": cached, **data["file"]}
            tables: dict[str, list[dict[str, Any]]] = {"files": [file_row]}
            for table, table_rows in data["tables"].items():
                tables[table] = [{**base, **r} for r in table_rows]
            tables["errors"] = [{"path": rel, **e} for e in data["errors"]]
            self.complete = self.complete and not any(e["stage"] in NOT_CACHED for e in data["errors"])
            self.by_file[rel] = tables

    def tables(self, order: list[SourceFile]) -> dict[str, list[dict[str, Any]]]:
        """All rows per table, files in ``order`` (tables in the order they first appear)."""
        rows: dict[str, list[dict[str, Any]]] = {"files": [], "errors": []}
        for f in order:
            for table, table_rows in self.by_file[f.rel].items():
                rows.setdefault(table, []).extend(table_rows)
        return rows


def _tables(files: list[SourceFile], skipped: list[dict[str, str]],
            rows: _Rows) -> tuple[dict[str, pd.DataFrame], nx.DiGraph]:
    """The run's DataFrames and import graph from every file's rows."""
    from caelum_dask.analysis.graph import import_graph, module_table

    tables = {name: _frame(r, name) for name, r in rows.tables(files).items()}
    for name in ("functions", "imports", "findings"):
        tables.setdefault(name, _frame([], name))
    tables["skipped"] = _frame(skipped, "skipped")
    graph, tables["imports"] = import_graph(tables["files"], tables["imports"])
    tables["modules"] = module_table(graph)
    return tables, graph


def summarize(result: AnalysisResult) -> dict[str, Any]:
    """A small JSON-able summary (what ``--json`` prints and the workflow step returns)."""
    from caelum_dask.analysis.graph import graph_summary

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

"""The per-file pipeline: decode once, parse once per parser, run every enabled analyzer.

Parsers are chosen by the enabled analyzers: ``source`` analyzers get the decoded text,
``ast`` analyzers share one ``ast.parse``, ``cst`` analyzers share one libcst parse and one
batched traversal, with metadata providers resolved only if one of them declares them.
A file that cannot be decoded or parsed becomes an error row; the other files go on.
"""

from __future__ import annotations

import ast
import io
import time
import tokenize
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from caelum_dask.analysis.collector import collector_paused
from caelum_dask.analysis.limits import AnalysisTimeout, call_with_limit
from caelum_dask.analysis.plugin import Analyzer

if TYPE_CHECKING:
    from caelum_dask.analysis.cst import CSTAnalyzer

ORDER = {"source": 0, "ast": 1, "cst": 2, "none": 3}


@dataclass
class FileContext:
    """What an analyzer sees of the file it analyses, and where its rows go."""

    path: str
    module: str
    is_package: bool
    data: bytes
    options: dict[str, dict[str, Any]]
    source: str = ""
    shared: dict[str, Any] = field(default_factory=dict)
    file_row: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_row(self, table: str, fields: dict[str, Any]) -> None:
        if table == "files":
            self.file_row.update(fields)
        else:
            self.tables.setdefault(table, []).append(fields)

    def error(self, stage: str, message: str, line: int | None = None) -> None:
        self.errors.append({"stage": stage, "message": message, "line": line})


def decode(data: bytes) -> str:
    """Decode like Python does: BOM / PEP 263 coding cookie, else UTF-8."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def order_analyzers(classes: list[type[Analyzer]]) -> list[type[Analyzer]]:
    """Parser order (source, ast, cst, derived), keeping ``requires`` after what they need."""
    ordered = sorted(classes, key=lambda c: ORDER.get(c.parser, 3))
    names = {c.name for c in ordered}
    return [c for c in ordered if all(r in names for r in c.requires)]


def analyze_file(path: str, module: str, is_package: bool, data: bytes,
                 analyzers: list[type[Analyzer]], options: dict[str, dict[str, Any]],
                 time_limit: float | None = None) -> dict[str, Any]:
    """All rows for one file: ``{"file": {...}, "tables": {...}, "errors": [...]}``.

    The cyclic garbage collector is paused meanwhile (:mod:`~caelum_dask.analysis.collector`:
    it found nothing to free in an AST and cost ~40 % of the radon metrics' time)."""
    ctx = FileContext(path, module, is_package, data, options)
    started = time.perf_counter()
    try:
        with collector_paused():
            call_with_limit(lambda: _run(ctx, analyzers), time_limit)
    except AnalysisTimeout as exc:
        ctx.error("timeout", str(exc))
    except RecursionError:
        ctx.error("analyze", "too deeply nested to analyse (RecursionError)")
    ctx.file_row["seconds"] = time.perf_counter() - started
    ctx.file_row["status"] = "error" if ctx.errors else "ok"
    return {"file": ctx.file_row, "tables": ctx.tables, "errors": ctx.errors}


def _run(ctx: FileContext, analyzers: list[type[Analyzer]]) -> None:
    try:
        ctx.source = decode(ctx.data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        ctx.error("decode", f"cannot decode the file: {exc}")
        return
    done: set[str] = set()
    tree: ast.Module | None = None
    by_parser: dict[str, list[type[Analyzer]]] = {}
    for cls in order_analyzers(analyzers):
        by_parser.setdefault(cls.parser, []).append(cls)

    if by_parser.get("ast"):  # parse first: a file Python cannot parse is one error row
        try:
            tree = ast.parse(ctx.source, filename=ctx.path)
        except SyntaxError as exc:
            ctx.error("parse", f"{exc.msg} (line {exc.lineno})", exc.lineno)
            return
        except ValueError as exc:  # e.g. null bytes
            ctx.error("parse", str(exc))
            return
    for cls in by_parser.get("source", []):
        _guarded(ctx, cls, lambda a: a.analyze(ctx.source), done)
    for cls in by_parser.get("ast", []):
        _guarded(ctx, cls, lambda a: a.analyze(tree), done)
    if by_parser.get("cst"):
        _run_cst(ctx, by_parser["cst"], done)
    for cls in by_parser.get("none", []):
        if all(r in done for r in cls.requires):
            _guarded(ctx, cls, lambda a: a.analyze(), done)


def _guarded(ctx: FileContext, cls: type[Analyzer], call: Any, done: set[str]) -> None:
    try:
        call(cls(ctx))
    except (AnalysisTimeout, RecursionError):
        raise
    except SyntaxError as exc:
        ctx.error("parse", f"{cls.name}: {exc.msg if hasattr(exc, 'msg') else exc}", getattr(exc, "lineno", None))
    except Exception as exc:  # a plugin bug must not lose the run
        ctx.error("analyzer", f"{cls.name}: {type(exc).__name__}: {exc}")
    else:
        done.add(cls.name)


def _run_cst(ctx: FileContext, classes: list[type[Analyzer]], done: set[str]) -> None:
    import libcst
    from libcst import MetadataWrapper

    try:
        module = libcst.parse_module(ctx.source)
    except libcst.ParserSyntaxError as exc:
        ctx.error("parse", f"libcst: {exc.message} (line {exc.raw_line})", exc.raw_line)
        return
    visitors: list[CSTAnalyzer] = []
    for cls in classes:
        try:
            visitors.append(cls(ctx))  # type: ignore[arg-type]
        except Exception as exc:
            ctx.error("analyzer", f"{cls.name}: {type(exc).__name__}: {exc}")
    try:
        MetadataWrapper(module, unsafe_skip_copy=True).visit_batched(visitors)
        for visitor in visitors:
            visitor.finish()
    except (AnalysisTimeout, RecursionError):
        raise
    except Exception as exc:
        ctx.error("analyzer", f"{'+'.join(v.name for v in visitors)}: {type(exc).__name__}: {exc}")
        return
    done.update(v.name for v in visitors)

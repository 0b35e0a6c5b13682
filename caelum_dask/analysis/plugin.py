"""The analyzer plugin API.

An analyzer is a small class that declares which tables it writes (``tables``), which parser it
needs (``parser``), and a ``version`` that is part of the cache key. Two flavours:

* :class:`CSTAnalyzer` — a libcst visitor (``visit_Call``, ``leave_FunctionDef`` …) for
  anything that needs the concrete tree: comments, exact formatting, qualified names through
  libcst metadata. Declare ``METADATA_DEPENDENCIES`` as with any libcst visitor; providers are
  resolved only when an enabled analyzer asks for them, once per file for all analyzers.
* :class:`ASTAnalyzer` — works on Python's ``ast`` (several times faster than libcst); the
  radon metrics are defined on it.

Every file is parsed at most once per parser, and only by the parsers that enabled analyzers
need. An analyzer reports through its :class:`FileContext`::

    class NoAsserts(CSTAnalyzer):
        name = "no-asserts"
        tables = ("findings",)
        METADATA_DEPENDENCIES = (PositionProvider,)

        def visit_Assert(self, node):
            self.finding(node, "ASSERT", "assert in library code")

Plugins live in files loaded by path (``caelum analyze --plugins analyzers/``) through
:mod:`caelum_dask.usercode`, like workflow files and report definitions; every class in
such a file that subclasses one of these bases and sets ``name`` is an analyzer.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any, ClassVar

from caelum_dask.errors import InvalidInput

if TYPE_CHECKING:
    from caelum_dask.analysis.cst import CSTAnalyzer
    from caelum_dask.analysis.pipeline import FileContext

CORE_TABLES = ("files", "functions", "imports", "findings")


class Analyzer:
    """Common declaration of every analyzer (built-in or plugin)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    parser: ClassVar[str] = "ast"  # "source" (text/tokenize only), "ast" or "cst"
    tables: ClassVar[tuple[str, ...]] = ("findings",)
    requires: ClassVar[tuple[str, ...]] = ()  # analyzers whose ctx.shared values it reads
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, ctx: "FileContext") -> None:
        self.ctx = ctx
        self.options: dict[str, Any] = {**self.default_options, **ctx.options.get(self.name, {})}

    def row(self, table: str, **fields: Any) -> None:
        """Add one row to ``table`` (declared in ``tables``); ``files`` fields merge into the file row."""
        if table not in self.tables:
            raise InvalidInput(
                f"analyzer {self.name!r} wrote to table {table!r} it does not declare in `tables`"
            )
        self.ctx.add_row(table, fields)

    def finding(self, node: Any, code: str, message: str, *, severity: str = "warning",
                line: int | None = None, col: int | None = None) -> None:
        """Add one finding at ``node`` (a libcst or ast node) or at an explicit line/column."""
        if line is None:
            line, col = self._position(node)
        self.row("findings", analyzer=self.name, code=code, message=message, severity=severity,
                 line=line, col=col)

    def _position(self, node: Any) -> tuple[int | None, int | None]:
        lineno = getattr(node, "lineno", None)
        return lineno, getattr(node, "col_offset", None)


class ASTAnalyzer(Analyzer):
    """An analyzer over Python's ``ast`` tree: implement :meth:`analyze`."""

    parser: ClassVar[str] = "ast"

    def analyze(self, tree: ast.Module) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class SourceAnalyzer(Analyzer):
    """An analyzer over the decoded source text only (tokenize-level metrics)."""

    parser: ClassVar[str] = "source"

    def analyze(self, source: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def analyzer_classes(namespace: dict[str, Any]) -> list[type[Analyzer]]:
    """The analyzers a plugin module defines (classes with a ``name`` of their own)."""
    found = []
    for value in namespace.values():
        if (isinstance(value, type) and issubclass(value, Analyzer)
                and value not in (Analyzer, ASTAnalyzer, SourceAnalyzer)
                and value.__dict__.get("name")):
            found.append(value)
    return found


def __getattr__(name: str) -> Any:
    """``CSTAnalyzer`` on first use: it subclasses libcst's visitor, and importing libcst costs
    more than a whole unchanged re-run of ``caelum analyze`` (which never needs it)."""
    if name == "CSTAnalyzer":
        from caelum_dask.analysis.cst import CSTAnalyzer

        return CSTAnalyzer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

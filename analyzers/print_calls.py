"""print() calls in library code (not tests, examples, scripts or ``__main__`` blocks).

The call is recognised by its qualified name (``builtins.print``) through libcst metadata, so
a local function or import named ``print`` is not reported.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import libcst as cst
import libcst.matchers as m
from libcst.metadata import PositionProvider, QualifiedNameProvider

from caelum_dask.analysis.plugin import CSTAnalyzer

NOT_LIBRARY_DIRS = {"tests", "test", "testing", "examples", "scripts", "benchmarks", "docs", "tools"}
MAIN_GUARD = m.If(test=m.Comparison(left=m.Name("__name__"),
                                    comparisons=[m.ComparisonTarget(comparator=m.SimpleString())]))


class PrintCalls(CSTAnalyzer):
    """A finding for each ``print(...)`` in library modules."""

    name = "print-calls"
    version = "1"
    tables = ("findings",)
    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        path = PurePosixPath(ctx.path)
        self.library = not (
            set(path.parts[:-1]) & NOT_LIBRARY_DIRS
            or path.name in ("__main__.py", "setup.py", "conftest.py")
            or path.name.startswith("test_")
        )
        self.in_main = 0

    def visit_If(self, node: cst.If) -> None:
        if m.matches(node, MAIN_GUARD):
            self.in_main += 1

    def leave_If(self, original_node: cst.If) -> None:
        if m.matches(original_node, MAIN_GUARD):
            self.in_main -= 1

    def visit_Call(self, node: cst.Call) -> None:
        if not self.library or self.in_main:
            return
        names = {q.name for q in self.get_metadata(QualifiedNameProvider, node.func, set())}
        if "builtins.print" in names:
            self.finding(node, "PRINT", "print() in library code; use logging or return the text")

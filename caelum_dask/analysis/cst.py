"""The libcst analyzer base, apart from :mod:`caelum_dask.analysis.plugin` so that only runs
with a CST analyzer import libcst (``from caelum_dask.analysis.plugin import CSTAnalyzer``
still works: the plugin module hands this class out on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import libcst
from libcst.metadata import PositionProvider

from caelum_dask.analysis.plugin import Analyzer

if TYPE_CHECKING:
    from caelum_dask.analysis.pipeline import FileContext


class CSTAnalyzer(Analyzer, libcst.BatchableCSTVisitor):
    """A libcst visitor analyzer; all CST analyzers of a file share one traversal."""

    parser: ClassVar[str] = "cst"

    def __init__(self, ctx: "FileContext") -> None:
        Analyzer.__init__(self, ctx)
        libcst.BatchableCSTVisitor.__init__(self)

    def _position(self, node: Any) -> tuple[int | None, int | None]:
        if PositionProvider in self.get_inherited_dependencies():
            pos = self.get_metadata(PositionProvider, node, None)
            if pos is not None:
                return pos.start.line, pos.start.column
        return None, None

    def finish(self) -> None:
        """Called after the traversal (e.g. to emit totals)."""

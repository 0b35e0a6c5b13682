"""TODO/FIXME debt: every marker comment becomes a finding and a row of the ``debt`` table.

Needs the concrete syntax tree: comments do not exist in Python's ``ast``.
Run: ``caelum analyze PATH --plugins analyzers/``.
"""

from __future__ import annotations

import re

import libcst as cst
from libcst.metadata import PositionProvider

from caelum_dask.analysis.plugin import CSTAnalyzer

MARKER = re.compile(r"#\s*(TODO|FIXME|XXX|HACK)\b[:(]?\s*(.*)", re.IGNORECASE)


class TodoComments(CSTAnalyzer):
    """One finding per TODO/FIXME/XXX/HACK comment, with its text."""

    name = "todo-comments"
    version = "1"
    tables = ("findings", "debt")
    METADATA_DEPENDENCIES = (PositionProvider,)

    def visit_Comment(self, node: cst.Comment) -> None:
        match = MARKER.match(node.value)
        if not match:
            return
        kind, text = match.group(1).upper(), match.group(2).strip()
        line, col = self._position(node)
        self.finding(node, kind, text or f"{kind} without a description", severity="info")
        self.row("debt", kind=kind, text=text, line=line, col=col)

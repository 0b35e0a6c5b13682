"""Report definitions: user files in ``bi/`` loaded by path and shipped to workers by value.

A definition is a plain Python file::

    TITLE = "Weekly team report"
    SINCE = "90d"                                  # default window (--since overrides)
    SOURCES = ["git", "tests"]                     # collectors to run (default: all)
    TABLES = ["activity", "churn", "ownership"]    # built-in tables (caelum_dask.bi.metrics.BUILDERS)

    def tables(data, built):                       # optional: derived tables
        return {"top_authors": built["activity"].groupby("author")["commits"].sum().nlargest(5).reset_index()}

    def plots(tables):                             # optional: Bokeh models for the HTML report
        return [...]

It is user code, not installed on the workers: :mod:`caelum_dask.usercode` loads it (as for
workflow files and analyzer plugins) so its functions travel by value with the aggregation
task, and a broken file is one ``FILE:LINE: PROBLEM — WHAT TO DO`` line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from caelum_dask import usercode
from caelum_dask.bi.collect import ALL_SOURCES
from caelum_dask.bi.metrics import BUILDERS


@dataclass
class ReportDefinition:
    """What a report file declares."""

    name: str
    path: str
    title: str
    since: str | None
    sources: tuple[str, ...]
    tables: list[str]
    module: ModuleType | None = field(default=None, repr=False)

    def extra_tables(self, data: Any, built: dict[str, Any]) -> dict[str, Any]:
        fn = getattr(self.module, "tables", None)
        return dict(fn(data, built) or {}) if callable(fn) else {}

    def plots(self, tables: dict[str, Any]) -> list[Any] | None:
        fn = getattr(self.module, "plots", None)
        return list(fn(tables) or []) if callable(fn) else None


DECLARES = ("TITLE", "SINCE", "SOURCES", "TABLES", "tables", "plots")
"""The names a report definition sets; a file that sets none of them is not one."""


def load(path: str | Path) -> ReportDefinition:
    """Load a report definition file; one clear :class:`InvalidInput` for any mistake in it."""
    module = usercode.load(path, usercode.REPORT)
    path = Path(path)
    if not any(hasattr(module, name) for name in DECLARES):
        raise usercode.bad_file(path, f"defines no report (expected at least one of {', '.join(DECLARES)} "
                                "at top level, e.g. `TABLES = [\"activity\"]`)", "add them and run again")
    tables = list(getattr(module, "TABLES", list(BUILDERS)))
    unknown = [t for t in tables if t not in BUILDERS]
    if unknown:
        raise usercode.bad_file(path, f"unknown table(s) {', '.join(unknown)} in TABLES",
                                f"use known tables: {', '.join(BUILDERS)}")
    sources = tuple(getattr(module, "SOURCES", ALL_SOURCES))
    bad = [s for s in sources if s not in ALL_SOURCES]
    if bad:
        raise usercode.bad_file(path, f"unknown source(s) {', '.join(bad)} in SOURCES",
                                f"use known sources: {', '.join(ALL_SOURCES)}")
    return ReportDefinition(name=path.stem, path=str(path), title=str(getattr(module, "TITLE", path.stem)),
                            since=getattr(module, "SINCE", None), sources=sources, tables=tables,
                            module=module)

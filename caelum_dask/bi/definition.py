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

It is user code, not installed on the workers: the module is registered with cloudpickle
"by value", so its functions travel with the aggregation task.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle

from caelum_dask.bi.collect import ALL_SOURCES
from caelum_dask.bi.metrics import BUILDERS
from caelum_dask.errors import InvalidInput


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


def load(path: str | Path) -> ReportDefinition:
    """Load a report definition file; one clear :class:`InvalidInput` for any mistake in it."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"report definition {path} does not exist (expected a file like bi/weekly_team.py)")
    name = re.sub(r"\W", "_", path.stem)
    mod_name = f"caelum_bi_report_{name}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"report definition {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code: report the first line, not a traceback
        sys.modules.pop(mod_name, None)
        raise InvalidInput(f"report definition {path} failed to load: {type(exc).__name__}: {exc}") from None
    cloudpickle.register_pickle_by_value(module)
    tables = list(getattr(module, "TABLES", list(BUILDERS)))
    unknown = [t for t in tables if t not in BUILDERS]
    if unknown:
        raise InvalidInput(f"report definition {path}: unknown table(s) {', '.join(unknown)}; "
                           f"known: {', '.join(BUILDERS)}")
    sources = tuple(getattr(module, "SOURCES", ALL_SOURCES))
    bad = [s for s in sources if s not in ALL_SOURCES]
    if bad:
        raise InvalidInput(f"report definition {path}: unknown source(s) {', '.join(bad)}; "
                           f"known: {', '.join(ALL_SOURCES)}")
    return ReportDefinition(name=path.stem, path=str(path), title=str(getattr(module, "TITLE", path.stem)),
                            since=getattr(module, "SINCE", None), sources=sources, tables=tables,
                            module=module)

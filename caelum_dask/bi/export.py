"""Exports: CSV and Parquet per table, one Excel workbook, one self-contained HTML report.

The HTML embeds BokehJS inline (``bokeh.embed.file_html`` with ``INLINE`` resources), so the
file opens anywhere without network access.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div
from bokeh.plotting import figure
from bokeh.resources import INLINE

MAX_HTML_ROWS = 200
_TABLE_CSS = ("<style>table{border-collapse:collapse;font:12px sans-serif}"
              "th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style>")


def _excel_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Excel has no time zones: datetimes become naive UTC."""
    frame = frame.copy()
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            frame[name] = frame[name].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame


def write_csv_parquet(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, dict[str, str]]:
    files: dict[str, dict[str, str]] = {}
    for name, frame in tables.items():
        csv, parquet = out / f"{name}.csv", out / f"{name}.parquet"
        frame.to_csv(csv, index=False)
        frame.to_parquet(parquet, index=False)
        files[name] = {"csv": str(csv), "parquet": str(parquet)}
    return files


def sheet_names(names: list[str]) -> dict[str, str]:
    """Excel sheet names: at most 31 characters, none of ``[]:*?/\\``, unique."""
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"[\[\]:*?/\\]", "_", name)[:31] or "table"
        candidate, n = base, 1
        while candidate in out.values():
            n += 1
            candidate = f"{base[:31 - len(str(n)) - 1]}~{n}"
        out[name] = candidate
    return out


def write_excel(tables: dict[str, pd.DataFrame], path: Path) -> str:
    """One sheet per table (names from :func:`sheet_names`)."""
    names = sheet_names(list(tables))
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in tables.items():
            _excel_safe(frame).to_excel(writer, sheet_name=names[name], index=False)
    return str(path)


def _bar(frame: pd.DataFrame, x: str, y: str, title: str, top: int = 15) -> Any:
    data = frame.nlargest(top, y) if len(frame) > top else frame
    labels = [str(v) for v in data[x]]
    fig = figure(y_range=list(reversed(labels)), height=max(200, 22 * len(labels) + 60), width=800,
                 title=title, toolbar_location=None, tools="hover", tooltips=f"@y: @right")
    fig.hbar(y="y", right="right", height=0.7, source=ColumnDataSource({"y": labels, "right": list(data[y])}))
    return fig


def _weekly(frame: pd.DataFrame, y: str, title: str) -> Any:
    weekly = frame.groupby("week", as_index=False)[y].sum()
    fig = figure(x_axis_type="datetime", height=260, width=800, title=title, toolbar_location=None,
                 tools="hover", tooltips=f"@x{{%F}}: @top", )
    fig.hover.formatters = {"@x": "datetime"}
    width = 5 * 24 * 3600 * 1000
    weeks = pd.to_datetime(weekly["week"], utc=True).dt.tz_localize(None)
    fig.vbar(x="x", top="top", width=width, source=ColumnDataSource({"x": weeks, "top": weekly[y]}))
    return fig


def default_plots(tables: dict[str, pd.DataFrame]) -> list[Any]:
    """Plots for the built-in tables that are present and not empty."""
    plots: list[Any] = []
    makers: dict[str, Callable[[pd.DataFrame], Any]] = {
        "activity": lambda t: _weekly(t, "commits", "Commits per week"),
        "churn": lambda t: _bar(t.assign(label=t["repo"] + ":" + t["path"]), "label", "churn",
                                "Churn (lines added + deleted), top files"),
        "hotspots": lambda t: _bar(t.assign(label=t["repo"] + ":" + t["path"]), "label", "score",
                                   "Hotspots: revisions × complexity"),
        "authors": lambda t: _bar(t, "author", "commits", "Commits per author"),
        "ownership": lambda t: _bar(t.assign(label=t["repo"] + ":" + t["directory"]), "label",
                                    "lines_added", "Lines added per directory"),
        "code_health": lambda t: _weekly(t, "churn", "Churn per week"),
        "deployments": lambda t: _bar(t.assign(label=t["repo"] + ":" + t["tag"]), "label", "commits",
                                      "Commits per deployment"),
        "test_health": lambda t: _bar(t, "test", "max_duration", "Slowest tests (s)"),
    }
    for name, make in makers.items():
        frame = tables.get(name)
        if frame is not None and len(frame):
            try:
                plots.append(make(frame))
            except (KeyError, ValueError, TypeError):
                continue  # a reshaped custom table with a built-in name: show it as a table only
    return plots


def write_html(tables: dict[str, pd.DataFrame], path: Path, title: str, plots: list[Any] | None,
               notes: list[str]) -> str:
    parts: list[Any] = [Div(text=f"<h1>{html.escape(title)}</h1>")]
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        parts.append(Div(text=f"<h3>Collection notes</h3><ul>{items}</ul>", width=900))
    parts += plots if plots is not None else default_plots(tables)
    for name, frame in tables.items():
        shown = frame.head(MAX_HTML_ROWS).to_html(index=False, border=0, na_rep="")
        more = f"<p>{len(frame) - MAX_HTML_ROWS} more rows in {name}.csv</p>" if len(frame) > MAX_HTML_ROWS else ""
        parts.append(Div(text=f"{_TABLE_CSS}<h2>{html.escape(name)} ({len(frame)} rows)</h2>{shown}{more}",
                         width=1100))
    path.write_text(file_html(column(*parts), INLINE, title))
    return str(path)


def export_all(tables: dict[str, pd.DataFrame], out: Path, title: str, plots: list[Any] | None = None,
               notes: list[str] | None = None) -> dict[str, Any]:
    """Write every export under ``out``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    return {"tables": write_csv_parquet(tables, out),
            "excel": write_excel(tables, out / "report.xlsx"),
            "html": write_html(tables, out / "report.html", title, plots, notes or [])}

"""Write a run's tables (CSV + Parquet), summary.json and a self-contained HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, HoverTool
from bokeh.plotting import figure, from_networkx
from bokeh.resources import INLINE

from caelum_dask.analysis.snapshot import atomic_write, write_summary

if TYPE_CHECKING:
    from caelum_dask.analysis.engine import AnalysisResult

GRAPH_NODES = 150
_atomic = atomic_write  # the write-through-a-temporary-file helper, by its former name here (tests use it)


def export(result: "AnalysisResult", out: str | Path) -> dict[str, str]:
    """Write every table as ``<name>.csv`` and ``<name>.parquet``, ``summary.json`` and
    ``report.html`` under ``out``; returns the paths written."""
    folder = Path(out)
    html = html_report(result)  # built first: if it fails, nothing is written
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for name, frame in result.tables.items():
        atomic_write(folder / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
        atomic_write(folder / f"{name}.parquet", lambda tmp, f=frame: _parquet_safe(f).to_parquet(tmp, index=False))
        written[name] = str(folder / f"{name}.parquet")
    atomic_write(folder / "report.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))
    written["summary"] = write_summary(folder, result.summary)
    written["report"] = str(folder / "report.html")
    return written


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns with mixed types (e.g. plugin fields) become strings for Parquet."""
    fixed = frame.copy()
    for name in fixed.columns:
        if fixed[name].dtype == object:
            kinds = {type(v) for v in fixed[name].dropna()}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                fixed[name] = fixed[name].map(lambda v: None if v is None or v != v else str(v))
    return fixed


def html_report(result: "AnalysisResult") -> str:
    """One HTML file with inlined BokehJS: complexity distribution, worst functions, largest
    files and the import graph."""
    s = result.summary
    header = Div(text=(
        f"<h1>caelum analyze: {s['root']}</h1>"
        f"<p>{s['files']} files ({s['cached']} from cache), {s['lines']} lines, {s['functions']} "
        f"functions, mean complexity {s['mean_complexity']}, mean MI {s['mean_mi']}, "
        f"{s['errors']} files with errors, {s['skipped']} skipped, "
        f"{sum(s['findings'].values())} findings, {s['imports']['edges']} internal imports.</p>"
    ), width=900)
    plots = [header, _complexity_histogram(result.tables["functions"]),
             _worst_functions(result.tables["functions"]), _largest_files(result.tables["files"]),
             _graph_plot(result.graph, result.tables["modules"])]
    return file_html(column(*plots), INLINE, title=f"caelum analyze {s['root']}")


def _complexity_histogram(functions: pd.DataFrame) -> figure:
    counts = functions["complexity"].value_counts().sort_index() if len(functions) else pd.Series(dtype=int)
    source = ColumnDataSource({"cc": [int(v) for v in counts.index], "n": [int(v) for v in counts.values]})
    fig = figure(title="Cyclomatic complexity distribution (functions, methods, classes)",
                 width=900, height=300, x_axis_label="complexity", y_axis_label="blocks")
    fig.vbar(x="cc", top="n", width=0.8, source=source)
    fig.add_tools(HoverTool(tooltips=[("complexity", "@cc"), ("blocks", "@n")]))
    return fig


def _worst_functions(functions: pd.DataFrame, n: int = 20) -> figure:
    worst = functions.nlargest(n, "complexity") if len(functions) else functions
    labels = [f"{p}:{name}" for p, name in zip(worst["path"], worst["fullname"])][::-1]
    source = ColumnDataSource({"label": labels, "cc": list(worst["complexity"])[::-1],
                               "rank": list(worst["rank"])[::-1]})
    fig = figure(title=f"{n} most complex blocks", y_range=labels or [""], width=900,
                 height=max(250, 22 * len(labels)), x_axis_label="cyclomatic complexity")
    fig.hbar(y="label", right="cc", height=0.7, source=source)
    fig.add_tools(HoverTool(tooltips=[("block", "@label"), ("cc", "@cc"), ("rank", "@rank")]))
    return fig


def _largest_files(files: pd.DataFrame, n: int = 20) -> figure:
    top = files.nlargest(n, "loc") if "loc" in files and len(files) else files.head(0)
    labels = list(top["path"])[::-1]
    source = ColumnDataSource({"path": labels, "loc": list(top.get("loc", []))[::-1],
                               "mi": list(top.get("mi", pd.Series([None] * len(top))))[::-1]})
    fig = figure(title=f"{n} largest files (lines)", y_range=labels or [""], width=900,
                 height=max(250, 22 * len(labels)), x_axis_label="lines")
    fig.hbar(y="path", right="loc", height=0.7, source=source)
    fig.add_tools(HoverTool(tooltips=[("file", "@path"), ("lines", "@loc"), ("MI", "@mi")]))
    return fig


def _graph_plot(graph: nx.DiGraph, modules: pd.DataFrame) -> figure:
    """The import graph of the most central modules (spring layout)."""
    keep = list(modules.head(GRAPH_NODES)["module"]) if len(modules) else []
    sub = graph.subgraph(keep).copy()
    fig = figure(title=f"Import graph ({sub.number_of_nodes()} most central of {graph.number_of_nodes()} modules)",
                 width=900, height=700, x_range=(-1.2, 1.2), y_range=(-1.2, 1.2),
                 tools="pan,wheel_zoom,reset,save")
    if sub.number_of_nodes() == 0:
        return fig
    rendered = from_networkx(sub, nx.spring_layout(sub, seed=0, scale=1.0))
    fan_in = dict(zip(modules["module"], modules["fan_in"]))
    rendered.node_renderer.data_source.data["fan_in"] = [int(fan_in.get(n, 0)) for n in
                                                          rendered.node_renderer.data_source.data["index"]]
    rendered.node_renderer.glyph.size = 8
    fig.renderers.append(rendered)
    layout = rendered.layout_provider.graph_layout
    names = list(layout)
    fig.text(x=[layout[n][0] for n in names], y=[layout[n][1] for n in names],
             text=[n.rsplit(".", 1)[-1] for n in names], text_font_size="8pt",
             x_offset=5, y_offset=-2)
    fig.add_tools(HoverTool(tooltips=[("module", "@index"), ("fan-in", "@fan_in")]))
    return fig

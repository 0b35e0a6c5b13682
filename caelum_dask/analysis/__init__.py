"""Distributed code analysis: radon's metrics, structure, import graph and libcst plugins,
computed across the cluster and cached by content.

    from caelum_dask.analysis import analyze
    result = analyze("src/", plugins=["analyzers/"])
    result.functions.sort_values("complexity").tail()   # pandas DataFrames
    result.graph                                         # networkx import graph

The names are imported on first use: ``import caelum_dask.analysis.options`` (the CLI) and an
unchanged re-run must not pay for pandas, networkx, distributed or libcst.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"AnalysisResult": "caelum_dask.analysis.engine", "analyze": "caelum_dask.analysis.engine",
         "AnalysisOptions": "caelum_dask.analysis.options", "CodemodOptions": "caelum_dask.analysis.options",
         "ASTAnalyzer": "caelum_dask.analysis.plugin", "SourceAnalyzer": "caelum_dask.analysis.plugin",
         "CSTAnalyzer": "caelum_dask.analysis.cst"}


def __getattr__(name: str) -> Any:
    """The public API, imported on first use."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ASTAnalyzer", "AnalysisOptions", "AnalysisResult", "CSTAnalyzer", "CodemodOptions", "SourceAnalyzer",
           "analyze"]

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

from caelum_dask.lazy import lazy_getattr

_LAZY = {"AnalysisResult": "caelum_dask.analysis.engine", "analyze": "caelum_dask.analysis.engine",
         "AnalysisOptions": "caelum_dask.analysis.options", "CodemodOptions": "caelum_dask.analysis.options",
         "ASTAnalyzer": "caelum_dask.analysis.plugin", "SourceAnalyzer": "caelum_dask.analysis.plugin",
         "CSTAnalyzer": "caelum_dask.analysis.cst"}

__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = ["ASTAnalyzer", "AnalysisOptions", "AnalysisResult", "CSTAnalyzer", "CodemodOptions", "SourceAnalyzer",
           "analyze"]

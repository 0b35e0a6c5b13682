"""Distributed code analysis: radon's metrics, structure, import graph and libcst plugins,
computed across the cluster and cached by content.

    from caelum_dask.analysis import analyze
    result = analyze("src/", plugins=["analyzers/"])
    result.functions.sort_values("complexity").tail()   # pandas DataFrames
    result.graph                                         # networkx import graph
"""

from caelum_dask.analysis.engine import AnalysisResult, analyze
from caelum_dask.analysis.options import AnalysisOptions, CodemodOptions
from caelum_dask.analysis.plugin import ASTAnalyzer, CSTAnalyzer, SourceAnalyzer

__all__ = ["ASTAnalyzer", "AnalysisOptions", "AnalysisResult", "CSTAnalyzer", "CodemodOptions", "SourceAnalyzer",
           "analyze"]

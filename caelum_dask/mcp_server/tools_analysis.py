"""MCP tools of the code-analysis capability (same engine as `caelum analyze`)."""

from __future__ import annotations

import uuid
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from caelum_dask import config
from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.progress import event_reporter


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    @server.tool()
    @tool_errors
    def analyze_codebase(
        path: str,
        ctx: Context,
        out: str | None = None,
        plugins: list[str] | None = None,
        include_all: bool = False,
    ) -> dict[str, Any]:
        """Analyse the Python code under `path` on the cluster (radon metrics, structure, imports, plugins).

        Returns the summary of `caelum analyze --json` plus `report`, the folder holding CSV,
        Parquet, summary.json and report.html (default: a new folder under ~/.caelum/reports).
        """
        from caelum_dask.analysis.engine import analyze
        from caelum_dask.analysis.options import AnalysisOptions

        folder = out or str(config.home() / "reports" / f"analysis-{uuid.uuid4().hex[:8]}")
        options = AnalysisOptions.from_config(plugins=tuple(plugins or ()), include_all=include_all, out=folder)
        result = analyze(path, options, client=handle.client(), progress=event_reporter(ctx))
        summary = result.to_dict()
        summary["report"] = folder
        return summary

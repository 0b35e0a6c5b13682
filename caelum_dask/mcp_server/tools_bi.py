"""MCP tool of business intelligence (same engine as `caelum bi report`)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer

from caelum_dask import config
from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.progress import event_reporter


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    @server.tool()
    @tool_errors
    def bi_report(
        definition: str,
        ctx: Context,
        roots: list[str] | None = None,
        since: str | None = None,
        out: str | None = None,
        per: Literal["machine", "worker"] = "machine",
    ) -> dict[str, Any]:
        """Run a BI report definition (e.g. bi/weekly_team.py) over every machine's data.

        Collectors run where the data is (git history under the roots, test and analysis
        results, workflow runs); returns the `caelum bi report --json` summary with the export
        folder (CSV, Parquet, Excel, HTML; default: a new folder under ~/.caelum/reports).
        """
        from caelum_dask.bi.report import run_report

        folder = out or str(config.home() / "reports" / f"bi-{uuid.uuid4().hex[:8]}")
        result = run_report(definition, client=handle.client(), roots=roots, since=since, out=folder,
                            per=per, progress=event_reporter(ctx))
        return result.to_dict()

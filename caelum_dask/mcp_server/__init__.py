"""The MCP front door: the cluster's capabilities as Model Context Protocol tools.

Built on the official ``mcp`` SDK (``MCPServer``). Every tool calls the same engine function
the CLI calls, so an assistant and a person get the same answers and the same error messages.
"""

from caelum_dask.mcp_server.server import build_server

__all__ = ["build_server"]

"""Build the caelum MCP server: foundation tools, then one tool module per capability.

A capability's tools live in ``caelum_dask/mcp_server/tools_<name>.py`` with a
``register(server, handle)`` function; they are registered only when the capability's engine
is importable, so a tool for a capability that has not landed is absent, not a stub.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from caelum_dask import __version__
from caelum_dask.cluster import machines, status_report
from caelum_dask.errors import CaelumError
from caelum_dask.mcp_server.handle import ClusterHandle

logger = logging.getLogger(__name__)

# (tool module, engine module it needs)
CAPABILITY_TOOLS: tuple[tuple[str, str], ...] = (
    ("caelum_dask.mcp_server.tools_workflow", "caelum_dask.workflow"),
    ("caelum_dask.mcp_server.tools_analysis", "caelum_dask.analysis"),
    ("caelum_dask.mcp_server.tools_testing", "caelum_dask.testing"),
    ("caelum_dask.mcp_server.tools_llm", "caelum_dask.llm"),
    ("caelum_dask.mcp_server.tools_bi", "caelum_dask.bi"),
)

INSTRUCTIONS = (
    "caelum-dask: the machines of a developer's network as one Dask cluster. Use cluster_status "
    "to see machines and resources; the other tools run code analysis, sharded test suites, "
    "workflows, LLM calls on the pooled Ollama servers and BI reports on that cluster."
)


def tool_errors(func: Any) -> Any:
    """Turn a CaelumError into an MCP tool error carrying the CLI's one-line message."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CaelumError as exc:
            raise ToolError(str(exc)) from None

    return wrapper


def _present(module: str) -> bool:
    """Whether ``module`` is part of this copy of caelum_dask (a file or package beside this one).

    ``importlib.util.find_spec`` alone is not enough: an editable install of another checkout
    can answer for a capability this copy does not have, and importing its tools then fails.
    """
    from pathlib import Path

    import caelum_dask

    relative = module.split(".", 1)[1].replace(".", "/")
    return any((Path(root) / f"{relative}.py").is_file() or (Path(root) / relative / "__init__.py").is_file()
               for root in caelum_dask.__path__)


def build_server(scheduler: str | None = None, handle: ClusterHandle | None = None) -> MCPServer:
    """The MCP server for the cluster at ``scheduler`` (None: the embedded cluster)."""
    handle = handle or ClusterHandle(scheduler)

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[ClusterHandle]:
        try:
            yield handle
        finally:
            handle.close()

    server = MCPServer("caelum", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan)

    @server.tool()
    @tool_errors
    def cluster_status() -> dict[str, Any]:
        """The cluster: scheduler address, dashboard URL and every machine (same JSON as `caelum status --json`)."""
        return status_report(handle.client(), handle.scheduler)

    @server.tool()
    @tool_errors
    def list_machines(status: Literal["online", "busy", "offline"] | None = None) -> list[dict[str, Any]]:
        """Machines of the cluster (MachineNode dicts), optionally only those with this status."""
        nodes = machines(handle.client())
        return [n for n in nodes if status is None or n["status"] == status]

    @server.resource("caelum://machines", mime_type="application/json")
    def machines_resource() -> str:
        """The machine registry as JSON."""
        import json

        return json.dumps(machines(handle.client()), default=str)

    for tool_module, engine in CAPABILITY_TOOLS:
        if not (_present(engine) and _present(tool_module)):
            continue
        importlib.import_module(tool_module).register(server, handle)
    return server

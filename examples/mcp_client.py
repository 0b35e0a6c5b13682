"""Talk to `caelum mcp` the way an AI assistant does: with the official MCP SDK's client.

    python examples/mcp_client.py                 # starts `caelum mcp` over stdio itself
    python examples/mcp_client.py --scheduler tcp://10.0.0.5:8786

Lists the tools the server offers and calls cluster_status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def main(scheduler: str | None) -> int:
    args = ["-m", "caelum_dask", "mcp", "--transport", "stdio"]
    if scheduler:
        args += ["--scheduler", scheduler]
    async with Client(StdioServerParameters(command=sys.executable, args=args)) as client:
        tools = await client.list_tools()
        print("tools:", ", ".join(sorted(tool.name for tool in tools.tools)))
        result = await client.call_tool("cluster_status", {})
        if result.is_error:
            print("error:", result.content[0].text)
            return 1
        status = result.structured_content
        print(f"scheduler {status['scheduler']}, dashboard {status['dashboard']}")
        for node in status["machines"]:
            print(json.dumps({k: node[k] for k in ("id", "status", "platform")}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler", default=None)
    sys.exit(asyncio.run(main(parser.parse_args().scheduler)))

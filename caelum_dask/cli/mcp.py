"""`caelum mcp`: serve the cluster's capabilities to AI assistants over MCP."""

from __future__ import annotations

import logging
import os
import sys

import click

from caelum_dask.cli._options import scheduler_option, tls_option
from caelum_dask.errors import InvalidInput


@click.command(name="mcp")
@scheduler_option
@tls_option
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio for desktop assistants; http for streamable HTTP.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to bind (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="HTTP: port (0 picks a free one).")
@click.option("--token-env", default="CAELUM_MCP_TOKEN", show_default=True,
              help="HTTP: environment variable holding the bearer token clients must send (unset: no token).")
@click.option("--allow-host", "allowed_hosts", multiple=True,
              help="HTTP: extra Host header values to accept (e.g. the machine's LAN name); repeatable.")
def mcp_command(scheduler: str | None, tls: str | None, tls_name: str | None, transport: str, host: str, port: int, token_env: str,
                allowed_hosts: tuple[str, ...]) -> None:
    """Serve the cluster as an MCP server (tools: cluster_status, list_machines, and one set per capability).

    Logs go to stderr only; with stdio, stdout carries nothing but the protocol.
    """
    from caelum_dask.mcp_server import build_server
    from caelum_dask.mcp_server.handle import ClusterHandle
    from caelum_dask.mcp_server.http import serve_http

    token = os.environ.get(token_env) or None
    if transport == "http" and host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise InvalidInput(
            f"refusing to serve MCP on {host} without a token: set {token_env} (clients send "
            "'Authorization: Bearer <token>') or bind to 127.0.0.1"
        )
    # A malformed address or certificate folder fails now, not at the assistant's first tool call.
    if scheduler:
        from caelum_dask.cluster import check_address

        check_address(scheduler)
    from caelum_dask.security import resolve_security

    resolve_security(tls, tls_name)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    server = build_server(handle=ClusterHandle(scheduler, tls=tls, tls_name=tls_name))
    if transport == "stdio":
        server.run("stdio")
        return
    click.echo(f"caelum mcp: streamable HTTP on http://{host}:{port}/mcp"
               + (" (bearer token required)" if token else ""), err=True)
    serve_http(server, host, port, token, list(allowed_hosts))


COMMANDS = [mcp_command]

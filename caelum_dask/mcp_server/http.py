"""Serve the MCP server over streamable HTTP on loopback, with an optional bearer token.

The SDK's own DNS-rebinding protection checks Host/Origin (allowed hosts are configurable
for LAN use); the bearer token is a small ASGI wrapper around the SDK's Starlette app, since a
shared secret is all a developer's LAN needs (the SDK's OAuth machinery is for more).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings


class BearerTokenMiddleware:
    """Refuse every HTTP request without ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                body = json.dumps({"error": "missing or wrong bearer token"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def security_settings(host: str, port: int, allowed_hosts: list[str]) -> TransportSecuritySettings:
    """Host/Origin checks: loopback names always, plus the hosts the user allowed."""
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *(h if ":" in h else f"{h}:*" for h in allowed_hosts)]
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        hosts.append(f"{host}:*")
    origins = [f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts,
                                     allowed_origins=origins)


def http_app(server: MCPServer, host: str, port: int, token: str | None, allowed_hosts: list[str]) -> Any:
    """The ASGI app: the SDK's streamable-HTTP app at /mcp, behind the token when one is set."""
    app = server.streamable_http_app(transport_security=security_settings(host, port, allowed_hosts), host=host)
    return BearerTokenMiddleware(app, token) if token else app


def serve_http(server: MCPServer, host: str, port: int, token: str | None, allowed_hosts: list[str]) -> None:
    """Run until interrupted (uvicorn, as the SDK does)."""
    import uvicorn

    uvicorn.run(http_app(server, host, port, token, allowed_hosts), host=host, port=port, log_level="warning")

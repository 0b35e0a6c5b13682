"""MCP tools of the LLM pool (same router as `caelum llm serve` and `LLMPool`)."""

from __future__ import annotations

import threading
from typing import Any

from mcp.server.mcpserver import MCPServer

from caelum_dask.mcp_server.handle import ClusterHandle


class _PoolHolder:
    """One LLMPool per MCP server, created on first use over the server's Dask client."""

    def __init__(self, handle: ClusterHandle) -> None:
        self.handle = handle
        self._pool: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        from caelum_dask.llm.pool import LLMPool

        with self._lock:
            if self._pool is None:
                self._pool = LLMPool(self.handle.client())
                self.handle.on_close(self.close)
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    pool = _PoolHolder(handle)

    @server.tool()
    @tool_errors
    def llm_models() -> dict[str, Any]:
        """Models available on the pooled Ollama servers: per model, the backends having it and where it is loaded."""
        status = pool.get().status()
        return {"models": status["models"], "backends": status["backends"]}

    @server.tool()
    @tool_errors
    def llm_generate(model: str, prompt: str, session: str | None = None) -> dict[str, Any]:
        """Generate a completion with `model` on the best backend of the pool (Ollama /api/generate response)."""
        return dict(pool.get().generate(model, prompt, session=session))

    @server.tool()
    @tool_errors
    def llm_chat(model: str, messages: list[dict[str, str]], session: str | None = None) -> dict[str, Any]:
        """Chat with `model` (messages as Ollama's [{role, content}]); returns Ollama's /api/chat response."""
        return dict(pool.get().chat(model, messages, session=session))

    @server.tool()
    @tool_errors
    def llm_embed(model: str, input: list[str]) -> dict[str, Any]:
        """Embed each string of `input` with `model`; returns Ollama's /api/embed response."""
        return dict(pool.get().embed(model, input))

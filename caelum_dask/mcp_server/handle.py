"""One Dask client per MCP server, connected on first use.

Connecting lazily keeps the server up when the scheduler is down: each tool call then fails
with the same one-line error as the CLI, and succeeds once the scheduler is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from distributed import Client

from caelum_dask.cluster import connect


class ClusterHandle:
    """The Dask client the tools share (thread-safe; the SDK runs sync tools in threads)."""

    def __init__(self, scheduler: str | None = None, **connect_kwargs: Any) -> None:
        self.scheduler = scheduler
        self.connect_kwargs = connect_kwargs  # tls=, tls_name=, security=
        self._client: Client | None = None
        self._lock = threading.Lock()
        self._closers: list[Callable[[], None]] = []

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` when the server shuts down (pools and other per-server helpers)."""
        self._closers.append(closer)

    def client(self) -> Client:
        with self._lock:
            if self._client is None or self._client.status in ("closed", "closing"):
                self._client = connect(self.scheduler, **self.connect_kwargs)
            return self._client

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

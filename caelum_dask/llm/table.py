"""The pool's backend table and its ``caelum.llm`` events.

Why a module of its own: the table is refreshed on the pool's event loop, in the background,
whatever requests are doing — from the scheduler (workers' probe reports, see
:mod:`.discovery`) or, for a pool given ``backends=[urls]``, by probing those servers
directly. Requests only read the router it updates. Events are queued here and sent once per
refresh, off the request path (``client.log_event`` is a blocking call).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx

from caelum_dask import events
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import Backend
from caelum_dask.llm.router import Router

logger = logging.getLogger(__name__)

Message = dict[str, Any]

#: how many events a pool keeps in ``recent_events``
RECENT_EVENTS = 1000
#: the longest a caller waits for the first table (seconds); later it is always there
FIRST_TABLE_WAIT_S = 30.0


class EventLog:
    """The pool's events: the latest ones kept in memory, the unsent ones queued for the scheduler."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.recent: collections.deque[Message] = collections.deque(maxlen=RECENT_EVENTS)
        self._outbox: collections.deque[Message] = collections.deque()

    def record(self, event: str, **fields: Any) -> None:
        message = events.make_message(event, **fields)
        self.recent.append(message)
        if self.client is not None:
            self._outbox.append(message)

    @property
    def pending(self) -> bool:
        return bool(self._outbox)

    def flush(self) -> None:
        """Send the queued events (blocking); a closed client keeps them in ``recent`` only."""
        while self._outbox:
            message = self._outbox.popleft()
            try:
                self.client.log_event(events.LLM, message)
            except Exception:
                return


class BackendTable:
    """Keeps the router's backend table fresh: from the scheduler, or probing ``urls``.

    ``http`` gives the current event loop's httpx client (the transport's); ``ready`` is set
    after the first refresh, failed or not, so callers never wait longer than one refresh.
    """

    def __init__(self, client: Any, urls: list[str] | None, router: Router, log: EventLog,
                 http: Callable[[], httpx.AsyncClient], interval: float) -> None:
        self.client, self.urls, self.router, self.log = client, urls, router, log
        self._http, self.interval = http, interval
        self.ready = threading.Event()
        self.error: str | None = None
        self._last_summary: Any = None

    async def wait_ready(self) -> None:
        """Wait (off the event loop) for the first refresh."""
        if not self.ready.is_set():
            await anyio.to_thread.run_sync(self.ready.wait, FIRST_TABLE_WAIT_S, abandon_on_cancel=True)

    async def refresh_forever(self) -> None:
        """Runs on the pool's loop until cancelled: refresh, send events, sleep, repeat."""
        if self.client is not None and self.urls is None:
            try:
                await anyio.to_thread.run_sync(discovery.ensure_discovery, self.client, abandon_on_cancel=True)
            except Exception as exc:
                self.error = f"discovery: {exc}"
                logger.warning("caelum llm: %s", self.error)
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the scheduler went away: keep the last table
                self.error = str(exc)
                logger.warning("caelum llm: backend refresh failed: %s", exc)
            finally:
                self.ready.set()
            if self.log.pending and self.client is not None:
                await anyio.to_thread.run_sync(self.log.flush, abandon_on_cancel=True)
            await anyio.sleep(self.interval)

    async def refresh(self) -> list[Backend]:
        """Read the table once and hand it to the router."""
        if self.urls is not None:
            backends = await self._probe(self.urls)
        else:
            backends = await anyio.to_thread.run_sync(discovery.fetch_backends, self.client,
                                                      abandon_on_cancel=True)
        self.router.update(backends)
        self.error = None
        self._announce(backends)
        return backends

    async def _probe(self, urls: list[str]) -> list[Backend]:
        http = self._http()
        reports: list[Message] = [{} for _ in urls]

        async def one(i: int, url: str) -> None:
            reports[i] = await discovery.probe(http, url)

        async with anyio.create_task_group() as group:
            for i, url in enumerate(urls):
                group.start_soon(one, i, url)
        backends = discovery.merge_reports(
            {"machine": host_of(r["url"]), "hostname": host_of(r["url"]), "host": None,
             "worker": "", "backends": [r], "gpus": []} for r in reports)
        for backend in backends:
            backend.workers = []
        return backends

    def _announce(self, backends: list[Backend]) -> None:
        summary = [{"url": b.url, "machine": b.machine, "up": b.up, "models": sorted(b.models),
                    "loaded": sorted(b.loaded)} for b in backends]
        if summary != self._last_summary:
            self._last_summary = summary
            self.log.record("backends", backends=[
                {**s, "in_flight": self.router.health(s["url"])["in_flight"]} for s in summary])


def host_of(url: str) -> str:
    """A backend given by URL is named by host:port (several may share one host)."""
    return urlsplit(url).netloc or url


__all__ = ["BackendTable", "EventLog", "host_of"]

"""LLMPool: every machine's Ollama as one endpoint, from Python.

::

    from caelum_dask import connect
    from caelum_dask.llm import LLMPool

    with connect() as client, LLMPool(client) as pool:
        pool.generate("llama3.2", "Why is the sky blue?")["response"]
        for part in pool.chat("llama3.2", [{"role": "user", "content": "hi"}], stream=True):
            print(part["message"]["content"], end="")
        await pool.agenerate(...)                      # the same, async
        pool.map("llama3.2", prompts)                  # a batch as Dask tasks next to the GPUs

This module is the facade. Requests go straight from this process to the chosen Ollama
server over HTTP (:mod:`.transport`: the router picks the backend, one failover policy retries
elsewhere before any output was returned); the backend table is kept fresh in the background
(:mod:`.table`). All I/O is async: the async methods run on the caller's loop, the sync methods
run the same coroutines on an anyio blocking portal — one event-loop thread the pool owns,
started on first use and joined by :meth:`LLMPool.close` — which also refreshes the table and
sends the ``caelum.llm`` events.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from typing import Any

import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from caelum_dask.errors import InvalidInput
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import Backend
from caelum_dask.llm.errors import BackendError
from caelum_dask.llm.options import LLMOptions
from caelum_dask.llm.results import PoolStatus
from caelum_dask.llm.router import Router, RouterSettings
from caelum_dask.llm.speed import TokenRates
from caelum_dask.llm.table import FIRST_TABLE_WAIT_S, BackendTable, EventLog
from caelum_dask.llm.transport import Transport
from caelum_dask.progress import ProgressCallback

Message = dict[str, Any]
_END = object()  # the end of a stream read through the portal


class LLMPool:
    """The pool of Ollama backends of a Dask cluster (or of explicit ``backends`` URLs).

    ``client`` is a (synchronous) ``distributed.Client``; with neither ``client`` nor
    ``backends`` the pool connects with :func:`caelum_dask.connect` and owns that client.
    ``backends=["http://gpu-box:11434", …]`` probes those servers directly (no cluster; no
    ``map``). Everything else defaults to the ``caelum.llm.*`` configuration (``options``, or
    the keyword arguments, which win over it).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        backends: Sequence[str] | None = None,
        settings: RouterSettings | None = None,
        retries: int | None = None,
        refresh_interval: float | None = None,
        request_timeout: float | None = None,
        queue_timeout: float | None = None,
        options: LLMOptions | None = None,
    ) -> None:
        self._scope = contextlib.ExitStack()  # the client, when the pool connected it itself
        if client is None and backends is None:
            from caelum_dask.cluster import client_scope

            client = self._scope.enter_context(client_scope())
        if client is not None and getattr(client, "asynchronous", False):
            raise InvalidInput("LLMPool needs a synchronous distributed.Client (its async methods work from "
                               "any event loop); create the client without asynchronous=True")
        self.client = client
        given = {"retries": retries, "refresh_interval": refresh_interval, "request_timeout": request_timeout,
                 "queue_timeout": queue_timeout}
        self.options = replace(options or LLMOptions(), **{k: v for k, v in given.items() if v is not None}).resolved()
        self.router = Router(settings or self.options.router_settings())
        self._events = EventLog(client)
        urls = [discovery.parse_host(u) for u in backends] if backends is not None else None
        self._transport = Transport(self.router, self.options, self._events, self._await_ready)
        self._table = BackendTable(client, urls, self.router, self._events, self._transport.http,
                                   self.options.refresh_interval)
        self._portal_scope = contextlib.ExitStack()  # the blocking portal, once started
        self._portal: BlockingPortal | None = None
        self._refresher: Any = None  # the refresh task's concurrent.futures.Future
        self._start_lock = threading.Lock()
        self._closed = False
        self.speeds = TokenRates()  # tokens per second per model and machine, from the answers

    # -- settings, as attributes (read-only: they are the options) ------------------------------
    @property
    def retries(self) -> int:
        return int(self.options.retries)  # type: ignore[arg-type]

    @property
    def refresh_interval(self) -> float:
        return float(self.options.refresh_interval)  # type: ignore[arg-type]

    @property
    def request_timeout(self) -> float:
        return float(self.options.request_timeout)  # type: ignore[arg-type]

    @property
    def queue_timeout(self) -> float:
        return float(self.options.queue_timeout)  # type: ignore[arg-type]

    @property
    def recent_events(self) -> Any:
        """The pool's latest ``caelum.llm`` events (a bounded deque of messages)."""
        return self._events.recent

    @property
    def refresh_error(self) -> str | None:
        """Why the last refresh of the backend table failed (None when it worked)."""
        return self._table.error

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> LLMPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _start(self) -> BlockingPortal:
        """The pool's portal (its event-loop thread), started on first use with the refresher."""
        with self._start_lock:
            if self._closed:
                raise InvalidInput("this LLMPool is closed; create a new one")
            if self._portal is None:
                portal = self._portal_scope.enter_context(start_blocking_portal(name="caelum-llm-pool"))
                self._refresher = portal.start_task_soon(self._table.refresh_forever)
                self._portal = portal
            return self._portal

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the coroutine function ``func`` on the pool's loop and wait for its result."""
        return self._start().call(functools.partial(func, *args, **kwargs))

    def close(self) -> None:
        """Stop the refresher, close connections, join the loop thread, send pending events."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
        if self._portal is not None:
            self._refresher.cancel()
            with contextlib.suppress(Exception):
                self._portal.call(self._transport.close_http)
            self._portal_scope.close()  # stops the portal and joins its thread
            self._portal = None
        self._events.flush()
        with contextlib.suppress(Exception):  # the scheduler may be gone; the figures are a bonus
            self.speeds.send(self.client)
        self._scope.close()

    async def aclose(self) -> None:
        """:meth:`close`, from async code (this loop's connections are closed here)."""
        await self._transport.close_http()
        await anyio.to_thread.run_sync(self.close)

    # -- the backend table -------------------------------------------------------------------
    def refresh(self) -> list[Backend]:
        """Re-read the backend table now (it is refreshed every ``refresh_interval`` anyway)."""
        self._start()
        self._table.ready.wait(FIRST_TABLE_WAIT_S)
        return self._call(self._table.refresh)

    def backends(self) -> list[Backend]:
        """The current backend table (waits for the first refresh)."""
        self._start()
        self._table.ready.wait(FIRST_TABLE_WAIT_S)
        return self.router.backends

    async def _await_ready(self) -> None:
        """Wait, from any event loop, until the backend table was read once."""
        self._start()
        await self._table.wait_ready()

    def status(self) -> dict[str, Any]:
        """Backends (with in-flight counts, cooldowns), a per-model summary and the tokens per
        second seen per model and machine; JSON-able. (The speeds go to the scheduler's learned
        figures when the pool closes: this may be called from an event loop, which a blocking
        call to the scheduler would stall.)"""
        return PoolStatus.of(self.backends(), self.router, self.refresh_error, self.speeds.by_model()).to_dict()

    # -- requests ----------------------------------------------------------------------------
    async def arequest(self, path: str, body: Message, *, session: str | None = None) -> tuple[Message, Backend]:
        """POST ``body`` to ``path`` on the best backend for ``body["model"]``; retry on failure."""
        data, backend = await self._transport.request(path, body, session)
        self.speeds.note(body.get("model"), backend.machine, data)
        return data, backend

    def request(self, path: str, body: Message, *, session: str | None = None) -> tuple[Message, Backend]:
        """The sync twin of :meth:`arequest` (run on the pool's loop)."""
        return self._call(self._transport.request, path, body, session)

    async def astream(self, path: str, body: Message, *, session: str | None = None,
                      sse: bool = False) -> tuple[Backend, AsyncIterator[bytes]]:
        """Open a streaming request; returns the backend and its NDJSON lines (with ``\\n``).

        Failures before the first line are retried on other backends; errors are raised here,
        so an HTTP server can still answer with a proper status. A failure after output was
        sent becomes an ``{"error": …}`` line, as Ollama itself reports mid-stream errors.
        ``sse=True`` relays an OpenAI-compatible (``/v1/…``) server-sent-event stream instead,
        blank separator lines included.
        """
        return await self._transport.stream(path, body, session, sse)

    # -- the Ollama-shaped API ---------------------------------------------------------------
    async def agenerate(self, model: str, prompt: str = "", *, stream: bool = False,
                        session: str | None = None, **fields: Any) -> Any:
        """``/api/generate``; ``stream=True`` returns an async iterator of chunk dicts."""
        body = {"model": model, "prompt": prompt, **fields}
        return await self._acall("/api/generate", body, stream, session)

    async def achat(self, model: str, messages: Sequence[Message], *, stream: bool = False,
                    session: str | None = None, **fields: Any) -> Any:
        """``/api/chat``; ``stream=True`` returns an async iterator of chunk dicts."""
        body = {"model": model, "messages": list(messages), **fields}
        return await self._acall("/api/chat", body, stream, session)

    async def aembed(self, model: str, input: str | Sequence[str], *, session: str | None = None,
                     **fields: Any) -> Message:
        """``/api/embed``: ``{"embeddings": [[…], …], …}``."""
        return await self._acall("/api/embed", _embed_body(model, input, fields), False, session)

    async def _acall(self, path: str, body: Message, stream: bool, session: str | None) -> Any:
        if not stream:
            data, _backend = await self.arequest(path, {**body, "stream": False}, session=session)
            return data
        _backend, lines = await self.astream(path, body, session=session)
        return _parsed(lines)

    def generate(self, model: str, prompt: str = "", *, stream: bool = False,
                 session: str | None = None, **fields: Any) -> Any:
        """``/api/generate`` on the best backend; ``stream=True`` returns an iterator of chunks."""
        return self._sync("/api/generate", {"model": model, "prompt": prompt, **fields}, stream, session)

    def chat(self, model: str, messages: Sequence[Message], *, stream: bool = False,
             session: str | None = None, **fields: Any) -> Any:
        """``/api/chat`` on the best backend; ``stream=True`` returns an iterator of chunks."""
        return self._sync("/api/chat", {"model": model, "messages": list(messages), **fields}, stream, session)

    def embed(self, model: str, input: str | Sequence[str], *, session: str | None = None,
              **fields: Any) -> Message:
        """``/api/embed`` on the best backend."""
        return self.request("/api/embed", _embed_body(model, input, fields), session=session)[0]

    def _sync(self, path: str, body: Message, stream: bool, session: str | None) -> Any:
        """A sync call: the async one on the pool's loop; a stream is read there part by part."""
        parts = self._call(self._acall, path, body, stream, session)
        return self._iterate(parts) if stream else parts

    def _iterate(self, parts: AsyncIterator[Message]) -> Iterator[Message]:
        portal = self._start()
        try:
            while True:
                part = portal.call(_next_or_end, parts)
                if part is _END:
                    return
                yield part
        finally:
            if not self._closed:
                portal.call(parts.aclose)  # type: ignore[attr-defined]

    # -- aggregated views (for /api/tags, /api/ps, /api/version) -----------------------------
    def tags(self) -> Message:
        """``/api/tags`` over the pool: every model installed on an up backend, once."""
        seen: dict[str, Message] = {}
        for b in self.router.backends:
            if b.up:
                for name, info in b.models.items():
                    seen.setdefault(name, info)
        return {"models": list(seen.values())}

    def ps(self) -> Message:
        """``/api/ps`` over the pool: every loaded model of every up backend."""
        return {"models": [info for b in self.router.backends if b.up for info in b.loaded.values()]}

    def openai_models(self) -> Message:
        """``/v1/models`` over the pool (OpenAI's list shape, as Ollama serves it)."""
        now = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": now, "owned_by": "library"}
                                           for name in self.tags_names()]}

    def tags_names(self) -> list[str]:
        return [m.get("model") or m.get("name") for m in self.tags()["models"]]

    def version(self) -> str:
        """The oldest Ollama version in the pool: what every backend can do."""
        versions = [b.version for b in self.router.backends if b.up and b.version]
        if not versions:
            return "0.0.0"
        return min(versions, key=_version_key)

    # -- batch ---------------------------------------------------------------------------------
    def map(self, model: str, items: Sequence[Any], *, kind: str = "generate",
            progress: ProgressCallback | None = None, retries: int | None = None, **fields: Any) -> list[Message]:
        """Run one request per item as Dask tasks on the workers of machines serving ``model``.

        Results come back in order, one dict per item: ``{"index", "ok", "response" (Ollama's
        JSON), "error", "backend", "machine", "worker", "latency_s"}``. A failing backend's
        items are retried on other machines (``retries`` times); other failures are per item.
        ``progress`` gets a :class:`~caelum_dask.progress.ProgressEvent` (``job="llm"``) as
        items finish. See :func:`caelum_dask.llm.batch.run_map`.
        """
        from caelum_dask.llm.batch import run_map

        if self.client is None:
            raise InvalidInput("LLMPool.map needs a Dask cluster: create the pool with LLMPool(client)")
        results = run_map(self.client, model, items, kind=kind, progress=progress,
                          retries=self.retries if retries is None else retries,
                          request_timeout=self.request_timeout, fields=fields)
        return [item.to_dict() for item in results]


def _embed_body(model: str, input: str | Sequence[str], fields: dict[str, Any]) -> Message:
    return {"model": model, "input": input if isinstance(input, str) else list(input), **fields}


async def _next_or_end(parts: AsyncIterator[Message]) -> Any:
    """The next part, or ``_END`` (StopAsyncIteration does not cross the portal as a value)."""
    try:
        return await parts.__anext__()
    except StopAsyncIteration:
        return _END


async def _parsed(lines: AsyncIterator[bytes]) -> AsyncIterator[Message]:
    try:
        async for raw in lines:
            part = json.loads(raw)
            if part.get("error"):
                raise BackendError(str(part["error"]))
            yield part
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)

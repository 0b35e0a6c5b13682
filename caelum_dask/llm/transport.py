"""Requests to the pool's backends: ONE failover policy for plain and streaming requests.

Why one policy: the pool used to write the failover loop three times (sync, async, stream),
and each copy freed slots and cooled backends down slightly differently. Here
:meth:`Transport.failover` is the only loop: take a slot on the best backend (waiting up to
``queue_timeout`` when all are at their cap), make one *attempt*, and

* on a failure another backend may not have (connection refused, 5xx, 429, a stale "model
  not found", an error before the first streamed line) — :class:`Retry` — account for it,
  cool the backend down (not for a stale table) and try the next backend, ``retries`` times;
* on the caller's own mistake (4xx, :class:`BackendError`) or cancellation, free the slot and
  raise;
* on success return the attempt's value; a plain request is accounted at once, a stream when
  its reader is done with it (:meth:`Transport.relay`).

Sync callers run the same coroutines on the pool's blocking portal (see :mod:`.pool`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx

from caelum_dask.errors import InvalidInput
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import Backend
from caelum_dask.llm.errors import BackendError, ModelUnavailable, NoBackendAvailable
from caelum_dask.llm.options import LLMOptions
from caelum_dask.llm.router import Router
from caelum_dask.llm.table import EventLog

Message = dict[str, Any]
T = TypeVar("T")
#: one try on one backend; ``started`` is its ``perf_counter`` start
Attempt = Callable[[Backend, float], Awaitable[T]]

#: the longest the connect phase of a request may take (seconds), below the request timeout
CONNECT_TIMEOUT_S = 5.0
#: idle keep-alive connections kept per event loop
KEEPALIVE_CONNECTIONS = 64


class Retry(Exception):
    """A backend failed in a way another backend may not: try the next one.

    ``cool=False`` for a stale table (the backend lacks the model): no cooldown, but the model
    is forgotten there.
    """

    def __init__(self, reason: str, cool: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cool = cool


class Transport:
    """Chooses backends through the router and talks HTTP to them, on any event loop."""

    def __init__(self, router: Router, options: LLMOptions, log: EventLog,
                 ready: Callable[[], Awaitable[None]]) -> None:
        self.router, self.options, self.log = router, options, log
        self._ready = ready
        self._http: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._waiters: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        router.on_release(self._wake)

    # -- HTTP clients, one per event loop (httpx clients are bound to their loop) ---------------
    def http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._http.get(loop)
            if client is None:
                timeout = self.options.request_timeout
                client = self._http[loop] = httpx.AsyncClient(
                    timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout)),
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=KEEPALIVE_CONNECTIONS))
            return client

    async def close_http(self) -> None:
        """Close this event loop's client (the others belong to loops that may be gone)."""
        with self._lock:
            client = self._http.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # -- slots --------------------------------------------------------------------------------
    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter()

    async def acquire(self, model: str, exclude: list[str], session: str | None) -> Backend:
        """A slot on the best backend for ``model``; waits while every backend is at its cap."""
        await self._ready()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.options.queue_timeout
        while True:
            event = asyncio.Event()

            def waiter(event: asyncio.Event = event) -> None:
                loop.call_soon_threadsafe(event.set)

            with self._lock:
                self._waiters.add(waiter)
            try:
                backend = self.router.choose(model, exclude=exclude, session=session)
                if backend is not None:
                    return backend
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NoBackendAvailable(
                        f"every backend serving {model!r} stayed at its concurrency cap for "
                        f"{self.options.queue_timeout:g}s; raise caelum.llm.max-in-flight or add machines")
                try:
                    await asyncio.wait_for(event.wait(), left)
                except asyncio.TimeoutError:
                    pass
            finally:
                with self._lock:
                    self._waiters.discard(waiter)

    # -- the failover policy --------------------------------------------------------------------
    async def failover(self, model: str, session: str | None, attempt: Attempt[T]) -> tuple[T, Backend]:
        """Run ``attempt`` on the best backend, then on others while it raises :class:`Retry`."""
        tried: list[str] = []
        last: str | None = None
        for _try in range(self.options.retries + 1):
            try:
                backend = await self.acquire(model, tried, session)
            except (ModelUnavailable, NoBackendAvailable) as exc:
                raise _give_up(tried, last, exc) from None
            started = time.perf_counter()
            try:
                return await attempt(backend, started), backend
            except Retry as exc:
                last = exc.reason
                self.failed(backend, model, exc.reason, time.perf_counter() - started, cool=exc.cool)
                if not exc.cool:
                    self.router.forget_model(backend, model)
                tried.append(backend.url)
            except BaseException:  # the caller's mistake (BackendError) or cancellation: free the slot
                self.router.release(backend, model=model, ok=False, cool=False)
                raise
        raise NoBackendAvailable(f"model {model!r}: {len(tried)} backend(s) failed this request; last failure: {last}")

    def failed(self, backend: Backend, model: str, reason: str, latency: float, cool: bool = True) -> None:
        cooldown = self.router.release(backend, model=model, ok=False, error=reason, cool=cool)
        self.log.record("request-finished", backend=backend.url, machine=backend.machine, model=model,
                        latency_s=round(latency, 4), ok=False, error=reason)
        if cool:
            self.log.record("backend-down", backend=backend.url, machine=backend.machine, reason=reason,
                            cooldown_s=cooldown)

    def succeeded(self, backend: Backend, model: str, latency: float) -> None:
        self.router.release(backend, model=model, ok=True, latency_s=latency)
        self.log.record("request-finished", backend=backend.url, machine=backend.machine, model=model,
                        latency_s=round(latency, 4), ok=True)

    # -- the two kinds of attempt ---------------------------------------------------------------
    async def request(self, path: str, body: Message, session: str | None = None) -> tuple[Message, Backend]:
        """POST ``body`` to ``path`` on the best backend for ``body["model"]``; its JSON reply."""
        model = model_of(body)
        http = self.http()

        async def attempt(backend: Backend, started: float) -> Message:
            try:
                response = await http.post(backend.url + path, json=body)
                if response.status_code >= 400:
                    raise classify(backend, response.status_code, response.text)
                data = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise Retry(f"{backend.url}: {discovery._reason(exc)}") from exc
            if isinstance(data, dict) and data.get("error"):
                raise BackendError(f"{backend.url}: {data['error']}", 500, backend.url)
            self.succeeded(backend, model, time.perf_counter() - started)
            return data

        return await self.failover(model, session, attempt)

    async def stream(self, path: str, body: Message, session: str | None = None,
                     sse: bool = False) -> tuple[Backend, AsyncIterator[bytes]]:
        """Open a streaming request: the backend and its lines (see ``LLMPool.astream``)."""
        model = model_of(body)
        body = {**body, "stream": True}
        http = self.http()

        async def attempt(backend: Backend, started: float) -> AsyncIterator[bytes]:
            response: httpx.Response | None = None
            try:
                response = await http.send(http.build_request("POST", backend.url + path, json=body), stream=True)
                if response.status_code >= 400:
                    raise classify(backend, response.status_code, (await response.aread()).decode(errors="replace"))
                lines = response.aiter_lines()
                first = await _next_line(lines)
                if first is None:
                    raise Retry(f"{backend.url}: empty response")
                error = error_of(first.removeprefix("data: ")) if '"error"' in first else None
                if error:
                    raise Retry(f"{backend.url}: {error}")
            except BaseException as exc:
                if response is not None:
                    await response.aclose()
                if isinstance(exc, httpx.HTTPError):
                    raise Retry(f"{backend.url}: {discovery._reason(exc)}") from exc
                raise
            return self.relay(backend, model, response, lines, first, started, sse)

        lines, backend = await self.failover(model, session, attempt)
        return backend, lines

    async def relay(self, backend: Backend, model: str, response: httpx.Response, lines: AsyncIterator[str],
                    first: str, started: float, sse: bool = False) -> AsyncIterator[bytes]:
        """The stream's lines as they arrive; the request is accounted when the reader is done.

        A failure after output was sent cannot be retried: it becomes an ``{"error": …}`` line,
        as Ollama itself reports mid-stream errors.
        """
        outcome: str | None = None
        try:
            yield (first + "\n").encode()
            async for line in lines:
                if not line and not sse:
                    continue
                error = error_of(line.removeprefix("data: ")) if '"error"' in line else None
                if error:
                    outcome = f"{backend.url}: {error}"
                yield (line + "\n").encode()
            if outcome is None:
                outcome = "ok"
        except httpx.HTTPError as exc:
            outcome = f"{backend.url} failed mid-stream: {discovery._reason(exc)}"
            error_line = json.dumps({"error": f"caelum: {outcome}"})
            yield (f"data: {error_line}\n\n" if sse else error_line + "\n").encode()
        finally:
            await response.aclose()
            latency = time.perf_counter() - started
            if outcome == "ok" or outcome is None:  # None: the reader stopped early
                self.succeeded(backend, model, latency)
            else:
                self.failed(backend, model, outcome, latency)


def classify(backend: Backend, status: int, text: str) -> Exception:
    """What an HTTP error from a backend means: retry elsewhere, or the caller's mistake."""
    message = error_of(text) or text.strip()
    if status == 404 and "not found" in str(message):
        return Retry(f"{backend.url}: {message}", cool=False)
    if status >= 500 or status == 429:
        return Retry(f"{backend.url} answered {status}: {message}")
    return BackendError(f"{backend.url}: {message}", status_code=status, backend=backend.url)


def _give_up(tried: list[str], last: str | None, exc: Exception) -> Exception:
    """The router's refusal, with the last failure of this request when there was one."""
    if last is None:
        return exc
    cls = type(exc) if isinstance(exc, (ModelUnavailable, NoBackendAvailable)) else NoBackendAvailable
    return cls(f"{exc} (last failure: {last})")


def model_of(body: Message) -> str:
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise InvalidInput("the request has no model; pass e.g. model='llama3.2'")
    return model


async def _next_line(lines: AsyncIterator[str]) -> str | None:
    async for line in lines:
        if line:
            return line
    return None


def error_of(line: str) -> str | None:
    """The error of an Ollama error line (``{"error": "…"}``) or OpenAI-style body."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):  # OpenAI shape: {"error": {"message": …}}
        error = error.get("message") or json.dumps(error)
    return error


__all__ = ["Retry", "Transport", "classify", "error_of", "model_of"]

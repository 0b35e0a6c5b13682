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

Requests go straight from this process to the chosen Ollama server over HTTP (httpx): the
router (:mod:`.router`) picks the backend, a failure cools it down and the request is retried
on another one before any output was returned. Streaming responses are Ollama's own NDJSON
lines, passed on as they arrive. All I/O runs on one event loop: the async methods run on the
caller's loop, the sync methods on a loop thread the pool owns, which also refreshes the
backend table (from the scheduler, or by probing ``backends=[urls]`` directly) and sends the
``caelum.llm`` events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import dask.utils
import httpx

from caelum_dask import config, events
from caelum_dask.errors import InvalidInput
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import Backend
from caelum_dask.llm.errors import BackendError, ModelUnavailable, NoBackendAvailable
from caelum_dask.llm.router import Router, RouterSettings

logger = logging.getLogger(__name__)

Message = dict[str, Any]


class _Retry(Exception):
    """A backend failed in a way another backend may not: try the next one."""

    def __init__(self, reason: str, cool: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cool = cool


class LLMPool:
    """The pool of Ollama backends of a Dask cluster (or of explicit ``backends`` URLs).

    ``client`` is a (synchronous) ``distributed.Client``; with neither ``client`` nor
    ``backends`` the pool connects with :func:`caelum_dask.connect` and owns that client.
    ``backends=["http://gpu-box:11434", …]`` probes those servers directly (no cluster; no
    ``map``). Everything else defaults to the ``caelum.llm.*`` configuration.
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
    ) -> None:
        self._scope = contextlib.ExitStack()  # the client, when the pool connected it itself
        if client is None and backends is None:
            from caelum_dask.cluster import client_scope

            client = self._scope.enter_context(client_scope())
        if client is not None and getattr(client, "asynchronous", False):
            raise InvalidInput("LLMPool needs a synchronous distributed.Client (its async methods work from "
                               "any event loop); create the client without asynchronous=True")
        self.client = client
        self._urls = [discovery.parse_host(u) for u in backends] if backends is not None else None
        self.router = Router(settings or RouterSettings.from_config())
        self.retries = int(retries if retries is not None else config.get("llm.retries"))
        self.refresh_interval = refresh_interval if refresh_interval is not None else (
            dask.utils.parse_timedelta(config.get("llm.refresh-interval")))
        self.request_timeout = request_timeout if request_timeout is not None else (
            dask.utils.parse_timedelta(config.get("llm.request-timeout")))
        self.queue_timeout = queue_timeout if queue_timeout is not None else (
            dask.utils.parse_timedelta(config.get("llm.queue-timeout")))
        self.recent_events: collections.deque[Message] = collections.deque(maxlen=1000)
        self._outbox: collections.deque[Message] = collections.deque()
        self._last_backends_summary: Any = None
        self._http: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._waiters: set[Callable[[], None]] = set()
        self._waiters_lock = threading.Lock()
        self.router.on_release(self._wake)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._start_lock = threading.Lock()
        self._closed = False
        self._local = threading.local()
        self._sync_clients: list[httpx.Client] = []
        self.refresh_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> LLMPool:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def _start(self) -> asyncio.AbstractEventLoop:
        """The pool's loop thread (started on first use), running the refresher."""
        with self._start_lock:
            if self._closed:
                raise InvalidInput("this LLMPool is closed; create a new one")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="caelum-llm-pool", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                asyncio.run_coroutine_threadsafe(self._start_refresher(), loop).result()
            return self._loop

    async def _start_refresher(self) -> None:
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._start()).result()

    def close(self) -> None:
        """Stop the loop thread, close connections, send pending events."""
        if self._closed:
            return
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(10)
            self._loop.close()
        self._closed = True
        for http in self._sync_clients:
            http.close()
        self._flush_events()
        self._scope.close()

    async def aclose(self) -> None:
        http = self._http.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()
        await asyncio.to_thread(self.close)

    async def _shutdown(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refresher
        http = self._http.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()

    # -- the backend table -------------------------------------------------------------------
    async def _refresh_forever(self) -> None:
        if self.client is not None and self._urls is None:
            try:
                await asyncio.to_thread(discovery.ensure_discovery, self.client)
            except Exception as exc:
                self.refresh_error = f"discovery: {exc}"
                logger.warning("caelum llm: %s", self.refresh_error)
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the scheduler went away: keep the last table
                self.refresh_error = str(exc)
                logger.warning("caelum llm: backend refresh failed: %s", exc)
            finally:
                self._ready.set()
            if self._outbox and self.client is not None:
                await asyncio.to_thread(self._flush_events)
            await asyncio.sleep(self.refresh_interval)

    async def _refresh(self) -> list[Backend]:
        if self._urls is not None:
            http = self._client_for_loop()
            reports = await asyncio.gather(*(discovery.probe(http, url) for url in self._urls))
            backends = discovery.merge_reports(
                {"machine": _host_of(r["url"]), "hostname": _host_of(r["url"]), "host": None,
                 "worker": "", "backends": [r], "gpus": []} for r in reports)
            for backend in backends:
                backend.workers = []
        else:
            backends = await asyncio.to_thread(discovery.fetch_backends, self.client)
        self.router.update(backends)
        self.refresh_error = None
        self._announce(backends)
        return backends

    def refresh(self) -> list[Backend]:
        """Re-read the backend table now (it is refreshed every ``refresh_interval`` anyway)."""
        self._start()
        self._ready.wait(30)
        return self._run(self._refresh())

    def backends(self) -> list[Backend]:
        """The current backend table (waits for the first refresh)."""
        self._start()
        self._ready.wait(30)
        return self.router.backends

    async def _await_ready(self) -> None:
        self._start()
        if not self._ready.is_set():
            await asyncio.to_thread(self._ready.wait, 30)

    def status(self) -> dict[str, Any]:
        """Backends (with in-flight counts, cooldowns) and a per-model summary; JSON-able."""
        table = []
        models: dict[str, dict[str, Any]] = {}
        for b in self.backends():
            table.append({**b.to_dict(), **self.router.health(b.url)})
            for name in b.models:
                entry = models.setdefault(name, {"backends": [], "loaded_on": []})
                entry["backends"].append(b.url)
                if b.is_loaded(name):
                    entry["loaded_on"].append(b.url)
        stats = dict(self.router.stats)
        stats["warm_hit_rate"] = round(stats["warm_hits"] / stats["requests"], 3) if stats["requests"] else None
        return {"backends": table, "models": models, "router": stats, "refresh_error": self.refresh_error}

    # -- events ------------------------------------------------------------------------------
    def _record(self, event: str, **fields: Any) -> None:
        message = events.make_message(event, **fields)
        self.recent_events.append(message)
        if self.client is not None:
            self._outbox.append(message)

    def _flush_events(self) -> None:
        while self._outbox:
            message = self._outbox.popleft()
            try:
                self.client.log_event(events.LLM, message)
            except Exception:  # a closed client: the events stay in recent_events
                return

    def _announce(self, backends: list[Backend]) -> None:
        summary = [{"url": b.url, "machine": b.machine, "up": b.up, "models": sorted(b.models),
                    "loaded": sorted(b.loaded)} for b in backends]
        if summary != self._last_backends_summary:
            self._last_backends_summary = summary
            self._record("backends", backends=[
                {**s, "in_flight": self.router.health(s["url"])["in_flight"]} for s in summary])

    # -- choosing and failing ----------------------------------------------------------------
    def _wake(self) -> None:
        with self._waiters_lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter()

    async def _acquire(self, model: str, exclude: list[str], session: str | None) -> Backend:
        await self._await_ready()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.queue_timeout
        while True:
            event = asyncio.Event()

            def waiter(event: asyncio.Event = event) -> None:
                loop.call_soon_threadsafe(event.set)

            with self._waiters_lock:
                self._waiters.add(waiter)
            try:
                backend = self.router.choose(model, exclude=exclude, session=session)
                if backend is not None:
                    return backend
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._at_cap(model)
                try:
                    await asyncio.wait_for(event.wait(), left)
                except asyncio.TimeoutError:
                    pass
            finally:
                with self._waiters_lock:
                    self._waiters.discard(waiter)

    def _at_cap(self, model: str) -> NoBackendAvailable:
        """The error of a request that waited ``queue_timeout`` for a free slot (sync and async)."""
        return NoBackendAvailable(
            f"every backend serving {model!r} stayed at its concurrency cap for "
            f"{self.queue_timeout:g}s; raise caelum.llm.max-in-flight or add machines")

    def _failed(self, backend: Backend, model: str, reason: str, latency: float, cool: bool = True) -> None:
        cooldown = self.router.release(backend, model=model, ok=False, error=reason, cool=cool)
        self._record("request-finished", backend=backend.url, machine=backend.machine, model=model,
                     latency_s=round(latency, 4), ok=False, error=reason)
        if cool:
            self._record("backend-down", backend=backend.url, machine=backend.machine, reason=reason,
                         cooldown_s=cooldown)

    def _succeeded(self, backend: Backend, model: str, latency: float) -> None:
        self.router.release(backend, model=model, ok=True, latency_s=latency)
        self._record("request-finished", backend=backend.url, machine=backend.machine, model=model,
                     latency_s=round(latency, 4), ok=True)

    def _client_for_loop(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        http = self._http.get(loop)
        if http is None:
            timeout = httpx.Timeout(self.request_timeout, connect=min(5.0, self.request_timeout))
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            http = self._http[loop] = httpx.AsyncClient(timeout=timeout, limits=limits)
        return http

    @staticmethod
    def _classify(backend: Backend, status: int, text: str) -> Exception:
        """What an HTTP error from a backend means: retry elsewhere, or the caller's mistake."""
        message = _error_of(text) or text.strip()
        if status == 404 and "not found" in str(message):
            return _Retry(f"{backend.url}: {message}", cool=False)
        if status >= 500 or status == 429:
            return _Retry(f"{backend.url} answered {status}: {message}")
        return BackendError(f"{backend.url}: {message}", status_code=status, backend=backend.url)

    def _give_up(self, model: str, tried: list[str], last: str | None, exc: Exception) -> Exception:
        if last is None:
            return exc
        cls = type(exc) if isinstance(exc, (ModelUnavailable, NoBackendAvailable)) else NoBackendAvailable
        return cls(f"{exc} (last failure: {last})")

    # -- requests ----------------------------------------------------------------------------
    async def arequest(self, path: str, body: Message, *, session: str | None = None) -> tuple[Message, Backend]:
        """POST ``body`` to ``path`` on the best backend for ``body["model"]``; retry on failure."""
        model = _model_of(body)
        tried: list[str] = []
        last: str | None = None
        http = self._client_for_loop()
        for _attempt in range(self.retries + 1):
            try:
                backend = await self._acquire(model, tried, session)
            except (ModelUnavailable, NoBackendAvailable) as exc:
                raise self._give_up(model, tried, last, exc) from None
            started = time.perf_counter()
            try:
                response: httpx.Response | Exception = await http.post(backend.url + path, json=body)
            except httpx.HTTPError as exc:
                response = exc
            except BaseException:  # cancelled (the caller went away): free the slot
                self.router.release(backend, model=model, ok=False, cool=False)
                raise
            outcome = self._settle(backend, model, response, started)
            if isinstance(outcome, str):
                last = outcome
                tried.append(backend.url)
                continue
            return outcome, backend
        raise NoBackendAvailable(f"model {model!r}: {len(tried)} backend(s) failed this request; last failure: {last}")

    def request(self, path: str, body: Message, *, session: str | None = None) -> tuple[Message, Backend]:
        """The sync twin of :meth:`arequest`, run in the caller's thread (no thread hop)."""
        model = _model_of(body)
        self._start()
        self._ready.wait(30)
        tried: list[str] = []
        last: str | None = None
        http = self._sync_client()
        for _attempt in range(self.retries + 1):
            try:
                backend = self._acquire_sync(model, tried, session)
            except (ModelUnavailable, NoBackendAvailable) as exc:
                raise self._give_up(model, tried, last, exc) from None
            started = time.perf_counter()
            try:
                response: httpx.Response | Exception = http.post(backend.url + path, json=body)
            except httpx.HTTPError as exc:
                response = exc
            outcome = self._settle(backend, model, response, started)
            if isinstance(outcome, str):
                last = outcome
                tried.append(backend.url)
                continue
            return outcome, backend
        raise NoBackendAvailable(f"model {model!r}: {len(tried)} backend(s) failed this request; last failure: {last}")

    def _settle(self, backend: Backend, model: str, response: httpx.Response | Exception,
                started: float) -> Message | str:
        """Account for one attempt: the reply's JSON, or a failure reason (str) to retry on.

        Raises :class:`BackendError` for failures that retrying elsewhere would not fix.
        """
        latency = time.perf_counter() - started
        try:
            if isinstance(response, Exception):
                raise response
            if response.status_code >= 400:
                raise self._classify(backend, response.status_code, response.text)
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            reason = f"{backend.url}: {discovery._reason(exc)}"
            self._failed(backend, model, reason, latency)
            return reason
        except _Retry as exc:
            self._failed(backend, model, exc.reason, latency, cool=exc.cool)
            if not exc.cool:
                self.router.forget_model(backend, model)
            return exc.reason
        except BackendError:
            self.router.release(backend, model=model, ok=False, cool=False)
            raise
        if isinstance(data, dict) and data.get("error"):
            self.router.release(backend, model=model, ok=False, cool=False)
            raise BackendError(f"{backend.url}: {data['error']}", 500, backend.url)
        self._succeeded(backend, model, latency)
        return data

    def _acquire_sync(self, model: str, exclude: list[str], session: str | None) -> Backend:
        deadline = time.monotonic() + self.queue_timeout
        while True:
            event = threading.Event()
            with self._waiters_lock:
                self._waiters.add(event.set)
            try:
                backend = self.router.choose(model, exclude=exclude, session=session)
                if backend is not None:
                    return backend
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._at_cap(model)
                event.wait(left)
            finally:
                with self._waiters_lock:
                    self._waiters.discard(event.set)

    def _sync_client(self) -> httpx.Client:
        """One sync httpx client per calling thread (httpx clients are not shared across threads)."""
        http = getattr(self._local, "http", None)
        if http is None:
            timeout = httpx.Timeout(self.request_timeout, connect=min(5.0, self.request_timeout))
            http = self._local.http = httpx.Client(timeout=timeout)
            with self._waiters_lock:
                self._sync_clients.append(http)
        return http

    async def astream(self, path: str, body: Message, *, session: str | None = None,
                      sse: bool = False) -> tuple[Backend, AsyncIterator[bytes]]:
        """Open a streaming request; returns the backend and its NDJSON lines (with ``\\n``).

        Failures before the first line are retried on other backends; errors are raised here,
        so an HTTP server can still answer with a proper status. A failure after output was
        sent becomes an ``{"error": …}`` line, as Ollama itself reports mid-stream errors.
        ``sse=True`` relays an OpenAI-compatible (``/v1/…``) server-sent-event stream instead,
        blank separator lines included.
        """
        model = _model_of(body)
        body = {**body, "stream": True}
        tried: list[str] = []
        last: str | None = None
        http = self._client_for_loop()
        for _attempt in range(self.retries + 1):
            try:
                backend = await self._acquire(model, tried, session)
            except (ModelUnavailable, NoBackendAvailable) as exc:
                raise self._give_up(model, tried, last, exc) from None
            started = time.perf_counter()
            response: httpx.Response | None = None
            try:
                response = await http.send(http.build_request("POST", backend.url + path, json=body), stream=True)
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    raise self._classify(backend, response.status_code, text)
                lines = response.aiter_lines()
                first = await _next_line(lines)
                if first is None:
                    raise _Retry(f"{backend.url}: empty response")
                if '"error"' in first:
                    error = _error_of(first.removeprefix("data: "))
                    if error:
                        raise _Retry(f"{backend.url}: {error}")
            except BaseException as exc:
                if response is not None:
                    await response.aclose()
                if not isinstance(exc, (httpx.HTTPError, _Retry)):  # BackendError, cancellation
                    self.router.release(backend, model=model, ok=False, cool=False)
                    raise
                cool = exc.cool if isinstance(exc, _Retry) else True
                last = exc.reason if isinstance(exc, _Retry) else f"{backend.url}: {discovery._reason(exc)}"
                self._failed(backend, model, last, time.perf_counter() - started, cool=cool)
                if not cool:
                    self.router.forget_model(backend, model)
                tried.append(backend.url)
                continue
            return backend, self._relay(backend, model, response, lines, first, started, sse)
        raise NoBackendAvailable(f"model {model!r}: {len(tried)} backend(s) failed this request; last failure: {last}")

    async def _relay(self, backend: Backend, model: str, response: httpx.Response, lines: AsyncIterator[str],
                     first: str, started: float, sse: bool = False) -> AsyncIterator[bytes]:
        outcome: str | None = None
        try:
            yield (first + "\n").encode()
            async for line in lines:
                if not line and not sse:
                    continue
                if '"error"' in line and _error_of(line.removeprefix("data: ")):
                    outcome = f"{backend.url}: {_error_of(line.removeprefix('data: '))}"
                yield (line + "\n").encode()
            if outcome is None:
                outcome = "ok"
        except httpx.HTTPError as exc:
            outcome = f"{backend.url} failed mid-stream: {discovery._reason(exc)}"
            error = json.dumps({"error": f"caelum: {outcome}"})
            yield (f"data: {error}\n\n" if sse else error + "\n").encode()
        finally:
            await response.aclose()
            latency = time.perf_counter() - started
            if outcome == "ok" or outcome is None:  # None: the reader stopped early
                self._succeeded(backend, model, latency)
            else:
                self._failed(backend, model, outcome, latency)

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
        body = {"model": model, "input": input if isinstance(input, str) else list(input), **fields}
        return await self._acall("/api/embed", body, False, session)

    async def _acall(self, path: str, body: Message, stream: bool, session: str | None) -> Any:
        if not stream:
            data, _backend = await self.arequest(path, {**body, "stream": False}, session=session)
            return data
        _backend, lines = await self.astream(path, body, session=session)
        return _parsed(lines)

    def generate(self, model: str, prompt: str = "", *, stream: bool = False,
                 session: str | None = None, **fields: Any) -> Any:
        """``/api/generate`` on the best backend; ``stream=True`` returns an iterator of chunks."""
        if stream:
            return self._iterate(self._run(self.agenerate(model, prompt, stream=True, session=session, **fields)))
        body = {"model": model, "prompt": prompt, **fields, "stream": False}
        return self.request("/api/generate", body, session=session)[0]

    def chat(self, model: str, messages: Sequence[Message], *, stream: bool = False,
             session: str | None = None, **fields: Any) -> Any:
        """``/api/chat`` on the best backend; ``stream=True`` returns an iterator of chunks."""
        if stream:
            return self._iterate(self._run(self.achat(model, messages, stream=True, session=session, **fields)))
        body = {"model": model, "messages": list(messages), **fields, "stream": False}
        return self.request("/api/chat", body, session=session)[0]

    def embed(self, model: str, input: str | Sequence[str], *, session: str | None = None,
              **fields: Any) -> Message:
        """``/api/embed`` on the best backend."""
        body = {"model": model, "input": input if isinstance(input, str) else list(input), **fields}
        return self.request("/api/embed", body, session=session)[0]

    def _iterate(self, parts: AsyncIterator[Message]) -> Iterator[Message]:
        loop = self._start()
        try:
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(parts.__anext__(), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            asyncio.run_coroutine_threadsafe(parts.aclose(), loop).result()  # type: ignore[attr-defined]

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
    def map(self, model: str, items: Sequence[Any], *, kind: str = "generate", progress: bool | Callable[[int, int, int], None] = True,
            retries: int | None = None, **fields: Any) -> list[Message]:
        """Run one request per item as Dask tasks on the workers of machines serving ``model``.

        Results come back in order, one dict per item: ``{"index", "ok", "response" (Ollama's
        JSON), "error", "backend", "machine", "worker", "latency_s"}``. A failing backend's
        items are retried on other machines (``retries`` times); other failures are per item.
        See :func:`caelum_dask.llm.batch.run_map`.
        """
        from caelum_dask.llm.batch import run_map

        if self.client is None:
            raise InvalidInput("LLMPool.map needs a Dask cluster: create the pool with LLMPool(client)")
        return run_map(self.client, model, items, kind=kind, progress=progress,
                       retries=self.retries if retries is None else retries, fields=fields)


def _model_of(body: Message) -> str:
    model = body.get("model")
    if not model or not isinstance(model, str):
        raise InvalidInput("the request has no model; pass e.g. model='llama3.2'")
    return model


async def _next_line(lines: AsyncIterator[str]) -> str | None:
    async for line in lines:
        if line:
            return line
    return None


def _error_of(line: str) -> str | None:
    """The error of an Ollama error line (``{"error": "…"}``) or OpenAI-style body."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):  # OpenAI shape: {"error": {"message": …}}
        error = error.get("message") or json.dumps(error)
    return error


async def _parsed(lines: AsyncIterator[bytes]) -> AsyncIterator[Message]:
    try:
        async for raw in lines:
            part = json.loads(raw)
            if part.get("error"):
                raise BackendError(str(part["error"]))
            yield part
    finally:
        await lines.aclose()  # type: ignore[attr-defined]


def _host_of(url: str) -> str:
    """A backend given by URL is named by host:port (several may share one host)."""
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def _version_key(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)

"""A protocol-faithful fake Ollama server: real HTTP on 127.0.0.1, no model weights.

It is the only fake in the LLM tests: no model can be downloaded here, so this server speaks
Ollama's REST protocol (the JSON shapes of ``/api/tags``, ``/api/ps``, ``/api/version``,
``/api/generate``, ``/api/chat``, ``/api/embed``, ``/api/show`` and ``/api/pull``, and the
OpenAI-compatible ``/v1/models``, ``/v1/chat/completions`` (SSE) and ``/v1/embeddings``; NDJSON
streaming with ``stream`` defaulting to true, ``{"error": …}`` bodies and lines, ``:latest``
tag normalisation, models loaded on first use with ``load_duration``) and the real ``ollama``
Python client talks to it unchanged. Knobs that make routing observable:

* ``latency`` seconds per request (spread over the streamed tokens), ``load_latency`` seconds
  to load a model that is not in memory yet, ``parallel=1`` serves one request at a time
  (Ollama's ``OLLAMA_NUM_PARALLEL``), ``max_loaded`` models kept in memory (LRU eviction);
* ``hold_after_first``: a ``threading.Event`` the server waits for after the first streamed
  chunk (proves a proxy forwards chunks as they come, without timing anything);
* ``fail_next(n, status)`` answers the next n requests with an error, ``error_mid_stream``
  sends an ``{"error": …}`` line after k chunks (what Ollama does when a runner crashes),
  ``die_mid_stream`` closes the server (listening socket and connections) after k chunks,
  ``kill()`` / ``revive()`` take it down and bring it back on the same port.

Every server runs on one shared Tornado IOLoop in a daemon thread, so tests and benchmarks
can start several. ``python tests/fake_ollama.py --models a,b`` runs one in the foreground and
prints its URL.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

__all__ = ["FakeOllama", "normalize"]

GIB = 1024**3


def normalize(model: str) -> str:
    """Ollama's name rule: a model without a tag means ``:latest``."""
    name = model.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(name: str) -> dict[str, Any]:
    family = name.split(":")[0].split("/")[-1].rstrip("0123456789.") or "llama"
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


class _Loop:
    """One IOLoop in a daemon thread shared by every fake server of the process."""

    _instance: _Loop | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-ollama", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _Loop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@dataclass
class _Fault:
    kind: str  # "status" | "error-mid-stream" | "die-mid-stream"
    status: int = 500
    message: str = "fake ollama: injected failure"
    after: int = 1


@dataclass
class FakeOllama:
    """A fake Ollama server; ``start()`` binds 127.0.0.1 on a free port (``url``)."""

    models: Iterable[str] = ("llama3.2:latest",)
    loaded: Iterable[str] = ()
    latency: float = 0.0
    load_latency: float = 0.0
    parallel: int | None = None
    max_loaded: int | None = None
    version: str = "0.12.3"
    pullable: Iterable[str] = ("llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest")
    tokens: int = 4
    name: str = "fake"
    model_size_gb: float = 2.0
    port: int = 0
    hold_after_first: threading.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._models: dict[str, float] = {normalize(m): time.time() for m in self.models}
        self._loaded: OrderedDict[str, float] = OrderedDict((normalize(m), time.time()) for m in self.loaded)
        for model in self._loaded:
            self._models.setdefault(model, time.time())
        self.pullable = {normalize(m) for m in self.pullable}
        self._faults: list[_Fault] = []
        self._server: HTTPServer | None = None
        self._gate: asyncio.Semaphore | None = None
        self._load_locks: dict[str, asyncio.Lock] = {}
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOllama:
        loop = _Loop.get()

        async def listen() -> None:
            sockets = bind_sockets(self.port, "127.0.0.1", family=socket.AF_INET, reuse_port=False)
            self.port = sockets[0].getsockname()[1]
            if self.parallel:
                self._gate = asyncio.Semaphore(self.parallel)
            app = Application([(r"/(.*)", _Handler, {"fake": self})], log_function=lambda _h: None)
            self._server = HTTPServer(app)
            self._server.add_sockets(sockets)

        loop.run(listen())
        return self

    def kill(self) -> None:
        """Take the server down like a crashed ``ollama serve``: refuse and drop connections."""
        if self._server is not None:
            _Loop.get().run(self._down())

    async def _down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            await server.close_all_connections()

    stop = kill

    def revive(self) -> FakeOllama:
        """Start again on the same port (models stay installed, none stay loaded)."""
        self._loaded.clear()
        return self.start()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.kill()

    # -- knobs -------------------------------------------------------------------------------
    def fail_next(self, n: int = 1, status: int = 500, message: str = "fake ollama: injected failure") -> None:
        with self._lock:
            self._faults.extend(_Fault("status", status, message) for _ in range(n))

    def error_mid_stream(self, after: int = 1, message: str = "fake ollama: runner crashed") -> None:
        with self._lock:
            self._faults.append(_Fault("error-mid-stream", 200, message, after))

    def die_mid_stream(self, after: int = 1) -> None:
        with self._lock:
            self._faults.append(_Fault("die-mid-stream", 200, "", after))

    def add_model(self, model: str) -> None:
        self._models[normalize(model)] = time.time()

    def load(self, model: str) -> None:
        self._touch(normalize(model))

    def loaded_models(self) -> list[str]:
        return list(self._loaded)

    def served(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if path is None or r["path"] == path]

    # -- internals used by the handler -------------------------------------------------------
    def _take_fault(self) -> _Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _touch(self, model: str) -> None:
        self._loaded[model] = time.time()
        self._loaded.move_to_end(model)
        while self.max_loaded is not None and len(self._loaded) > self.max_loaded:
            self._loaded.popitem(last=False)

    def _tags(self) -> dict[str, Any]:
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(),
                    "size": int(self.model_size_gb * GIB),
                    "digest": _digest(m),
                    "details": _details(m),
                }
                for m, t in self._models.items()
            ]
        }

    def _ps(self) -> dict[str, Any]:
        expires = (_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(minutes=5)).isoformat()
        size = int(self.model_size_gb * GIB)
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "size": size,
                    "digest": _digest(m),
                    "details": _details(m),
                    "expires_at": expires,
                    "size_vram": size,
                    "context_length": 4096,
                }
                for m in self._loaded
            ]
        }


class _Handler(RequestHandler):
    fake: FakeOllama

    def initialize(self, fake: FakeOllama) -> None:
        self.fake = fake

    def check_xsrf_cookie(self) -> None:  # an API, not a form
        return

    # -- plumbing ------------------------------------------------------------------------------
    def _json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _body(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            self._error(400, "invalid JSON body")
            return None
        if not isinstance(data, dict):
            self._error(400, "request body must be a JSON object")
            return None
        return data

    async def get(self, path: str) -> None:
        if path == "":
            self.finish("Ollama is running")
        elif path == "api/version":
            self._json({"version": self.fake.version})
        elif path == "api/tags":
            self._json(self.fake._tags())
        elif path == "api/ps":
            self._json(self.fake._ps())
        elif path == "v1/models":
            self._json({"object": "list", "data": [
                {"id": m, "object": "model", "created": int(t), "owned_by": "library"}
                for m, t in self.fake._models.items()]})
        else:
            self._error(404, "404 page not found")

    async def head(self, path: str) -> None:
        self.finish()

    async def post(self, path: str) -> None:
        body = self._body()
        if body is None:
            return
        routes = {
            "api/generate": self._generate,
            "api/chat": self._chat,
            "api/embed": self._embed,
            "api/embeddings": self._embeddings,
            "api/show": self._show,
            "api/pull": self._pull,
            "v1/chat/completions": self._openai_chat,
            "v1/embeddings": self._openai_embeddings,
        }
        handler = routes.get(path)
        if handler is None:
            self._error(404, "404 page not found")
            return
        await handler(body)

    # -- inference ----------------------------------------------------------------------------
    async def _admit(self, path: str, body: dict[str, Any]) -> tuple[str, _Fault | None] | None:
        """Validate the model, record the request, apply a pending status fault."""
        raw = body.get("model")
        if not raw:
            self._error(400, "model is required")
            return None
        model = normalize(str(raw))
        self.fake.requests.append({"path": path, "model": model, "time": time.time(), "body": body})
        fault = self.fake._take_fault()
        if fault is not None and fault.kind == "status":
            self._error(fault.status, fault.message)
            return None
        if model not in self.fake._models:
            self._error(404, f'model "{raw}" not found, try pulling it first')
            return None
        if "options" in body and not isinstance(body["options"], dict):
            self._error(400, "json: cannot unmarshal string into Go struct field GenerateRequest.options "
                             "of type map[string]interface {}")
            return None
        messages = body.get("messages")
        if path == "/api/chat" and (not isinstance(messages, list) or any(
                not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool")
                for m in messages)):
            self._error(400, "invalid message format: every message needs a role of system, user, assistant or tool")
            return None
        return model, fault

    async def _run(self, model: str, body: dict[str, Any], chunks: list[dict[str, Any]],
                   final: dict[str, Any], empty: dict[str, Any], fault: _Fault | None) -> None:
        fake = self.fake
        gate = fake._gate
        if gate is not None:
            await gate.acquire()
        fake.in_flight += 1
        fake.max_in_flight_seen = max(fake.max_in_flight_seen, fake.in_flight)
        try:
            started = time.perf_counter()
            load_ns = 1000
            if model not in fake._loaded:
                lock = fake._load_locks.setdefault(model, asyncio.Lock())
                async with lock:
                    if model not in fake._loaded:
                        if fake.load_latency:
                            await asyncio.sleep(fake.load_latency)
                        load_ns = int(max(fake.load_latency, 0.001) * 1e9)
            fake._touch(model)
            stream = body.get("stream", True) is not False
            step = fake.latency / max(1, len(chunks))
            common = {"model": model, "created_at": _now()}
            timing = {
                "load_duration": load_ns,
                "prompt_eval_count": 8,
                "prompt_eval_duration": 1000,
                "eval_count": len(chunks),
            }
            if not stream:
                if fake.latency:
                    await asyncio.sleep(fake.latency)
                if fault is not None and fault.kind == "die-mid-stream":
                    self.request.connection.stream.close()
                    await fake._down()
                    return
                total = int((time.perf_counter() - started) * 1e9)
                self._json({**common, **final, "done": True, "done_reason": "stop", **timing,
                            "total_duration": total, "eval_duration": total})
                return
            self.set_header("Content-Type", "application/x-ndjson")
            for index, chunk in enumerate(chunks):
                if fault is not None and index == fault.after:
                    if fault.kind == "error-mid-stream":
                        self.write(json.dumps({"error": fault.message}) + "\n")
                        await self.flush()
                        self.finish()
                        return
                    if fault.kind == "die-mid-stream":
                        self.request.connection.stream.close()
                        await fake._down()
                        return
                if step:
                    await asyncio.sleep(step)
                self.write(json.dumps({**common, "created_at": _now(), **chunk, "done": False}) + "\n")
                await self.flush()
                if index == 0 and fake.hold_after_first is not None:
                    await asyncio.to_thread(fake.hold_after_first.wait, 60)
            total = int((time.perf_counter() - started) * 1e9)
            self.write(json.dumps({**common, "created_at": _now(), **empty, "done": True, "done_reason": "stop", **timing,
                                   "total_duration": total, "eval_duration": total}) + "\n")
            self.finish()
        except StreamClosedError:
            pass
        finally:
            fake.in_flight -= 1
            if gate is not None:
                gate.release()

    def _words(self, text: str) -> list[str]:
        words = f"echo from {self.fake.name}: {text}".split()
        n = max(1, self.fake.tokens)
        size = max(1, -(-len(words) // n))
        parts = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
        return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]

    async def _generate(self, body: dict[str, Any]) -> None:
        admitted = await self._admit("/api/generate", body)
        if admitted is None:
            return
        model, fault = admitted
        words = self._words(str(body.get("prompt", "")))
        chunks = [{"response": w} for w in words]
        final = {"response": "".join(words), "context": [1, 2, 3]}
        await self._run(model, body, chunks, final, {"response": ""}, fault)

    async def _chat(self, body: dict[str, Any]) -> None:
        admitted = await self._admit("/api/chat", body)
        if admitted is None:
            return
        model, fault = admitted
        messages = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        words = self._words(str(last))
        chunks = [{"message": {"role": "assistant", "content": w}} for w in words]
        final = {"message": {"role": "assistant", "content": "".join(words)}}
        await self._run(model, body, chunks, final, {"message": {"role": "assistant", "content": ""}}, fault)

    @staticmethod
    def _vector(text: str, dims: int = 8) -> list[float]:
        digest = hashlib.sha256(text.encode()).digest()
        return [round((b - 128) / 128, 6) for b in digest[:dims]]

    async def _embed(self, body: dict[str, Any]) -> None:
        admitted = await self._admit("/api/embed", body)
        if admitted is None:
            return
        model, _fault = admitted
        inputs = body.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        started = time.perf_counter()
        if self.fake._gate is not None:
            await self.fake._gate.acquire()
        try:
            if self.fake.latency:
                await asyncio.sleep(self.fake.latency)
            cold = model not in self.fake._loaded
            self.fake._touch(model)
        finally:
            if self.fake._gate is not None:
                self.fake._gate.release()
        self._json({
            "model": model,
            "embeddings": [self._vector(str(text)) for text in inputs],
            "total_duration": int((time.perf_counter() - started) * 1e9),
            "load_duration": int(self.fake.load_latency * 1e9) if cold else 1000,
            "prompt_eval_count": sum(len(str(t).split()) for t in inputs),
        })

    async def _embeddings(self, body: dict[str, Any]) -> None:
        admitted = await self._admit("/api/embeddings", body)
        if admitted is None:
            return
        self.fake._touch(admitted[0])
        self._json({"embedding": self._vector(str(body.get("prompt", "")))})

    async def _show(self, body: dict[str, Any]) -> None:
        admitted = await self._admit("/api/show", body)
        if admitted is None:
            return
        model = admitted[0]
        self._json({
            "modelfile": f"FROM {model}",
            "parameters": "stop \"<|eot_id|>\"",
            "template": "{{ .Prompt }}",
            "details": _details(model),
            "model_info": {"general.architecture": "llama"},
            "capabilities": ["completion"],
            "modified_at": _now(),
        })

    # -- the OpenAI-compatible endpoints Ollama also serves ----------------------------------
    def _openai_error(self, status: int, message: str) -> None:
        self._json({"error": {"message": message, "type": "api_error", "param": None, "code": None}}, status)

    async def _openai_chat(self, body: dict[str, Any]) -> None:
        raw = body.get("model")
        model = normalize(str(raw or ""))
        self.fake.requests.append({"path": "/v1/chat/completions", "model": model, "time": time.time(), "body": body})
        fault = self.fake._take_fault()
        if fault is not None and fault.kind == "status":
            self._openai_error(fault.status, fault.message)
            return
        if not raw or model not in self.fake._models:
            self._openai_error(404, f'model "{raw}" not found, try pulling it first')
            return
        messages = body.get("messages") or []
        last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        words = self._words(str(last))
        self.fake._touch(model)
        common = {"id": f"chatcmpl-{len(self.fake.requests)}", "created": int(time.time()), "model": model,
                  "system_fingerprint": "fp_ollama"}
        if self.fake.latency:
            await asyncio.sleep(self.fake.latency)
        if not body.get("stream"):
            self._json({**common, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 8, "completion_tokens": len(words), "total_tokens": 8 + len(words)}})
            return
        self.set_header("Content-Type", "text/event-stream")
        for word in [*words, None]:
            delta = {"role": "assistant", "content": word or ""}
            chunk = {**common, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": None if word is not None else "stop"}]}
            self.write(f"data: {json.dumps(chunk)}\n\n")
            await self.flush()
        self.write("data: [DONE]\n\n")
        self.finish()

    async def _openai_embeddings(self, body: dict[str, Any]) -> None:
        raw = body.get("model")
        model = normalize(str(raw or ""))
        self.fake.requests.append({"path": "/v1/embeddings", "model": model, "time": time.time(), "body": body})
        if not raw or model not in self.fake._models:
            self._openai_error(404, f'model "{raw}" not found, try pulling it first')
            return
        inputs = body.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self._json({"object": "list", "model": model,
                    "data": [{"object": "embedding", "embedding": self._vector(str(t)), "index": i}
                             for i, t in enumerate(inputs)],
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def _pull(self, body: dict[str, Any]) -> None:
        raw = body.get("model") or body.get("name")
        if not raw:
            self._error(400, "model is required")
            return
        model = normalize(str(raw))
        self.fake.requests.append({"path": "/api/pull", "model": model, "time": time.time(), "body": body})
        stream = body.get("stream", True) is not False
        if model not in self.fake.pullable:
            if stream:
                self.set_header("Content-Type", "application/x-ndjson")
                self.write(json.dumps({"status": "pulling manifest"}) + "\n")
                self.write(json.dumps({"error": "pull model manifest: file does not exist"}) + "\n")
                self.finish()
            else:
                self._error(500, "pull model manifest: file does not exist")
            return
        total = int(self.fake.model_size_gb * GIB)
        digest = f"sha256:{_digest(model)}"
        steps = [{"status": "pulling manifest"}]
        steps += [{"status": f"pulling {digest[7:19]}", "digest": digest, "total": total,
                   "completed": total * k // 4} for k in range(1, 5)]
        steps += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        self.fake.add_model(model)
        if not stream:
            self._json({"status": "success"})
            return
        self.set_header("Content-Type", "application/x-ndjson")
        for step in steps:
            self.write(json.dumps(step) + "\n")
            await self.flush()
        self.finish()


def main() -> None:  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="Run a fake Ollama server in the foreground.")
    parser.add_argument("--models", default="llama3.2:latest")
    parser.add_argument("--loaded", default="")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--parallel", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeOllama(models=[m for m in args.models.split(",") if m],
                      loaded=[m for m in args.loaded.split(",") if m],
                      latency=args.latency, parallel=args.parallel, port=args.port).start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.kill()


if __name__ == "__main__":  # pragma: no cover
    main()

"""``caelum llm serve``: the pool behind an Ollama-compatible HTTP endpoint.

Any Ollama client (the ``ollama`` CLI and libraries, Open WebUI, editors) pointed at this
server uses the whole pool unchanged: ``/api/generate``, ``/api/chat``, ``/api/embed``
(and the legacy ``/api/embeddings``, ``/api/show``) are routed per request by model;
``/api/tags`` and ``/api/ps`` are the union over the pool; ``/api/version`` is the oldest
backend's version. Ollama's OpenAI-compatible ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings`` and ``/v1/models`` are served the same way (server-sent events when
``"stream": true``). Streaming responses are the backend's NDJSON lines, forwarded as each
arrives (Starlette ``StreamingResponse`` over an httpx stream; nothing is buffered).
``X-Caelum-Session: <id>`` keeps a conversation on one backend; every routed response
names its backend in ``X-Caelum-Backend``. ``GET /caelum/status`` is the pool's status.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from caelum_dask import __version__
from caelum_dask.errors import CaelumError, InvalidInput
from caelum_dask.llm.errors import BackendError, ModelUnavailable, NoBackendAvailable
from caelum_dask.llm.pool import LLMPool

STREAMING = {"/api/generate", "/api/chat"}
ROUTED = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show")
# Ollama's OpenAI-compatible endpoints: same routing; SSE streams only when "stream": true.
OPENAI = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def _error(status: int, message: str, openai: bool = False) -> JSONResponse:
    if openai:
        return JSONResponse({"error": {"message": message, "type": "api_error", "param": None, "code": None}},
                            status_code=status)
    return JSONResponse({"error": message}, status_code=status)


def create_app(pool: LLMPool) -> Starlette:
    """The ASGI app serving ``pool`` (run it with uvicorn, as ``caelum llm serve`` does)."""

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        await pool._await_ready()
        return JSONResponse({"version": pool.version()})

    async def tags(request: Request) -> Response:
        await pool._await_ready()
        return JSONResponse(pool.tags())

    async def ps(request: Request) -> Response:
        await pool._await_ready()
        return JSONResponse(pool.ps())

    async def status(request: Request) -> Response:
        await pool._await_ready()
        return JSONResponse(json.loads(json.dumps(pool.status(), default=str)) | {"caelum_version": __version__})

    async def pull(request: Request) -> Response:
        return _error(501, "pull through the pool is not supported: pull onto chosen machines with "
                           "`caelum llm pull MODEL --machines NAME`")

    async def openai_models(request: Request) -> Response:
        await pool._await_ready()
        return JSONResponse(pool.openai_models())

    def routed(path: str) -> Any:
        openai = path.startswith("/v1/")

        async def handler(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "invalid JSON body", openai)
            if not isinstance(body, dict):
                return _error(400, "request body must be a JSON object", openai)
            session = request.headers.get("x-caelum-session")
            try:
                if openai and body.get("stream") is True and path != "/v1/embeddings":
                    backend, lines = await pool.astream(path, body, session=session, sse=True)
                    return StreamingResponse(lines, media_type="text/event-stream",
                                             headers={"X-Caelum-Backend": backend.url})
                if path in STREAMING and body.get("stream", True) is not False:
                    backend, lines = await pool.astream(path, body, session=session)
                    return StreamingResponse(lines, media_type="application/x-ndjson",
                                             headers={"X-Caelum-Backend": backend.url})
                data, backend = await pool.arequest(path, body, session=session)
                return JSONResponse(data, headers={"X-Caelum-Backend": backend.url})
            except (ModelUnavailable, NoBackendAvailable) as exc:
                return _error(exc.status_code, str(exc), openai)
            except BackendError as exc:
                return _error(exc.status_code, str(exc), openai)
            except InvalidInput as exc:
                return _error(400, str(exc), openai)
            except CaelumError as exc:
                return _error(500, str(exc), openai)

        return handler

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/pull", pull, methods=["POST"]),
        Route("/caelum/status", status, methods=["GET"]),
        Route("/v1/models", openai_models, methods=["GET"]),
        *(Route(path, routed(path), methods=["POST"]) for path in (*ROUTED, *OPENAI)),
    ]
    return Starlette(routes=routes)

"""``LLMPool.map``: a batch of LLM requests as Dask tasks next to the GPUs.

Each item is one task (an LLM call takes seconds; Dask's ~1 ms per task is noise), keyed
``caelum-llm-<run>-<index>`` and restricted (``workers=``, ``allow_other_workers=False``) to
the workers of machines whose Ollama has the model; Dask's scheduler balances the items over
them. Inside the task the worker calls *its own machine's* Ollama at its local URL (so a GPU
box can keep Ollama bound to 127.0.0.1), preferring a server with the model loaded. A task
whose local backends fail raises :class:`LocalBackendFailed`; the driver then resubmits that
item to the other machines (up to ``retries`` times). Other errors (a bad request) are that
item's result, never the batch's end.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dask.utils
import httpx
from distributed import as_completed

from caelum_dask import config, events
from caelum_dask.errors import InvalidInput
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import normalize_model, reachable_url
from caelum_dask.llm.router import Router

KINDS: dict[str, str] = {"generate": "/api/generate", "chat": "/api/chat", "embed": "/api/embed"}


class LocalBackendFailed(Exception):
    """Every Ollama server of the task's machine failed the request (retry elsewhere)."""

    def __init__(self, message: str, worker: str = "") -> None:
        super().__init__(message, worker)
        self.message = message
        self.worker = worker

    def __str__(self) -> str:
        return self.message


def request_body(kind: str, model: str, item: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The Ollama request for one batch item (a prompt, a message list, or a text to embed)."""
    if kind == "generate":
        return {"model": model, "prompt": str(item), **fields, "stream": False}
    if kind == "chat":
        messages = item if isinstance(item, list) else [{"role": "user", "content": str(item)}]
        return {"model": model, "messages": messages, **fields, "stream": False}
    if kind == "embed":
        return {"model": model, "input": item, **fields}
    raise InvalidInput(f"unknown batch kind {kind!r}; use one of {', '.join(KINDS)}")


def llm_task(kind: str, model: str, item: Any, fields: dict[str, Any], run_id: str, index: int) -> dict[str, Any]:
    """Runs on a worker: call this machine's Ollama for one item."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(discovery.PLUGIN_NAME)
    reports = plugin.report.get("backends", []) if plugin is not None else []
    hostname = plugin.report.get("hostname") if plugin is not None else None
    if not reports:
        reports = [{"url": url, "up": True, "models": [{"model": model}], "loaded": []}
                   for url in discovery.configured_hosts()]
    name = normalize_model(model)

    def has(report: dict[str, Any], key: str) -> bool:
        return any(normalize_model(m.get("model") or m.get("name") or "") == name for m in report.get(key) or [])

    candidates = sorted((r for r in reports if r.get("up") and has(r, "models")), key=lambda r: not has(r, "loaded"))
    if not candidates:
        raise LocalBackendFailed(f"no Ollama on {worker.address}'s machine has {model!r} up now", worker.address)
    body = request_body(kind, model, item, fields)
    timeout = dask.utils.parse_timedelta(config.get("llm.request-timeout"))
    last = ""
    for report in candidates:
        url = report["url"]
        started = time.perf_counter()
        try:
            response = httpx.post(url + KINDS[kind], json=body, timeout=timeout)
            text = response.text
            status = response.status_code
        except httpx.HTTPError as exc:
            last = f"{url}: {discovery._reason(exc)}"
            continue
        latency = time.perf_counter() - started
        public = reachable_url(url, worker.ip)
        result = {"index": index, "backend": public, "machine": hostname or worker.ip,
                  "worker": worker.address, "latency_s": round(latency, 4)}
        if status >= 500 or (status == 404 and "not found" in text):
            last = f"{url} answered {status}: {text[:200]}"
            _emit(worker, public, result["machine"], model, latency, False)
            continue
        _emit(worker, public, result["machine"], model, latency, status < 400)
        if status >= 400:
            return {**result, "ok": False, "response": None, "error": f"{url} answered {status}: {text[:300]}"}
        return {**result, "ok": True, "response": response.json(), "error": None}
    raise LocalBackendFailed(f"Ollama on {hostname or worker.ip} failed: {last}", worker.address)


def _emit(worker: Any, backend: str, machine: str, model: str, latency: float, ok: bool) -> None:
    try:
        events.emit(events.LLM, "request-finished", sink=worker, backend=backend, machine=machine,
                    model=model, latency_s=round(latency, 4), ok=ok)
    except Exception:
        pass


def _progress_printer() -> Callable[[int, int, int], None]:
    tty = sys.stderr.isatty()
    shown = {"step": -1}

    def show(done: int, total: int, failed: int) -> None:
        step = done * 10 // max(1, total)
        if not tty and step == shown["step"] and done != total:
            return
        shown["step"] = step
        end = "\n" if (done == total or not tty) else ""
        start = "\r" if tty else ""
        sys.stderr.write(f"{start}caelum llm: {done}/{total} done, {failed} failed{end}")
        sys.stderr.flush()

    return show


def _serving_workers(client: Any, model: str) -> list[str]:
    """The workers whose machine serves ``model`` (the router's errors when none does)."""
    discovery.ensure_discovery(client)
    backends = discovery.fetch_backends(client)
    router = Router()
    router.update(backends)
    router.choose(model)  # raises ModelUnavailable / NoBackendAvailable with the right message
    workers = sorted({w for b in backends if b.up and b.has(model) for w in b.workers})
    if not workers:
        raise InvalidInput(f"model {model!r} is only on backends given by URL; LLMPool.map needs workers")
    return workers


class _MapRun:
    """One ``run_map``: its tasks, their retries (elsewhere when possible) and results."""

    def __init__(self, client: Any, kind: str, model: str, items: list[Any], fields: dict[str, Any],
                 workers: list[str], retries: int) -> None:
        self.client, self.kind, self.model, self.items, self.fields = client, kind, model, items, fields
        self.workers, self.retries = workers, retries
        self.run_id = uuid.uuid4().hex[:10]
        self.results: list[dict[str, Any] | None] = [None] * len(items)
        self.index_of: dict[str, int] = {}
        self.attempts = [0] * len(items)
        self.failed_workers: set[str] = set()

    def submit(self, index: int) -> Any:
        allowed = [w for w in self.workers if w not in self.failed_workers] or self.workers
        key = f"caelum-llm-{self.run_id}-{index}" + (f"-retry{self.attempts[index]}" if self.attempts[index] else "")
        future = self.client.submit(llm_task, self.kind, self.model, self.items[index], self.fields, self.run_id,
                                    index, key=key, workers=allowed, allow_other_workers=False, pure=False)
        self.index_of[future.key] = index
        return future

    def settle(self, future: Any) -> tuple[int, Any]:
        """``(index, retry)``: the item's result is kept, or ``retry`` is its new future."""
        index = self.index_of[future.key]
        if future.status == "finished":
            self.results[index] = future.result()
            return index, None
        exc = future.exception()
        if isinstance(exc, LocalBackendFailed) and exc.worker:
            self.failed_workers.add(exc.worker)
        if self.attempts[index] < self.retries:  # elsewhere when possible; else the same worker again
            self.attempts[index] += 1
            return index, self.submit(index)
        self.results[index] = {"index": index, "ok": False, "response": None,
                               "error": str(exc) or type(exc).__name__, "backend": None, "machine": None,
                               "worker": getattr(exc, "worker", None), "latency_s": None}
        return index, None


def run_map(client: Any, model: str, items: Sequence[Any], *, kind: str = "generate",
            progress: bool | Callable[[int, int, int], None] = True, retries: int = 2,
            fields: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Submit one task per item on the machines serving ``model``; results in item order."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown batch kind {kind!r}; use one of {', '.join(KINDS)}")
    run = _MapRun(client, kind, model, list(items), dict(fields or {}), _serving_workers(client, model), retries)
    report = _progress_printer() if progress is True else (progress or None)
    events.emit(events.LLM, "map-started", sink=client, run_id=run.run_id, model=model, items=len(run.items),
                workers=run.workers)
    done = failed = 0
    pending = as_completed([run.submit(i) for i in range(len(run.items))])
    for future in pending:
        index, retry = run.settle(future)
        if retry is not None:
            pending.add(retry)
            continue
        done += 1
        failed += 0 if run.results[index]["ok"] else 1  # type: ignore[index]
        if report:
            report(done, len(run.items), failed)
    events.emit(events.LLM, "map-finished", sink=client, run_id=run.run_id, model=model, items=len(run.items),
                failed=failed)
    return [r for r in run.results if r is not None]

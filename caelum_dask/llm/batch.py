"""``LLMPool.map``: a batch of LLM requests as Dask tasks next to the GPUs.

Each item is one task (an LLM call takes seconds; Dask's ~1 ms per task is noise), keyed
``llm_<kind>-<run>.<index>`` (annotated ``caelum_kind: llm``) and restricted (``workers=``, ``allow_other_workers=False``) to
the workers of machines whose Ollama has the model; Dask's scheduler balances the items over
them. Inside the task the worker calls *its own machine's* Ollama at its local URL (so a GPU
box can keep Ollama bound to 127.0.0.1), preferring a server with the model loaded. A task
whose local backends fail raises :class:`LocalBackendFailed`; the driver then resubmits that
item to the other machines (up to ``retries`` times). Other errors (a bad request) are that
item's result, never the batch's end.

Progress is a :class:`~caelum_dask.progress.ProgressEvent` (``job="llm"``) per finished item,
to the caller's ``progress`` callback: rendering it is the front door's business.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
from distributed import wait

from caelum_dask import events, keys
from caelum_dask.errors import CaelumError, InvalidInput, SchedulerUnreachable
from caelum_dask.llm import discovery
from caelum_dask.llm.backend import normalize_model, reachable_url
from caelum_dask.llm.results import MapItem
from caelum_dask.llm.router import Router
from caelum_dask.progress import ProgressCallback, ProgressEvent

#: how long the map waits for a result before checking that its items still have workers
STRANDED_CHECK_SECONDS = 2.0
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


def llm_task(kind: str, model: str, item: Any, fields: dict[str, Any], run_id: str, index: int,
             timeout: float) -> MapItem:
    """Runs on a worker: call this machine's Ollama for one item (``timeout``: the caller's
    ``caelum.llm.request-timeout``, passed along because a worker's config is not the caller's)."""
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
        result = MapItem(index=index, ok=status < 400, backend=reachable_url(url, worker.ip),
                         machine=hostname or worker.ip, worker=worker.address, latency_s=round(latency, 4))
        if status >= 500 or (status == 404 and "not found" in text):
            last = f"{url} answered {status}: {text[:200]}"
            _emit(worker, result, model, latency, False)
            continue
        _emit(worker, result, model, latency, result.ok)
        if status >= 400:
            result.error = f"{url} answered {status}: {text[:300]}"
        else:
            result.response = response.json()
        return result
    raise LocalBackendFailed(f"Ollama on {hostname or worker.ip} failed: {last}", worker.address)


def _emit(worker: Any, result: MapItem, model: str, latency: float, ok: bool) -> None:
    try:
        events.emit(events.LLM, "request-finished", sink=worker, backend=result.backend, machine=result.machine,
                    model=model, latency_s=round(latency, 4), ok=ok)
    except Exception:
        pass


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
                 workers: list[str], retries: int, timeout: float) -> None:
        self.client, self.kind, self.model, self.items, self.fields = client, kind, model, items, fields
        self.workers, self.retries, self.timeout = workers, retries, timeout
        self.run_id = uuid.uuid4().hex[:10]
        self.results: list[MapItem | None] = [None] * len(items)
        self.index_of: dict[str, int] = {}
        self.attempts = [0] * len(items)
        self.failed_workers: set[str] = set()
        self.allowed: dict[int, list[str]] = {}

    def submit(self, index: int) -> Any:
        allowed = [w for w in self.workers if w not in self.failed_workers] or self.workers
        self.allowed[index] = allowed
        part = f"{index}" + (f"r{self.attempts[index]}" if self.attempts[index] else "")
        with keys.kind("llm"):
            future = self.client.submit(llm_task, self.kind, self.model, self.items[index], self.fields, self.run_id,
                                        index, self.timeout, key=keys.task_key(f"llm_{self.kind}", self.run_id, part),
                                        workers=allowed, allow_other_workers=False, pure=False)
        self.index_of[future.key] = index
        return future

    def settle(self, future: Any) -> tuple[int, Any]:
        """``(index, retry)``: the item's result is kept, or ``retry`` is its new future."""
        index = self.index_of[future.key]
        if future.status == "finished":
            self.results[index] = future.result()
            return index, None
        if future.status == "cancelled":  # the client lost the scheduler: retrying would wait forever
            raise SchedulerUnreachable(f"the scheduler lost LLM batch {self.run_id} (item {index} was cancelled); "
                                "check the cluster and run the batch again")
        exc = future.exception()
        if isinstance(exc, LocalBackendFailed) and exc.worker:
            self.failed_workers.add(exc.worker)
        if self.attempts[index] < self.retries:  # elsewhere when possible; else the same worker again
            self.attempts[index] += 1
            return index, self.submit(index)
        self.results[index] = MapItem(index=index, ok=False, error=str(exc) or type(exc).__name__,
                                      worker=getattr(exc, "worker", None))
        return index, None

    def stranded(self, pending: set[Any]) -> list[Any]:
        """Pending items none of whose allowed workers is in the cluster any more.

        Items are pinned to the workers next to the model's Ollama (``allow_other_workers=False``);
        when every one of them has died, Dask would keep the item waiting forever. They are
        cancelled and submitted again to the workers that serve the model now (replacements on
        the same machines, or other machines), or fail with a clear error when none does.
        """
        alive = set(self.client.scheduler_info()["workers"])
        lost = [f for f in pending if not (set(self.allowed_for(self.index_of[f.key])) & alive)]
        if not lost:
            return []
        self.client.cancel(lost)
        try:
            self.workers = _serving_workers(self.client, self.model)
        except CaelumError as exc:
            for future in lost:
                index = self.index_of[future.key]
                self.results[index] = MapItem(index=index, ok=False, error=f"its workers left the cluster: {exc}")
            return []
        return [self.submit(self.index_of[f.key]) for f in lost]

    def allowed_for(self, index: int) -> list[str]:
        return self.allowed.get(index, self.workers)


def _first_finished(pending: set[Any]) -> set[Any]:
    """The futures of ``pending`` that finished, waiting at most STRANDED_CHECK_SECONDS for one."""
    try:
        finished, _ = wait(pending, timeout=STRANDED_CHECK_SECONDS, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return set()
    return set(finished)


def _count_unplaced(run: _MapRun, done: int, failed: int, total: int,
                    progress: ProgressCallback | None) -> tuple[int, int]:
    """Account items that failed without a task (no worker serves the model any more)."""
    settled = sum(r is not None for r in run.results)
    while done < settled:
        done += 1
        failed += 1
        if progress is not None:
            progress(ProgressEvent(job="llm", done=done, total=total, failed=failed, run_id=run.run_id))
    return done, failed


def run_map(client: Any, model: str, items: Sequence[Any], *, kind: str = "generate",
            progress: ProgressCallback | None = None, retries: int | None = None,
            request_timeout: float | None = None, fields: dict[str, Any] | None = None) -> list[MapItem]:
    """Submit one task per item on the machines serving ``model``; results in item order.

    ``retries`` and ``request_timeout`` default to ``caelum.llm.*`` of this (the calling)
    process; ``progress`` gets ``ProgressEvent(job="llm", done, total, failed)`` per item.
    """
    from caelum_dask.llm.options import LLMOptions

    if kind not in KINDS:
        raise InvalidInput(f"unknown batch kind {kind!r}; use one of {', '.join(KINDS)}")
    if progress is False:  # the old spelling of "no progress"
        progress = None
    if progress is not None and not callable(progress):
        raise InvalidInput("progress takes a callback of ProgressEvent (library code prints nothing; e.g. "
                           "caelum_dask.cli.progress.ProgressDisplay('caelum llm', noun='requests')), or None")
    options = LLMOptions.from_config(retries=retries, request_timeout=request_timeout)
    run = _MapRun(client, kind, model, list(items), dict(fields or {}), _serving_workers(client, model),
                  int(options.retries), float(options.request_timeout))  # type: ignore[arg-type]
    total = len(run.items)
    events.emit(events.LLM, "map-started", sink=client, run_id=run.run_id, model=model, items=total,
                workers=run.workers)
    if progress is not None:
        progress(ProgressEvent(job="llm", done=0, total=total, run_id=run.run_id))
    done = failed = 0
    pending = {run.submit(i) for i in range(total)}
    while pending:
        finished = _first_finished(pending)
        pending -= finished
        for future in finished:
            index, retry = run.settle(future)
            if retry is not None:
                pending.add(retry)
                continue
            done += 1
            failed += 0 if run.results[index].ok else 1  # type: ignore[union-attr]
            if progress is not None:
                progress(ProgressEvent(job="llm", done=done, total=total, failed=failed, run_id=run.run_id))
        if not finished:  # nothing for a while: are some items waiting for workers that are gone?
            replaced = run.stranded(pending)
            pending = {f for f in pending if f.status != "cancelled"} | set(replaced)
            done, failed = _count_unplaced(run, done, failed, total, progress)
    events.emit(events.LLM, "map-finished", sink=client, run_id=run.run_id, model=model, items=total,
                failed=failed)
    results = [r for r in run.results if r is not None]
    _learn_speeds(client, model, results)
    return results


def _learn_speeds(client: Any, model: str, results: list[MapItem]) -> None:
    """Each machine's tokens per second for ``model`` in this map, into the learned figures."""
    from caelum_dask.llm.speed import TokenRates

    rates = TokenRates()
    for item in results:
        rates.note(model, item.machine, item.response)
    rates.send(client)

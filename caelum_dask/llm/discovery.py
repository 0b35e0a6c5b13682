"""Discovery: every worker finds the Ollama server(s) of its machine and reports them.

Only the machine itself can see an Ollama bound to 127.0.0.1 and read its GPUs, so probing is
worker-side. It is a Dask :class:`~distributed.diagnostics.plugin.WorkerPlugin` (registered
once from any client, idempotent, installed on workers that join later) that probes
``/api/version``, ``/api/tags`` and ``/api/ps`` every ``caelum.llm.probe-interval`` on the
worker's event loop (async httpx, so tasks never wait) and reads NVML. The latest report is a
worker ``metrics`` entry, which Dask ships with every heartbeat and the scheduler keeps in
``WorkerState.metrics``: no side channel, no extra connections. Pools read the table through
:func:`fetch_backends` (one ``run_on_scheduler`` call that merges the workers of a machine).

Workers started with the caelum preload add the plugin at start-up (``caelum.llm.
discover-on-start``), so the table is there before anyone asks; plain ``dask worker``s get it
from the first pool that needs it.

An unreachable server is reported ``up: false`` with the reason and a ``backend-down`` event
on ``caelum.llm``; it is never an error for the worker.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
import urllib.parse
from collections.abc import Iterable
from typing import Any

import dask.utils
import httpx
from distributed.diagnostics.plugin import WorkerPlugin

from caelum_dask import config, events
from caelum_dask.llm.backend import Backend
from caelum_dask.machine import machine_id

logger = logging.getLogger(__name__)

PLUGIN_NAME = "caelum-llm-discovery"
METRICS_KEY = "caelum_llm"
DEFAULT_HOST = "http://127.0.0.1:11434"


def parse_host(value: str | None) -> str:
    """An Ollama host setting (``OLLAMA_HOST`` syntax) as a base URL.

    ``""``/None → ``http://127.0.0.1:11434``; ``0.0.0.0`` (listen everywhere) is probed at
    127.0.0.1; ``host``, ``host:port``, ``:port`` and full URLs are accepted, as Ollama does.
    """
    text = (value or "").strip()
    scheme, sep, rest = text.partition("://")
    port = 11434
    if not sep:
        scheme, rest = "http", text
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    host = split.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    base = f"{scheme}://{host}:{split.port or port}"
    return f"{base}/{path}" if path else base


def configured_hosts() -> list[str]:
    """The Ollama servers this machine runs: ``OLLAMA_HOST`` (else the default) + config.

    ``caelum.llm.hosts`` adds more (a list, or a comma-separated string from the environment,
    e.g. ``DASK_CAELUM__LLM__HOSTS``); ``caelum.llm.probe-default: false`` drops the
    OLLAMA_HOST/default entry.
    """
    hosts: list[str] = []
    if config.get("llm.probe-default"):
        hosts.append(parse_host(os.environ.get("OLLAMA_HOST")))
    extra = config.get("llm.hosts") or []
    if isinstance(extra, str):
        extra = [h for h in extra.split(",") if h.strip()]
    hosts.extend(parse_host(h) for h in extra)
    return list(dict.fromkeys(hosts))


async def probe(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """One server's state: version, installed models (/api/tags), loaded models (/api/ps)."""
    checked = time.time()
    try:
        version, tags, ps = await asyncio.gather(
            client.get(f"{url}/api/version"), client.get(f"{url}/api/tags"), client.get(f"{url}/api/ps")
        )
        for response in (version, tags, ps):
            response.raise_for_status()
        return {
            "url": url,
            "up": True,
            "version": version.json().get("version"),
            "models": tags.json().get("models") or [],
            "loaded": ps.json().get("models") or [],
            "error": None,
            "checked_at": checked,
        }
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "up": False, "version": None, "models": [], "loaded": [],
                "error": _reason(exc), "checked_at": checked}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def read_gpus() -> list[dict[str, Any]]:
    """Every GPU of this machine (Ollama uses them all, whatever the worker was given)."""
    from caelum_dask.nvml import describe_gpus

    return [gpu.to_dict() for gpu in describe_gpus()]


class LLMDiscovery(WorkerPlugin):
    """Worker plugin: probe this machine's Ollama servers; report through heartbeat metrics."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self) -> None:
        self.report: dict[str, Any] = {"backends": [], "gpus": []}
        self.worker: Any = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._was_up: dict[str, bool] = {}
        self._registered: set[str] = set()

    async def setup(self, worker: Any) -> None:
        self.worker = worker
        self._client = httpx.AsyncClient(timeout=dask.utils.parse_timedelta(config.get("llm.probe-timeout")))
        await self.refresh()
        worker.metrics[METRICS_KEY] = lambda _worker: self.report
        self._task = asyncio.create_task(self._loop())

    async def teardown(self, worker: Any) -> None:
        worker.metrics.pop(METRICS_KEY, None)
        if self._task is not None:
            self._task.cancel()
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        interval = dask.utils.parse_timedelta(config.get("llm.probe-interval"))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # never let discovery take a worker down
                logger.exception("caelum llm discovery failed")

    async def refresh(self) -> dict[str, Any]:
        assert self._client is not None
        reports = await asyncio.gather(*(probe(self._client, url) for url in configured_hosts()))
        try:
            gpus = await asyncio.to_thread(read_gpus)
        except Exception:
            gpus = []
        from caelum_dask.machine import describe_local_machine

        self.report = {"hostname": describe_local_machine()["hostname"], "backends": list(reports), "gpus": gpus}
        for report in reports:
            previous = self._was_up.get(report["url"])
            if report["up"] and report["url"] not in self._registered:
                await self._register_service(report["url"])
            if previous and not report["up"]:
                self._emit("backend-down", backend=report["url"], reason=report["error"] or "unreachable")
            elif previous is False and report["up"]:
                self._emit("backend-up", backend=report["url"])
            self._was_up[report["url"]] = report["up"]
        return self.report

    async def _register_service(self, url: str) -> None:
        """Show the server in the machine registry's service table (``caelum status``)."""
        parts = urllib.parse.urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1", self.worker.ip) or not parts.port:
            return
        hostname = self.report.get("hostname") or ""
        name = "ollama" if url == configured_hosts()[0] else f"ollama-{parts.port}"
        try:
            reply = await self.worker.scheduler.caelum_register_service(
                machine=machine_id(hostname, self.worker.ip), name=name, port=parts.port)
        except Exception:  # a scheduler without the caelum registry: nothing to record
            logger.debug("could not register %s", url, exc_info=True)
            self._registered.add(url)
            return
        # not OK: this worker has not registered yet (retried next probe) or the port is taken
        if reply.get("status") == "OK" or "already used" in str(reply.get("message")):
            self._registered.add(url)

    def _emit(self, event: str, **fields: Any) -> None:
        try:
            events.emit(events.LLM, event, sink=self.worker, machine=self.report.get("hostname"), **fields)
        except Exception:  # a closing worker cannot log events; nothing to report then
            logger.debug("could not emit %s", event, exc_info=True)


def collect(dask_scheduler: Any) -> list[dict[str, Any]]:
    """Scheduler side: every worker's latest report, with the worker's machine identity."""
    out = []
    for ws in dask_scheduler.workers.values():
        report = (ws.metrics or {}).get(METRICS_KEY)
        if not report:
            continue
        hostname = (ws.extra.get("caelum") or {}).get("hostname") or report.get("hostname") or ws.host
        out.append({"worker": ws.address, "host": ws.host, "hostname": hostname,
                    "machine": machine_id(hostname, ws.host), **report})
    return out


def merge_reports(reports: Iterable[dict[str, Any]]) -> list[Backend]:
    """One :class:`Backend` per (machine, server): workers of a machine see the same servers."""
    merged: dict[tuple[str, str], Backend] = {}
    for report in reports:
        for entry in report.get("backends") or []:
            key = (report["machine"], entry["url"])
            known = merged.get(key)
            if known is None or entry.get("checked_at", 0) > known.checked_at:
                workers = (known.workers if known else [])
                merged[key] = Backend.from_report(
                    entry, machine=report["machine"], hostname=report["hostname"],
                    reachable_host=report.get("host"), workers=workers, gpus=report.get("gpus") or [],
                )
            merged[key].workers = sorted({*merged[key].workers, report["worker"]})
    return sorted(merged.values(), key=lambda b: (b.machine, b.url))


def ensure_discovery(client: Any, timeout: float = 10.0) -> None:
    """Register the discovery plugin (a no-op when present) and wait for the first reports.

    Waits until every worker has sent a report, or ``timeout`` seconds; a worker that is slow
    to report simply joins the table at its next heartbeat.
    """
    # Workers with the caelum preload already run it; register it for the others (and for
    # workers that join later) unless every worker reports already.
    if not client.run_on_scheduler(_has_plugin) and not client.run_on_scheduler(_all_reported):
        client.register_plugin(LLMDiscovery(), name=PLUGIN_NAME)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.run_on_scheduler(_all_reported):
            return
        time.sleep(0.1)


def _has_plugin(dask_scheduler: Any) -> bool:
    return PLUGIN_NAME in dask_scheduler.worker_plugins


def _all_reported(dask_scheduler: Any) -> bool:
    workers = dask_scheduler.workers.values()
    return bool(workers) and all(METRICS_KEY in (ws.metrics or {}) for ws in workers)


def fetch_backends(client: Any) -> list[Backend]:
    """The pool's backend table, read from the scheduler (workers' latest heartbeats)."""
    return merge_reports(client.run_on_scheduler(collect))


def probe_urls(urls: Iterable[str], timeout: float | None = None) -> list[Backend]:
    """Probe servers directly from this process (pools given ``backends=[…]``, no cluster)."""
    timeout = timeout if timeout is not None else dask.utils.parse_timedelta(config.get("llm.probe-timeout"))

    async def run() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=timeout) as client:
            return list(await asyncio.gather(*(probe(client, parse_host(u)) for u in urls)))

    reports = asyncio.run(run())
    gpus: list[dict[str, Any]] = []
    backends = []
    for report in reports:
        host = urllib.parse.urlsplit(report["url"]).hostname or "localhost"
        backends.extend(merge_reports([{"machine": host, "hostname": host, "host": None,
                                        "worker": "", "backends": [report], "gpus": gpus}]))
    for backend in backends:
        backend.workers = []
    return backends

"""``caelum llm``: serve the pool, show its backends, pull models onto machines."""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from caelum_dask.cli._options import json_option, open_client, print_json, scheduler_option
from caelum_dask.cli.progress import ProgressDisplay
from caelum_dask.errors import InvalidInput, PortTaken
from caelum_dask.progress import ProgressEvent

backend_option = click.option(
    "--backend", "backends", multiple=True, metavar="URL",
    help="Pool these Ollama servers directly instead of discovering them through the cluster "
         "(repeatable, e.g. --backend http://gpu1:11434).")


def _check_backends(backends: tuple[str, ...]) -> None:
    """Refuse a --backend that can never be an Ollama server (bad scheme, port, unknown host)."""
    import urllib.parse

    from caelum_dask.llm.discovery import parse_host

    for value in backends:
        try:
            split = urllib.parse.urlsplit(parse_host(value))
            port = split.port
        except ValueError:  # e.g. a port out of range or not a number
            split, port = urllib.parse.urlsplit(""), -1
        if split.scheme not in ("http", "https") or not split.hostname or port is None or not 0 < port < 65536:
            raise InvalidInput(f"--backend {value!r} is not an Ollama URL; give one like http://gpu1:11434")
        try:
            socket.getaddrinfo(split.hostname, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise InvalidInput(f"--backend {value!r}: host {split.hostname!r} is not known (DNS); "
                               "check the name or give its IP, e.g. http://10.0.0.7:11434") from None


@contextlib.contextmanager
def _pool(scheduler: str | None, backends: tuple[str, ...], quiet: bool = False) -> Iterator[Any]:
    from caelum_dask.llm import LLMPool

    _check_backends(backends)
    if backends:
        with LLMPool(backends=list(backends)) as pool:
            yield pool
        return
    with open_client(scheduler, quiet=quiet) as client, LLMPool(client) as pool:
        yield pool


@click.group()
def llm() -> None:
    """The LLM pool: every machine's Ollama as one GPU-aware endpoint.

    Workers find the Ollama server(s) of their machine (OLLAMA_HOST, else 127.0.0.1:11434,
    plus the config key caelum.llm.hosts) and report models, loaded models and GPU memory.
    """


@llm.command()
@scheduler_option
@backend_option
@click.option("--host", default=None, help="Address to listen on (default: caelum.llm.serve-host, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default: caelum.llm.serve-port, 11434; 0 picks a free one).")
def serve(scheduler: str | None, backends: tuple[str, ...], host: str | None, port: int | None) -> None:
    """Serve the pool as an Ollama-compatible HTTP endpoint.

    /api/generate, /api/chat, /api/embed are routed per request (loaded model first, then
    free GPU memory, then least busy; failures retried elsewhere); /api/tags and /api/ps are
    aggregated over the pool. Point any Ollama client at it, e.g.
    OLLAMA_HOST=http://127.0.0.1:11434 ollama run llama3.2. Stop with Ctrl-C.
    """
    import uvicorn

    from caelum_dask.llm.options import LLMOptions
    from caelum_dask.llm.server import create_app

    options = LLMOptions.from_config(serve_host=host or None, serve_port=port)
    host, port = str(options.serve_host), int(options.serve_port)  # type: ignore[arg-type]
    sock = _bind(host, port)
    # uvicorn re-raises the signal that stopped it; make SIGTERM/Ctrl-C a clean exit so the
    # pool closes (and sends its last events) instead of the process dying mid-cleanup.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        with _pool(scheduler, backends) as pool:
            up = [b for b in pool.backends() if b.up]
            models = sorted({m for b in up for m in b.models})
            bound = sock.getsockname()[1]
            click.echo(f"caelum llm: serving {len(up)} backend(s) up ({', '.join(models) or 'no models'}) "
                       f"at http://{host}:{bound}", err=True)
            server = uvicorn.Server(uvicorn.Config(create_app(pool), log_level="warning", access_log=False,
                                                   timeout_graceful_shutdown=5))
            try:
                server.run(sockets=[sock])
            except (KeyboardInterrupt, _Stopped):
                pass
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("caelum llm: stopped", err=True)


class _Stopped(Exception):
    pass


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise _Stopped()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(f"port {port} on {host} is already in use (is Ollama itself listening there?); "
                            "choose another with --port") from None
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    # Accepted connections inherit this; without it small NDJSON lines wait ~40 ms for
    # delayed ACKs (Nagle), which also made every non-streamed reply 40 ms slower.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@llm.command()
@scheduler_option
@backend_option
@json_option
def status(scheduler: str | None, backends: tuple[str, ...], as_json: bool) -> None:
    """Ollama backends of the pool: up/down, models, loaded models, GPU memory, load.

    --json prints {"backends": [{url, machine, up, version, models, loaded, gpus, gpu_free_gb,
    in_flight, cooldown_s, …}], "models": {name: {"backends", "loaded_on"}}, …} (docs/llm.md).
    """
    with _pool(scheduler, backends, quiet=as_json) as pool:
        report = pool.status()
    if as_json:
        print_json(report)
        return
    rows = report["backends"]
    click.echo(f"backends   {len(rows)} ({sum(1 for b in rows if b['up'])} up)")
    for b in rows:
        state = "UP" if b["up"] else "DOWN"
        gpu = f", GPU free {b['gpu_free_gb']} GiB" if b.get("gpu_free_gb") is not None else ""
        util = f" ({b['gpu_utilization']:.0f}% busy)" if b.get("gpu_utilization") is not None else ""
        click.echo(f"\n{b['url']}  {state}  machine {b['machine']}"
                   + (f", ollama {b['version']}" if b.get("version") else "") + gpu + util)
        if not b["up"]:
            click.echo(f"  {b.get('error') or 'unreachable'}")
            continue
        click.echo(f"  models  {', '.join(b['models']) or '(none)'}")
        loaded = ", ".join(f"{m['model']} ({m['size_vram_gb']} GiB VRAM)" for m in b["loaded"])
        click.echo(f"  loaded  {loaded or '(none)'}")
        if b.get("cooldown_s"):
            click.echo(f"  cooling down {b['cooldown_s']}s after: {b.get('last_error')}")


@llm.command()
@click.argument("model")
@scheduler_option
@backend_option
@click.option("--machines", "machines", multiple=True, metavar="NAME",
              help="Machines to pull onto (id, hostname, IP or backend URL; repeat or comma-separate). "
                   "Default: every machine whose Ollama is up.")
@json_option
def pull(model: str, scheduler: str | None, backends: tuple[str, ...], machines: tuple[str, ...], as_json: bool) -> None:
    """Pull MODEL onto chosen machines through their Ollama's /api/pull (progress on stderr).

    --json prints {"model", "results": [{"backend", "machine", "ok", "status", "error"}]}.
    Exits non-zero when any pull failed.
    """
    wanted = [w.strip() for item in machines for w in item.split(",") if w.strip()]
    with _pool(scheduler, backends, quiet=as_json) as pool:
        table = pool.backends()
    targets = _targets(table, wanted)
    with ProgressDisplay("caelum llm pull", noun="machines", live=not as_json) as display:
        results = _pull_all(targets, model, None if as_json else display)
    report = {"model": model, "results": results}
    if as_json:
        print_json(report)
    else:
        for r in results:
            click.echo(f"{r['machine']} ({r['backend']}): " + ("pulled" if r["ok"] else f"FAILED: {r['error']}"))
    if not all(r["ok"] for r in results):
        sys.exit(1)


def _targets(table: list[Any], wanted: list[str]) -> list[Any]:
    up = [b for b in table if b.up]
    if not wanted:
        if not up:
            raise InvalidInput("no Ollama backend is up in the pool; start Ollama on a worker machine first")
        return up
    chosen = []
    for name in wanted:
        match = [b for b in table if name in (b.machine, b.hostname, b.url, b.local_url)
                 or b.machine.split("@")[-1] == name or b.machine.split("@")[0] == name]
        if not match:
            known = ", ".join(sorted({b.machine for b in table})) or "none"
            raise InvalidInput(f"no Ollama backend on machine {name!r}; machines with Ollama: {known}")
        down = [b for b in match if not b.up]
        if len(down) == len(match):
            raise InvalidInput(f"Ollama on {name!r} is down ({down[0].error or 'unreachable'}); start it and retry")
        chosen.extend(b for b in match if b.up and b not in chosen)
    return chosen


def _pull_all(targets: list[Any], model: str, display: ProgressDisplay | None) -> list[dict[str, Any]]:
    """Pull onto every target at once; ``display`` shows each server's status and the count done."""
    results: list[dict[str, Any] | None] = [None] * len(targets)
    say = display.status if display is not None else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as ex:
        running = {ex.submit(_pull_one, b, model, say): i for i, b in enumerate(targets)}
        for done, future in enumerate(concurrent.futures.as_completed(running), start=1):
            results[running[future]] = future.result()
            if display is not None:
                display(ProgressEvent(job="llm", done=done, total=len(targets),
                                      failed=sum(1 for r in results if r is not None and not r["ok"])))
    return [r for r in results if r is not None]


def _pull_one(backend: Any, model: str, say: Callable[[str], None] | None) -> dict[str, Any]:
    import httpx

    result: dict[str, Any] = {"backend": backend.url, "machine": backend.machine, "ok": False,
                              "status": None, "error": None}
    last_pct = -1
    try:
        with httpx.stream("POST", f"{backend.url}/api/pull", json={"model": model, "stream": True},
                          timeout=httpx.Timeout(None, connect=10)) as response:
            if response.status_code >= 400:
                response.read()
                result["error"] = _error_text(response.text)
                return result
            for line in response.iter_lines():
                if not line:
                    continue
                part = json.loads(line)
                if part.get("error"):
                    result["error"] = part["error"]
                    return result
                result["status"] = part.get("status")
                if say is not None:
                    pct = int(100 * part["completed"] / part["total"]) if part.get("total") and part.get("completed") else None
                    if pct is None or pct >= last_pct + 10 or pct == 100:
                        last_pct = pct if pct is not None else last_pct
                        shown = f" {pct}%" if pct is not None else ""
                        say(f"{backend.machine}: {part.get('status')}{shown}")
    except httpx.HTTPError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result["ok"] = result["status"] == "success"
    if not result["ok"] and not result["error"]:
        result["error"] = f"pull ended with status {result['status']!r}"
    return result


def _error_text(text: str) -> str:
    try:
        return str(json.loads(text).get("error", text))
    except ValueError:
        return text.strip()[:300]


COMMANDS = [llm]

"""connect() with the embedded fallback, and the client side of the machine registry."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import dask.config
from distributed import Client, Security

from caelum_dask import config
from caelum_dask.errors import InvalidInput, PortTaken, SchedulerUnreachable
from caelum_dask.slots import SLOTS_ENV

SCHEDULER_ENV = "CAELUM_SCHEDULER"


def resolve_address(address: str | None = None) -> str | None:
    """The scheduler to use: argument > ``CAELUM_SCHEDULER`` > ``caelum.scheduler-address``.

    ``None`` means: start an embedded LocalCluster.
    """
    return address or os.environ.get(SCHEDULER_ENV) or config.get("scheduler-address") or None


def check_address(address: str) -> str:
    """Refuse a malformed scheduler address with one line (Dask raises a bare ValueError)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unparsable"
        raise InvalidInput(
            f"bad scheduler address {address!r} ({reason}); give one like tcp://10.0.0.5:8786 "
            "or tls://scheduler.lan:8786"
        ) from None
    return address


def embedded_cluster_kwargs() -> dict[str, Any]:
    """LocalCluster arguments for the embedded cluster: same preloads as a real cluster."""
    n_workers = config.get("embedded.n-workers") or min(os.cpu_count() or 1, 4)
    threads = int(config.get("embedded.threads-per-worker") or 1)
    return {
        "n_workers": int(n_workers),
        "threads_per_worker": threads,
        "processes": bool(config.get("embedded.processes")),
        "dashboard_address": config.get("embedded.dashboard-address"),
        "host": "127.0.0.1",
        "scheduler_kwargs": {"preload": ["caelum_dask.scheduler"]},
        "preload": ["caelum_dask.worker"],
        "env": {SLOTS_ENV: str(n_workers)},
    }


def connect(
    address: str | None = None,
    *,
    security: Security | None = None,
    timeout: float | None = None,
    tls: str | os.PathLike[str] | None = None,
    tls_name: str | None = None,
    **embedded_overrides: Any,
) -> Client:
    """A Dask client for the caelum cluster, or for an embedded one on this machine.

    The address comes from ``address``, then ``CAELUM_SCHEDULER``, then the Dask config key
    ``caelum.scheduler-address``; with none of them an embedded LocalCluster is started with
    the caelum preloads, so this machine shows in the registry exactly as in a real cluster.
    ``security`` is a Dask Security object for TLS clusters. The returned client owns the
    embedded cluster: closing the client (or leaving its ``with`` block) shuts it down.
    An unreachable scheduler raises :class:`SchedulerUnreachable` after ``timeout`` seconds.

    ``tls`` is a ``caelum certs`` folder (default: the config key ``caelum.tls.dir``): mutual
    TLS with this machine's certificate (``tls_name``, config ``caelum.tls.name``, host name);
    see :mod:`caelum_dask.security`.
    """
    from caelum_dask import security as _security

    target = resolve_address(address)
    if security is None:
        security = _security.resolve_security(tls, tls_name)
    if security is not None and security.require_encryption and target is not None:
        target = _security.require_tls_address(target)
    if target is None:
        kwargs = {**embedded_cluster_kwargs(), **embedded_overrides}
        settings: dict[str, Any] = {"distributed.worker.daemon": False}
        if security is not None:
            # Client(security=…) keeps the Security for itself; the LocalCluster it starts
            # builds its own Security() from the config, so put the files there too.
            kwargs["security"] = security
            kwargs["protocol"] = "tls://"
            settings.update(_security.dask_tls_config(security))
        with dask.config.set(settings):
            return Client(**kwargs)
    check_address(target)
    timeout = timeout if timeout is not None else float(config.get("connect-timeout"))
    if security is None and target.startswith(("tls://", "wss://")):
        raise InvalidInput(
            f"the scheduler {target} uses TLS but no certificates were given; pass --tls DIR "
            "(connect(tls=DIR)) or set the config key caelum.tls.dir"
        )
    try:
        client = Client(target, timeout=f"{timeout}s", security=security)
    except (OSError, TimeoutError) as exc:
        if security is None and _security.speaks_tls(target):
            raise SchedulerUnreachable(
                f"the scheduler at {target} requires TLS: connect to "
                f"tls://{target.split('://', 1)[-1]} with --tls DIR (or set caelum.tls.dir)"
            ) from None
        raise SchedulerUnreachable(
            f"cannot reach the scheduler at {target} ({_short(exc)}); start one with "
            "`caelum scheduler`, check the address, or unset --scheduler/CAELUM_SCHEDULER "
            "to run on the embedded cluster"
        ) from None
    return client


@contextlib.contextmanager
def client_scope(client: Client | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """The client an engine works with: the caller's, or one it connects and closes.

    Every engine takes ``client=`` / ``scheduler=`` and enters this: given a client, it is
    used and left open (the caller owns it); otherwise :func:`connect` resolves the cluster
    (``scheduler`` > ``CAELUM_SCHEDULER`` > config > embedded LocalCluster) and the client,
    with any embedded cluster, is closed when the block ends.
    """
    if client is not None:
        yield client
        return
    with connect(scheduler) as owned:
        yield owned


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) < 160 else text[:157] + "..."


def _ensure_registry(client: Client) -> None:
    """Install the registry on a scheduler that was started without the caelum preload."""
    from caelum_dask.registry import PLUGIN_NAME, MachineRegistry

    def has_registry(dask_scheduler: Any) -> bool:
        return PLUGIN_NAME in dask_scheduler.plugins

    if not client.run_on_scheduler(has_registry):
        client.register_plugin(MachineRegistry(), name=PLUGIN_NAME)


def machines(client: Client) -> list[dict[str, Any]]:
    """Every machine the scheduler knows, as MachineNode dicts (see README: JSON shapes).

    Works against any Dask scheduler: one started without the caelum preload gets the
    registry installed on first use.
    """
    try:
        nodes = client.sync(client.scheduler.caelum_machines)
    except (KeyError, ValueError, TypeError):
        nodes = None
    if isinstance(nodes, list):
        return nodes
    # A scheduler without the caelum preload has no such handler (it answers None).
    _ensure_registry(client)
    return client.sync(client.scheduler.caelum_machines)


def register_service(client: Client, machine: str, name: str, port: int) -> None:
    """Record a service's port on a machine; :class:`PortTaken` when the port is in use."""
    reply = client.sync(client.scheduler.caelum_register_service, machine=machine, name=name, port=port)
    if reply.get("status") != "OK":
        raise PortTaken(reply.get("message", f"port {port} is taken on {machine}"))


def status_report(client: Client, scheduler: str | None = None) -> dict[str, Any]:
    """The document ``caelum status --json`` prints (and the MCP ``cluster_status`` tool returns)."""
    from caelum_dask.dashboard import pages_mounted, pages_url
    from caelum_dask.security import dashboard_link

    link = dashboard_link(client)  # https:// when the scheduler serves its dashboard over TLS
    return {
        "scheduler": client.scheduler.address,
        "dashboard": link,
        "caelum_dashboard": pages_url(link) if pages_mounted(client) else None,
        "embedded": resolve_address(scheduler) is None,
        "machines": machines(client),
    }


@contextlib.contextmanager
def step_client() -> Iterator[Client]:
    """The client an engine's workflow step submits its sub-work with.

    Inside a Dask task (a workflow step) that is ``worker_client()``, which secedes from the
    worker's thread pool while the sub-work runs, so a step never deadlocks a small cluster;
    outside one it is :func:`connect` (closed afterwards).
    """
    from distributed import get_worker, worker_client

    try:
        get_worker()
    except ValueError:
        with connect() as client:
            yield client
        return
    with worker_client() as client:
        yield client

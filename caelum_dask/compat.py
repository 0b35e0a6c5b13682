"""Every private Dask name caelum relies on, in one place.

Dask's public API covers almost everything caelum does; where it does not, the private name is
read or called here and nowhere else, so a Dask upgrade that moves it breaks one small module
with an obvious fix. Each function says which private name it wraps and why no public one fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def topic_handler(client: Any, topic: str) -> Callable[..., Any] | None:
    """The handler ``Client.subscribe_topic`` installed for ``topic`` on this client, if any.

    Private: ``Client._event_handlers``. Dask keeps one handler per topic and client and has no
    getter; caelum's router (:func:`caelum_dask.events.listen`) chains to a handler somebody
    else installed instead of silently replacing it.
    """
    return getattr(client, "_event_handlers", {}).get(topic)


def parse_task_input(value: Any) -> Any:
    """``dask._task_spec.parse_input``: turn nested containers of TaskRefs into task arguments.

    Private: the public ``dask.task_spec`` module exports Task, TaskRef and DataNode but not
    the input parser the workflow compiler needs for a node's (args, kwargs).
    """
    from dask._task_spec import parse_input

    return parse_input(value)


def send_log_events(worker: Any, topic: str, messages: Iterable[Any]) -> None:
    """Put several events on the worker's batched stream, from the worker's event loop.

    Private: ``Worker.batched_send`` with the ``log-event`` op, which is exactly what the public
    ``Worker.log_event`` sends; called from a thread, ``log_event`` wakes the event loop once per
    message, which dominated the cost of thousands of short workflow tasks.
    """
    for message in messages:
        worker.batched_send({"op": "log-event", "topic": topic, "msg": message})


def worker_resources(worker: Any) -> dict[str, float]:
    """The resources a worker advertises (``Worker.state.total_resources``)."""
    return dict(worker.state.total_resources)


def worker_resources_idle(worker: Any) -> bool:
    """Whether none of the worker's resources is held by a running task.

    Private: ``Worker.state.available_resources``. Dask's ``Worker.set_resources`` makes the
    scheduler forget which resources are in use, so caelum changes totals only when none are.
    """
    state = worker.state
    return all(state.available_resources.get(k, v) == v for k, v in state.total_resources.items())


def advertise_resources(worker: Any, resources: dict[str, float]) -> None:
    """Add resources to a worker that has not registered with the scheduler yet.

    Private: ``Worker.state.total_resources`` / ``available_resources``. The public
    ``Worker.set_resources`` is a coroutine that also tells the scheduler, which a preload,
    running before registration, cannot do; registration then reports these totals.
    """
    for name, quantity in resources.items():
        worker.state.total_resources[name] = quantity
        worker.state.available_resources[name] = quantity


def server_ssl_contexts(server: Any) -> list[Any]:
    """The ``ssl.SSLContext`` objects a running Dask server (scheduler, worker, nanny) uses.

    Private: ``BaseTCPListener.server_args["ssl_options"]`` (the context a TLS listener wraps
    accepted sockets with) — Dask has no getter for it. The public ``server.connection_args``
    holds the context of its outgoing connections. A preload runs after the server listens, so
    adding the revocation list to these very contexts is the only way for a server started by
    Dask's CLI to refuse revoked peers (:mod:`caelum_dask.revocation`).
    """
    import ssl

    contexts = [getattr(server, "connection_args", {}).get("ssl_context")]
    for listener in getattr(server, "listeners", []):
        contexts.append(getattr(listener, "server_args", {}).get("ssl_options"))
    unique: list[Any] = []
    for context in contexts:
        if isinstance(context, ssl.SSLContext) and all(context is not seen for seen in unique):
            unique.append(context)
    return unique

"""Cluster events: JSON messages on Dask event topics, one topic per concern.

Dask already keeps an event log on the scheduler (``log_event`` / ``get_events`` /
``subscribe_topic``) reachable from clients, workers and the scheduler itself; caelum's
"task coordination" messages are simply events on ``caelum.*`` topics. Every message is a
flat JSON-serialisable dict with at least ``event`` (what happened) and ``time`` (ISO-8601 UTC).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

MACHINES = "caelum.machines"
WORKFLOWS = "caelum.workflows"
ANALYSIS = "caelum.analysis"
TESTS = "caelum.tests"
LLM = "caelum.llm"
BI = "caelum.bi"
#: adaptive host groups: the scheduler-side controller's decisions (caelum_dask/deploy/adaptive.py)
SCALING = "caelum.scaling"
TOPICS: tuple[str, ...] = (MACHINES, WORKFLOWS, ANALYSIS, TESTS, LLM, BI, SCALING)


def now_iso() -> str:
    """The current time as ISO-8601 UTC, the timestamp format of every caelum message."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def make_message(event: str, **fields: Any) -> dict[str, Any]:
    """Build one event message; fields must be JSON-serialisable (checked here, not later)."""
    message = {"event": event, "time": now_iso(), **fields}
    json.dumps(message)  # fail at the source, where the bug is
    return message


def emit(topic: str, event: str, *, sink: Any = None, **fields: Any) -> dict[str, Any]:
    """Log an event from wherever we are: a scheduler, a worker task, or a client.

    ``sink`` is anything with Dask's ``log_event(topic, msg)`` (Scheduler, Worker, Client);
    by default the current worker (inside a task) or the current client is used.
    """
    message = make_message(event, **fields)
    if sink is None:
        sink = _default_sink()
    if sink is not None:
        sink.log_event(topic, message)
    return message


def _default_sink() -> Any:
    from distributed import get_client, get_worker

    try:
        return get_worker()
    except ValueError:
        pass
    try:
        return get_client()
    except ValueError:
        return None


def as_json_line(topic: str, timestamp: float, message: Any) -> str:
    """One line of ``caelum events`` output."""
    return json.dumps({"topic": topic, "timestamp": timestamp, "message": message}, default=str)


class _Router:
    """The one Dask handler of a (client, topic), fanning events out to caelum's listeners."""

    def __init__(self, previous: Callable[..., Any] | None) -> None:
        self.listeners: dict[str, Callable[[tuple[float, Any]], None]] = {}
        self.previous = previous  # a handler somebody else had installed: still called
        self.subscribed = False  # whether the scheduler sends this client the topic now

    def __call__(self, event: tuple[float, Any]) -> Any:
        for listener in list(self.listeners.values()):
            listener(event)
        if self.previous is not None:
            outcome = self.previous(event)
            if inspect.isawaitable(outcome):
                return outcome
        return None


_ROUTERS_LOCK = threading.Lock()


def listen(client: Any, topic: str, key: str, listener: Callable[[tuple[float, Any]], None]) -> None:
    """Call ``listener(event)`` for every event on ``topic`` that reaches ``client``.

    Dask keeps one handler per topic and client; several runs on one client (and a dashboard or
    a user's own handler) share it through this router. ``key`` names the listener for
    :func:`unlisten`. Listeners run on the client's event loop: keep them short.
    """
    from caelum_dask import compat

    with _ROUTERS_LOCK:
        current = compat.topic_handler(client, topic)
        router = current if isinstance(current, _Router) else _Router(current)
        router.listeners[key] = listener
        if router is not current or not router.subscribed:
            client.subscribe_topic(topic, router)
            router.subscribed = True


def unlisten(client: Any, topic: str, key: str) -> None:
    """Stop calling the listener ``key``; the last one out unsubscribes (unless chained).

    The empty router stays installed as the topic's handler: events already on their way when
    the scheduler hears "unsubscribe" are dropped quietly (with no handler, Dask logs an ERROR
    "No event handler known for topic" for each), and the next :func:`listen` subscribes again.
    """
    from caelum_dask import compat

    with _ROUTERS_LOCK:
        router = compat.topic_handler(client, topic)
        if not isinstance(router, _Router):
            return
        router.listeners.pop(key, None)
        if not router.listeners and router.previous is None and router.subscribed:
            client.unsubscribe_topic(topic)
            router.subscribed = False

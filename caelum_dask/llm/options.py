"""The LLM pool's knobs, each with its default in ``caelum.llm.*`` (caelum_dask/caelum.yaml).

Why one options class: the pool, its router, the batch tasks and ``caelum llm serve`` used to
read ``caelum.llm.*`` each on its own (some with a fallback literal of their own, e.g. the
request timeout in two files), so a default could differ by entry point. :class:`LLMOptions`
names every knob once; a field left ``None`` is filled from the configuration of the process
that creates the pool (never a worker's: batch tasks get the values they need as arguments).
Durations accept what the config accepts (``"300s"``, ``"1m"``, seconds as numbers) and are
held as seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import dask.utils

from caelum_dask.options import ConfiguredOptions

#: fields that are durations (config strings such as "10s" become seconds)
DURATIONS = frozenset({"refresh_interval", "request_timeout", "queue_timeout", "cooldown", "max_cooldown",
                       "sticky_ttl"})

#: the router's knobs (``RouterSettings``), a part of the pool's
ROUTER_CONFIG: Mapping[str, str] = {
    "max_in_flight": "llm.max-in-flight", "cooldown": "llm.cooldown", "max_cooldown": "llm.max-cooldown",
    "sticky_ttl": "llm.sticky-ttl", "gpu_step_gb": "llm.gpu-memory-step-gb", "caps": "llm.caps",
}


def seconds(value: Any) -> float:
    """A configured duration (``"300s"``, ``"1m"``, ``2.5``) as seconds."""
    return float(dask.utils.parse_timedelta(value, default="seconds"))


def parse_durations(options: Any) -> None:
    """Turn the duration fields of an options dataclass that are set into seconds (in place)."""
    for f in fields(options):
        value = getattr(options, f.name)
        if f.name in DURATIONS and value is not None and not isinstance(value, float):
            object.__setattr__(options, f.name, seconds(value))


@dataclass
class LLMOptions(ConfiguredOptions):
    """Everything a pool can be told; ``None`` = ``caelum.llm.<key>`` (see ``CONFIG``)."""

    CONFIG: ClassVar[Mapping[str, str]] = {
        "retries": "llm.retries",
        "refresh_interval": "llm.refresh-interval",
        "request_timeout": "llm.request-timeout",
        "queue_timeout": "llm.queue-timeout",
        "serve_host": "llm.serve-host",
        "serve_port": "llm.serve-port",
        **ROUTER_CONFIG,
    }

    #: other backends tried after a failure (also the per-item retries of ``LLMPool.map``)
    retries: int | None = None
    #: how often the backend table is re-read
    refresh_interval: float | None = None
    #: longest one request may take
    request_timeout: float | None = None
    #: longest a request waits when every backend is at its cap
    queue_timeout: float | None = None
    max_in_flight: int | None = None
    caps: dict[str, int] | None = None
    cooldown: float | None = None
    max_cooldown: float | None = None
    sticky_ttl: float | None = None
    gpu_step_gb: float | None = None
    serve_host: str | None = None
    serve_port: int | None = None

    def __post_init__(self) -> None:
        parse_durations(self)

    def router_settings(self) -> Any:
        """The router's part of these options (a :class:`~caelum_dask.llm.router.RouterSettings`)."""
        from caelum_dask.llm.router import RouterSettings

        resolved = self.resolved()
        return RouterSettings(**{name: getattr(resolved, name) for name in ROUTER_CONFIG})


__all__ = ["DURATIONS", "LLMOptions", "ROUTER_CONFIG", "parse_durations", "seconds"]

"""What the LLM pool returns to users, as typed :class:`~caelum_dask.results.Result` dataclasses.

Why: batch items and the status report were dicts assembled in three places (the batch task,
the batch driver's failure path, the pool's status), so their keys could drift apart. The
dataclasses name every field once; ``to_dict()`` is the published JSON shape (docs/llm.md),
unchanged: ``LLMPool.map`` and ``LLMPool.status`` still return those dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from caelum_dask.llm.backend import Backend
from caelum_dask.llm.router import Router
from caelum_dask.results import Result


@dataclass
class MapItem(Result):
    """One item of a batch (``LLMPool.map``): Ollama's reply, or why there is none."""

    index: int
    ok: bool
    response: dict[str, Any] | None = None  # Ollama's JSON reply
    error: str | None = None
    backend: str | None = None  # the server's URL as other machines reach it
    machine: str | None = None
    worker: str | None = None  # the Dask worker that ran the item
    latency_s: float | None = None


@dataclass
class BackendRow(Result):
    """One row of ``caelum llm status``: the backend's table entry and the router's view of it."""

    backend: Backend = field(metadata={"json": False})
    health: dict[str, Any] = field(metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        return {**self.backend.to_dict(), **self.health}


@dataclass
class ModelPlaces(Result):
    """Where one model is installed and where it is loaded (backend URLs)."""

    backends: list[str] = field(default_factory=list)
    loaded_on: list[str] = field(default_factory=list)


@dataclass
class PoolStatus(Result):
    """``LLMPool.status()``: the backend table, a per-model summary and the router's counters."""

    backends: list[BackendRow]
    models: dict[str, ModelPlaces]
    router: dict[str, Any]
    refresh_error: str | None
    #: generated tokens per second seen per model and machine: ``{model: {machine: rate}}``
    tokens_per_second: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, backends: list[Backend], router: Router, refresh_error: str | None,
           tokens_per_second: dict[str, dict[str, float]] | None = None) -> PoolStatus:
        """The status of ``backends`` as ``router`` sees them now."""
        rows = []
        models: dict[str, ModelPlaces] = {}
        for b in backends:
            rows.append(BackendRow(b, router.health(b.url)))
            for name in b.models:
                places = models.setdefault(name, ModelPlaces())
                places.backends.append(b.url)
                if b.is_loaded(name):
                    places.loaded_on.append(b.url)
        stats: dict[str, Any] = dict(router.stats)
        stats["warm_hit_rate"] = round(stats["warm_hits"] / stats["requests"], 3) if stats["requests"] else None
        return cls(backends=rows, models=models, router=stats, refresh_error=refresh_error,
                   tokens_per_second=dict(tokens_per_second or {}))


__all__ = ["BackendRow", "MapItem", "ModelPlaces", "PoolStatus"]

"""The LLM pool: every machine's Ollama as one GPU-aware, model-aware, fault-tolerant endpoint.

* :mod:`.discovery` — workers probe their machine's Ollama servers (a worker plugin whose
  reports ride Dask heartbeats); :func:`fetch_backends` reads the table;
* :mod:`.router` — picks a backend: loaded model, free GPU memory, fewest in flight,
  power of two choices, caps, cooldowns, sticky sessions;
* :mod:`.pool` — :class:`LLMPool`, the facade: generate / chat / embed, sync and async,
  streaming (the sync API on an anyio blocking portal);
* :mod:`.transport` — HTTP to the backends with one failover policy for every kind of request;
* :mod:`.table` — the backend table, refreshed in the background, and the pool's events;
* :mod:`.options` — :class:`LLMOptions`, every knob with its default in ``caelum.llm.*``;
* :mod:`.results` — typed results (batch items, the status report) with their JSON shapes;
* :mod:`.batch` — ``LLMPool.map``: batches as Dask tasks on the machines serving the model;
* :mod:`.server` — ``caelum llm serve``: an Ollama-compatible HTTP endpoint;
* :mod:`.steps` — :func:`generate_step`, the workflow step.
"""

from __future__ import annotations

from caelum_dask.llm.backend import Backend, normalize_model
from caelum_dask.llm.discovery import LLMDiscovery, fetch_backends
from caelum_dask.llm.errors import BackendError, ModelUnavailable, NoBackendAvailable
from caelum_dask.llm.options import LLMOptions
from caelum_dask.llm.pool import LLMPool
from caelum_dask.llm.router import Router, RouterSettings

__all__ = [
    "Backend",
    "BackendError",
    "LLMDiscovery",
    "LLMOptions",
    "LLMPool",
    "ModelUnavailable",
    "NoBackendAvailable",
    "Router",
    "RouterSettings",
    "fetch_backends",
    "normalize_model",
]

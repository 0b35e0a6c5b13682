"""The router: which backend serves the next request for a model.

Order of preference, applied to the backends that have the model installed, are up, are not
cooling down and are below their concurrency cap:

1. a sticky session's backend (while its TTL lasts);
2. the model already loaded (Ollama's ``/api/ps``, or served here moments ago): loading a
   model costs seconds, so a warm GPU beats an idle cold one;
3. the most free GPU memory (NVML), compared in ``gpu-memory-step-gb`` steps so that small
   differences in readings never outweigh load;
4. the fewest requests in flight;
5. for a cold start, the backend where the fewest other models were in use lately (loading
   evicts as little live work as possible);
6. ties: power of two choices — two tied backends drawn at random, the one with the lower
   recent latency wins — which spreads load without herding onto one "best" backend.

A backend that fails (connection refused, 5xx, died mid-stream) is cooled down —
``cooldown`` seconds, doubling on each consecutive failure up to ``max-cooldown`` — and the
caller retries elsewhere. The router holds no sockets and does no I/O: it is shared by
threads and event loops behind one lock, and each decision takes microseconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from caelum_dask.llm.backend import Backend, normalize_model
from caelum_dask.llm.errors import ModelUnavailable, NoBackendAvailable
from caelum_dask.llm.options import ROUTER_CONFIG, parse_durations
from caelum_dask.options import ConfiguredOptions

#: how long a backend counts as warm for a model it served (until its next /api/ps says so)
WARM_HINT_TTL = 60.0
#: how recently another model must have been used on a backend to count as "in use"
RECENT_USE_S = 10.0


@dataclass
class _Health:
    in_flight: int = 0
    failures: int = 0
    cooldown_until: float = 0.0
    last_error: str | None = None
    latency_ewma: float | None = None
    served: int = 0


@dataclass
class RouterSettings(ConfiguredOptions):
    """The router's knobs; a field left ``None`` comes from ``caelum.llm.*`` (:meth:`resolved`).

    ``RouterSettings(max_in_flight=1)`` overrides one knob and keeps the configured rest; the
    router resolves its settings when it is made, so no default is written here but in
    caelum.yaml. ``warm_hint_ttl`` and ``recent_use_s`` are tuning constants, not settings.
    """

    CONFIG: ClassVar[Mapping[str, str]] = ROUTER_CONFIG

    max_in_flight: int | None = None
    cooldown: float | None = None
    max_cooldown: float | None = None
    sticky_ttl: float | None = None
    gpu_step_gb: float | None = None
    warm_hint_ttl: float = WARM_HINT_TTL
    recent_use_s: float = RECENT_USE_S
    caps: dict[str, int] | None = None  # per-backend URL overrides

    def __post_init__(self) -> None:
        parse_durations(self)


class Router:
    """Chooses backends; tracks in-flight counts, cooldowns, latencies and sticky sessions."""

    def __init__(self, settings: RouterSettings | None = None, rng: random.Random | None = None) -> None:
        self.settings = (settings or RouterSettings()).resolved()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._backends: list[Backend] = []
        self._health: dict[str, _Health] = {}
        self._sticky: dict[str, tuple[str, float]] = {}
        self._warm: dict[tuple[str, str], float] = {}
        self._listeners: list[Callable[[], None]] = []
        self.stats = {"requests": 0, "warm_hits": 0}

    # -- the backend table -------------------------------------------------------------------
    def update(self, backends: Iterable[Backend]) -> None:
        with self._lock:
            self._backends = list(backends)
            for backend in self._backends:
                self._health.setdefault(backend.url, _Health())
        self._notify()

    @property
    def backends(self) -> list[Backend]:
        with self._lock:
            return list(self._backends)

    def health(self, url: str) -> dict[str, Any]:
        with self._lock:
            h = self._health.get(url, _Health())
            left = max(0.0, h.cooldown_until - time.monotonic())
            return {"in_flight": h.in_flight, "failures": h.failures, "cooldown_s": round(left, 2),
                    "last_error": h.last_error, "latency_ewma_s": h.latency_ewma, "served": h.served,
                    "cap": self._cap(url)}

    def on_release(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever capacity may have freed up (used to wake waiters)."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback()

    def _cap(self, url: str) -> int:
        return int((self.settings.caps or {}).get(url, self.settings.max_in_flight))

    # -- choosing ----------------------------------------------------------------------------
    def choose(self, model: str, *, exclude: Iterable[str] = (), session: str | None = None) -> Backend | None:
        """Pick a backend for ``model`` and count the request in flight there.

        Returns None when every usable backend is at its cap (wait for :meth:`release`).
        Raises :class:`ModelUnavailable` when no backend has the model installed and
        :class:`NoBackendAvailable` when those that have it are down, cooling down or excluded.
        """
        name = normalize_model(model)
        excluded = set(exclude)
        now = time.monotonic()
        with self._lock:
            having = [b for b in self._backends if b.has(name)]
            if not having:
                raise ModelUnavailable(self._unavailable_message(model))
            usable = [b for b in having if b.up and b.url not in excluded
                      and self._health[b.url].cooldown_until <= now]
            if not usable:
                raise NoBackendAvailable(self._busy_message(model, having, excluded, now))
            free = [b for b in usable if self._health[b.url].in_flight < self._cap(b.url)]
            if not free:
                return None
            chosen = self._sticky_choice(session, free, now) or self._best(name, free, now)
            health = self._health[chosen.url]
            health.in_flight += 1
            self.stats["requests"] += 1
            if self._is_warm(chosen, name, now):
                self.stats["warm_hits"] += 1
            if session:
                self._sticky[session] = (chosen.url, now + self.settings.sticky_ttl)
            return chosen

    def _sticky_choice(self, session: str | None, free: list[Backend], now: float) -> Backend | None:
        if not session:
            return None
        entry = self._sticky.get(session)
        if entry is None or entry[1] < now:
            self._sticky.pop(session, None)
            return None
        return next((b for b in free if b.url == entry[0]), None)

    def _is_warm(self, backend: Backend, model: str, now: float) -> bool:
        """Loaded per the last /api/ps, or served here since that probe (ps is the truth then)."""
        if backend.is_loaded(model):
            return True
        seen = self._warm.get((backend.url, model))
        return seen is not None and seen > backend.checked_at and time.time() - seen < self.settings.warm_hint_ttl

    def _key(self, backend: Backend, model: str, now: float) -> tuple[int, float, int, int]:
        free = backend.gpu_free_gb
        step = self.settings.gpu_step_gb or 1.0
        bucket = int(free // step) if free is not None else 0
        warm = self._is_warm(backend, model, now)
        # last, before the random tie-break: loading a model here should evict as little
        # recently used work as possible
        busy = 0 if warm else self._other_models_in_use(backend, model)
        return (int(warm), bucket, -self._health[backend.url].in_flight, -busy)

    def _other_models_in_use(self, backend: Backend, model: str) -> int:
        recent = time.time() - self.settings.recent_use_s
        return sum(1 for (url, name), seen in self._warm.items()
                   if url == backend.url and name != model and seen > recent)

    def _best(self, model: str, free: list[Backend], now: float) -> Backend:
        keyed = [(self._key(b, model, now), b) for b in free]
        top = max(k for k, _ in keyed)
        tied = [b for k, b in keyed if k == top]
        if len(tied) == 1:
            return tied[0]
        a, b = self._rng.sample(tied, 2)
        la, lb = self._health[a.url].latency_ewma, self._health[b.url].latency_ewma
        if la is None or lb is None or la == lb:
            return a
        return a if la < lb else b

    # -- outcomes ----------------------------------------------------------------------------
    def release(self, backend: Backend, *, model: str, ok: bool, latency_s: float | None = None,
                error: str | None = None, cool: bool | None = None) -> float:
        """Count the request out; on failure cool the backend down. Returns the cooldown (s)."""
        cooldown = 0.0
        with self._lock:
            health = self._health.setdefault(backend.url, _Health())
            health.in_flight = max(0, health.in_flight - 1)
            if ok:
                health.failures = 0
                health.served += 1
                self._warm[(backend.url, normalize_model(model))] = time.time()
                if latency_s is not None:
                    health.latency_ewma = latency_s if health.latency_ewma is None else (
                        0.8 * health.latency_ewma + 0.2 * latency_s)
            elif cool is not False:
                health.failures += 1
                health.last_error = error
                cooldown = min(self.settings.cooldown * 2 ** (health.failures - 1), self.settings.max_cooldown)
                health.cooldown_until = time.monotonic() + cooldown
        self._notify()
        return cooldown

    def forget_model(self, backend: Backend, model: str) -> None:
        """The backend said it lacks the model (stale table): stop routing it there."""
        name = normalize_model(model)
        with self._lock:
            backend.models.pop(name, None)
            backend.loaded.pop(name, None)
            self._warm.pop((backend.url, name), None)

    # -- messages ----------------------------------------------------------------------------
    def _unavailable_message(self, model: str) -> str:
        up = [b for b in self._backends if b.up]
        if not self._backends:
            return (f"no Ollama backend in the pool, so model {model!r} cannot be served; start "
                    "Ollama on a worker machine (OLLAMA_HOST or caelum.llm.hosts) and retry")
        if not up:
            return (f"model {model!r}: every Ollama backend is down "
                    f"({', '.join(b.url for b in self._backends)}); start Ollama there and retry")
        where = ", ".join(dict.fromkeys(
            f"{b.machine}" + (f" ({b.gpu_free_gb} GiB GPU free)" if b.gpu_free_gb is not None else "")
            for b in sorted(up, key=lambda b: -(b.gpu_free_gb or 0))
        ))
        first = sorted(up, key=lambda b: -(b.gpu_free_gb or 0))[0].machine
        return (f"no backend has model {model!r}; pull it onto one of: {where} "
                f"(e.g. `caelum llm pull {model} --machines {first}`)")

    def _busy_message(self, model: str, having: list[Backend], excluded: set[str], now: float) -> str:
        parts = []
        for b in having:
            h = self._health[b.url]
            if not b.up:
                parts.append(f"{b.url} down ({b.error or 'unreachable'})")
            elif b.url in excluded:
                parts.append(f"{b.url} failed this request ({h.last_error or 'error'})")
            else:
                parts.append(f"{b.url} cooling down for {h.cooldown_until - now:.0f}s ({h.last_error or 'error'})")
        return f"model {model!r} is installed on {len(having)} backend(s) but none can serve it now: " + "; ".join(parts)

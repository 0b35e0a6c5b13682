"""LLM page data: the Ollama backends of the pool, models loaded, requests in flight, latency.

Fed by ``caelum.llm`` events::

    backends         {backends: [{url, machine, up, models, loaded, in_flight}]}
    request-finished {backend, machine, model, latency_s, ok}
    backend-down     {backend, reason}
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LLMState:
    """The latest backend table plus a bounded window of finished requests."""

    window: int = 2000
    backends: list[dict[str, Any]] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=deque)
    down: dict[str, str] = field(default_factory=dict)  # backend -> last reason
    version: int = 0

    def apply(self, msg: Any, now: float | None = None) -> None:
        if not isinstance(msg, dict):
            return
        event = msg.get("event")
        if event == "backends":
            self.backends = [dict(b) for b in msg.get("backends") or [] if isinstance(b, dict)]
            for backend in self.backends:
                if backend.get("up"):
                    self.down.pop(str(backend.get("url")), None)
        elif event == "request-finished":
            self.requests.append({
                "time": (time.time() if now is None else now) * 1000.0,
                "backend": str(msg.get("backend") or ""),
                "machine": str(msg.get("machine") or ""),
                "model": str(msg.get("model") or ""),
                "latency_s": float(msg.get("latency_s") or 0.0),
                "ok": bool(msg.get("ok", True)),
            })
            while len(self.requests) > self.window:
                self.requests.popleft()
        elif event == "backend-down":
            self.down[str(msg.get("backend") or "")] = str(msg.get("reason") or "")
        else:
            return
        self.version += 1

    @property
    def empty(self) -> bool:
        return not (self.backends or self.requests or self.down)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 3)


def backends_source(state: LLMState) -> dict[str, list[Any]]:
    """One row per backend: reported fields plus request counts and latency in the window."""
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for req in state.requests:
        by_backend.setdefault(req["backend"], []).append(req)
    urls = [str(b.get("url")) for b in state.backends]
    rows = list(state.backends) + [
        {"url": url, "up": False} for url in sorted(set(by_backend) | set(state.down)) if url not in urls
    ]
    out: dict[str, list[Any]] = {
        k: [] for k in ("url", "machine", "up", "status_colour", "models", "loaded", "in_flight",
                        "requests", "errors", "latency_mean", "latency_p95", "reason")
    }
    for backend in rows:
        url = str(backend.get("url"))
        reqs = by_backend.get(url, [])
        latencies = [r["latency_s"] for r in reqs if r["ok"]]
        up = bool(backend.get("up")) and url not in state.down
        out["url"].append(url)
        out["machine"].append(str(backend.get("machine") or (reqs[-1]["machine"] if reqs else "")))
        out["up"].append("up" if up else "down")
        out["status_colour"].append("#2ca02c" if up else "#d62728")
        out["models"].append(", ".join(map(str, backend.get("models") or [])))
        out["loaded"].append(", ".join(map(str, backend.get("loaded") or [])))
        out["in_flight"].append(int(backend.get("in_flight") or 0))
        out["requests"].append(len(reqs))
        out["errors"].append(sum(1 for r in reqs if not r["ok"]))
        out["latency_mean"].append(round(statistics.fmean(latencies), 3) if latencies else None)
        out["latency_p95"].append(_percentile(latencies, 95))
        out["reason"].append(state.down.get(url, ""))
    return out


def latency_source(state: LLMState) -> dict[str, list[Any]]:
    """Every request in the window: time, latency, backend, model, colour by outcome."""
    reqs = list(state.requests)
    return {
        "time": [r["time"] for r in reqs],
        "latency_s": [r["latency_s"] for r in reqs],
        "backend": [r["backend"] for r in reqs],
        "model": [r["model"] for r in reqs],
        "colour": ["#1f77b4" if r["ok"] else "#d62728" for r in reqs],
    }


def summary_text(state: LLMState) -> str:
    if state.empty:
        return "no LLM pool activity yet: start it with `caelum llm serve` (backends appear when workers report Ollama)"
    up = sum(1 for b in state.backends if b.get("up") and str(b.get("url")) not in state.down)
    in_flight = sum(int(b.get("in_flight") or 0) for b in state.backends)
    return f"{len(state.backends)} backends ({up} up), {in_flight} requests in flight, {len(state.requests)} recent requests"

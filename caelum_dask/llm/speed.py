"""Tokens per second per model and machine, from what Ollama says about each answer.

Every non-streamed Ollama answer carries ``eval_count`` (tokens generated) and
``eval_duration`` (nanoseconds spent generating them). Their ratio is the figure that tells a
slow machine from a fast one for one model — what a planner needs, and what a prefix average
of task durations cannot say (an answer's length varies). :class:`TokenRates` keeps the
figures seen by one pool or map run (mixed like Dask's averages); they are shown in
``LLMPool.status()`` and handed to the scheduler's learning plugin
(:func:`caelum_dask.learned.record_figures`), which saves them with the learned durations.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from caelum_dask.learned import figure_name, mix, record_figures
from caelum_dask.llm.backend import normalize_model

#: the learned figure: generated tokens per second of one model on one machine
FIGURE = "llm-tokens-per-second"


def tokens_per_second(response: Any) -> float | None:
    """``eval_count / eval_duration`` of one Ollama answer; ``None`` when it has no such counts."""
    if not isinstance(response, Mapping):
        return None
    count, nanos = response.get("eval_count"), response.get("eval_duration")
    if not isinstance(count, (int, float)) or not isinstance(nanos, (int, float)) or count <= 0 or nanos <= 0:
        return None
    return float(count) / (float(nanos) / 1e9)


class TokenRates:
    """Tokens per second seen per (model, machine); safe to note from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str, str], float] = {}
        self._unsent: dict[tuple[str, str], float] = {}

    def note(self, model: str | None, machine: str | None, response: Any) -> None:
        """Mix one answer's speed in (answers without counts, e.g. embeddings, are ignored)."""
        rate = tokens_per_second(response)
        if rate is None or not model or not machine:
            return
        key = (normalize_model(model), str(machine))
        with self._lock:
            self._rates[key] = mix(self._rates.get(key), rate)
            self._unsent[key] = mix(self._unsent.get(key), rate)

    def by_model(self) -> dict[str, dict[str, float]]:
        """``{model: {machine: tokens per second}}`` (the ``tokens_per_second`` of the status)."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            for (model, machine), rate in sorted(self._rates.items()):
                out.setdefault(model, {})[machine] = round(rate, 3)
        return out

    def send(self, client: Any) -> None:
        """Hand what was seen since the last send to the scheduler's learned figures."""
        with self._lock:
            unsent, self._unsent = self._unsent, {}
        if client is not None and unsent:
            record_figures(client, {figure_name(FIGURE, m, host): r for (m, host), r in unsent.items()})


__all__ = ["FIGURE", "TokenRates", "tokens_per_second"]

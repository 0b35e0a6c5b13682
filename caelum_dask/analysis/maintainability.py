"""Maintainability index, radon's formula and inputs (``radon mi`` with multi-line strings
counted as comments)."""

from __future__ import annotations

import math


def mi_compute(volume: float, complexity: int, sloc: int, comments_pct: float) -> float:
    """radon.metrics.mi_compute; note radon feeds the *logical* line count as ``sloc``."""
    if volume <= 0 or sloc <= 0:
        return 100.0
    nn_mi = (
        171 - 5.2 * math.log(volume) - 0.23 * complexity - 16.2 * math.log(sloc)
        + 50 * math.sin(math.sqrt(2.46 * math.radians(comments_pct)))
    )
    return min(max(0.0, nn_mi * 100 / 171.0), 100.0)


def mi_from(volume: float, total_complexity: int, lloc: int, sloc: int, comments: int, multi: int) -> float:
    """MI from already computed Halstead volume, complexity and raw counts (radon.mi_visit)."""
    pct = (comments + multi) / float(sloc) * 100 if sloc != 0 else 0
    return mi_compute(volume, total_complexity, lloc, pct)


def mi_rank(score: float) -> str:
    """A > 19, B 10–19, C ≤ 9 (radon.metrics.mi_rank)."""
    return chr(65 + (9 - score >= 0) + (19 - score >= 0))

"""Group files into tasks by size: Dask costs about a millisecond per task, so one task per
file would cost more than analysing most files; a few batches per worker keep every core busy
to the end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def batch_by_size(items: Sequence[T], sizes: Sequence[int], *, target_bytes: int,
                  min_batches: int = 1) -> list[list[T]]:
    """Consecutive batches of about ``target_bytes`` each (smaller if needed to make at least
    ``min_batches``), largest batches first so the long ones start early."""
    if not items:
        return []
    total = sum(sizes)
    target = max(1, min(target_bytes, total // max(min_batches, 1) or 1))
    batches: list[list[T]] = []
    weights: list[int] = []
    current: list[T] = []
    weight = 0
    for item, size in zip(items, sizes):
        if current and weight + size > target:
            batches.append(current)
            weights.append(weight)
            current, weight = [], 0
        current.append(item)
        weight += size
    if current:
        batches.append(current)
        weights.append(weight)
    order = sorted(range(len(batches)), key=lambda i: -weights[i])
    return [batches[i] for i in order]

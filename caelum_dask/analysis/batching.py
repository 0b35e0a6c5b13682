"""Group files into tasks by size: Dask costs about a millisecond per task, so one task per
file would cost more than analysing most files; a few batches per worker keep every core busy
to the end. Once the scheduler has learned how many seconds a byte of source takes for an
analyzer set, batches are sized to a target duration instead (:func:`target_bytes`); until
then a large run is cut into a fixed number of batches per worker (:func:`unlearned_bytes`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

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


#: the learned figure (see :mod:`caelum_dask.learned`): compute seconds per byte of source
FIGURE = "analysis-seconds-per-byte"


def figure_for(builtins: Sequence[str], plugin_digests: Sequence[str] = ()) -> str:
    """The figure's name for one analyzer set: how fast analysis goes depends on what runs."""
    names = "+".join(sorted(builtins)) or "none"
    plugins = "+".join(sorted(d[:12] for d in plugin_digests))
    return f"{FIGURE}:{names}" + (f":{plugins}" if plugins else "")


def learning(figure: str, nbytes: int) -> Any:
    """Annotate the tasks submitted inside the block so the scheduler learns ``figure`` from
    their compute time per byte (the batch's seconds are measured by Dask, nothing extra runs)."""
    import dask

    from caelum_dask.learned import LEARN

    return dask.annotate(**{LEARN: {"figure": figure, "amount": max(1, int(nbytes))}})


#: how far (either way) a learned batch size may move from the unlearned one
LEARNED_RANGE = 4


def unlearned_bytes(batch_bytes: int, total_bytes: int, n_workers: int, batches_per_worker: int | None) -> int:
    """Bytes per batch before anything is learned: ``batch_bytes``, or more for a run so large
    that it would make more than ``batches_per_worker`` batches per worker.

    Why: Dask's cost per task (the client's submit and gather, the scheduler's graph update
    and transitions, the worker's messages: about 10 ms of CPU in all on a shared 2-core box)
    does not depend on the batch. A fixed 64 KB is a good size for the built-in analyzers on a
    small tree, but ``--analyzer cc`` does 64 KB in ~12 ms: on the standard library its 508
    tasks cost as much CPU as the analysis itself. A number of batches per worker keeps that
    cost fixed per run, and the last batches short enough (a sixteenth of a worker's share)
    for the workers to finish together, whatever the analyzers cost per byte.
    """
    if not batches_per_worker or batches_per_worker <= 0:
        return int(batch_bytes)
    return max(int(batch_bytes), -(-int(total_bytes) // (int(batches_per_worker) * max(1, n_workers))))


def target_bytes(client: Any, figure: str, unlearned: int, batch_seconds: float | None) -> int:
    """Bytes per batch: ``batch_seconds`` worth at the learned seconds per byte of ``figure``,
    or ``unlearned`` (:func:`unlearned_bytes`) until something is learned (or when
    ``batch_seconds`` is 0).

    Why: a fixed byte count is a guess that fits one analyzer set on one kind of machine; a
    batch of a known duration keeps Dask's per-task overhead small and the batches short
    enough to balance, whatever the analyzers cost.
    """
    if not batch_seconds or batch_seconds <= 0:
        return int(unlearned)
    from caelum_dask.learned import known_figures

    per_byte = known_figures(client, figure).get(figure)
    if not per_byte or per_byte <= 0:
        return int(unlearned)
    # A figure learned from a few small batches carries their fixed per-task cost and would
    # make every later batch tiny (hundreds of extra tasks); stay within a factor of the default.
    learned = int(float(batch_seconds) / per_byte)
    return min(max(learned, int(unlearned) // LEARNED_RANGE), int(unlearned) * LEARNED_RANGE)

"""Splitting node ids into shards: units by ``--dist``, then longest-processing-time first.

``load`` makes every test its own unit; ``loadfile`` keeps a file's tests together and
``loadscope`` a module's functions or a class's methods (pytest-xdist's modes), so module- and
class-scoped fixtures set up once. Units are sorted longest first and each goes to the shard
with the least estimated time so far (LPT, Graham's 4/3 bound). Shards are then submitted
longest first as well, and with more shards than slots Dask's dynamic scheduling absorbs what
the estimates got wrong.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from caelum_dask.errors import InvalidInput

DIST_MODES = ("load", "loadfile", "loadscope")
#: a shard should carry at least this much estimated work: a pytest start-up costs ~0.5 s
MIN_SHARD_SECONDS = 2.0
#: shards per slot when durations are unknown (Dask balances the rest dynamically)
SHARDS_PER_SLOT_UNKNOWN = 2


@dataclass
class Shard:
    """One pytest subprocess' worth of tests."""

    index: int
    nodeids: list[str] = field(default_factory=list)
    estimate: float = 0.0


def scope_of(nodeid: str, dist: str) -> str:
    """The unit a test belongs to under ``dist`` (its own id, its file, its module/class)."""
    if dist == "load":
        return nodeid
    base = re.sub(r"\[.*\]$", "", nodeid, flags=re.S)  # parameters may contain "::"
    if dist == "loadfile":
        return base.split("::", 1)[0]
    if dist == "loadscope":
        return base.rsplit("::", 1)[0] if "::" in base else base
    raise InvalidInput(f"unknown --dist {dist!r}; use one of {', '.join(DIST_MODES)}")


def units_of(nodeids: Sequence[str], dist: str) -> list[list[str]]:
    """Group tests into indivisible units, keeping collection order inside each unit."""
    groups: dict[str, list[str]] = {}
    for nodeid in nodeids:
        groups.setdefault(scope_of(nodeid, dist), []).append(nodeid)
    return list(groups.values())


def auto_shard_count(n_units: int, slots: int, total_estimate: float, known_fraction: float) -> int:
    """How many shards ``--shards auto`` makes.

    One per slot when durations are known (LPT already balances them), a few per slot when
    they are not (so a slot that drew the slow tests is not the whole run's tail), never more
    than the units, and not so many that pytest start-up dominates a shard.
    """
    per_slot = 1 if known_fraction >= 0.9 else SHARDS_PER_SLOT_UNKNOWN
    wanted = max(1, slots) * per_slot
    by_work = max(1, math.floor(total_estimate / MIN_SHARD_SECONDS))
    return max(1, min(n_units, wanted, max(by_work, min(slots, n_units))))


def partition(nodeids: Sequence[str], estimates: Mapping[str, float], n_shards: int,
              dist: str = "load") -> list[Shard]:
    """LPT packing of the units of ``nodeids`` into at most ``n_shards`` non-empty shards.

    Each shard's tests keep collection order (fixtures and module imports behave as in a
    plain run). Shards come back sorted longest estimate first: submission order.
    """
    if n_shards < 1:
        raise InvalidInput(f"--shards must be at least 1 (got {n_shards})")
    units = units_of(nodeids, dist)
    order = {nodeid: i for i, nodeid in enumerate(nodeids)}
    weighted = sorted(((sum(estimates.get(t, 0.0) for t in u), i, u) for i, u in enumerate(units)),
                      key=lambda item: (-item[0], item[1]))
    shards = [Shard(index=i) for i in range(min(n_shards, len(units)))]
    heap = [(0.0, shard.index) for shard in shards]
    for weight, _, unit in weighted:
        load, index = heapq.heappop(heap)
        shards[index].nodeids.extend(unit)
        shards[index].estimate += weight
        heapq.heappush(heap, (load + weight, index))
    for shard in shards:
        shard.nodeids.sort(key=order.__getitem__)
    shards = sorted((s for s in shards if s.nodeids), key=lambda s: -s.estimate)
    for i, shard in enumerate(shards):
        shard.index = i
    return shards


def imbalance(times: Sequence[float]) -> float:
    """max/mean of shard times: 1.0 is perfect balance."""
    times = [t for t in times if t > 0]
    if not times:
        return 1.0
    return max(times) / (sum(times) / len(times))

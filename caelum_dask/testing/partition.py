"""Units of distribution by ``--dist``, and the balance of a finished run.

``load`` makes every test its own unit; ``loadfile`` keeps a file's tests together and
``loadscope`` a module's functions or a class's methods (pytest-xdist's modes), so module- and
class-scoped fixtures set up once: a unit always goes to one session, whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from caelum_dask.errors import InvalidInput

DIST_MODES = ("load", "loadfile", "loadscope")
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


def imbalance(times: Sequence[float]) -> float:
    """max/mean of shard times: 1.0 is perfect balance."""
    times = [t for t in times if t > 0]
    if not times:
        return 1.0
    return max(times) / (sum(times) / len(times))

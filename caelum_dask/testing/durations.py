"""Recorded test durations: what shards are balanced by.

caelum keeps them in the project at ``.caelum/test-durations.json``
(``{"version": 1, "durations": {nodeid: seconds}}``) and updates the file after every run.
pytest-split's ``.test_durations`` (a flat ``{nodeid: seconds}`` map) is read too, so a project
that already records durations for CI splitting is balanced from the first run; caelum's own
figures win where both know a test. A test nobody has timed is estimated at the mean.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

CAELUM_FILE = Path(".caelum") / "test-durations.json"
PYTEST_SPLIT_FILE = Path(".test_durations")
#: the estimate for every test when nothing at all has been recorded
DEFAULT_SECONDS = 1.0


def _read_map(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if isinstance(data, dict) and isinstance(data.get("durations"), dict):
        data = data["durations"]
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}


def load(project: str | os.PathLike[str]) -> dict[str, float]:
    """Every recorded duration for the project (pytest-split's file, overridden by caelum's)."""
    root = Path(project)
    return {**_read_map(root / PYTEST_SPLIT_FILE), **_read_map(root / CAELUM_FILE)}


def estimate(nodeids: Iterable[str], known: Mapping[str, float]) -> dict[str, float]:
    """A duration for each test: its recorded one, else the mean of the recorded ones."""
    ids = list(nodeids)
    recorded = [known[i] for i in ids if i in known] or list(known.values())
    mean = sum(recorded) / len(recorded) if recorded else DEFAULT_SECONDS
    return {i: known.get(i, mean) for i in ids}


def save(project: str | os.PathLike[str], measured: Mapping[str, float]) -> Path:
    """Merge this run's measured durations into the project's file (atomic replace)."""
    path = Path(project) / CAELUM_FILE
    durations = _read_map(path)
    durations.update({k: round(float(v), 4) for k, v in measured.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".test-durations-", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump({"version": 1, "durations": dict(sorted(durations.items()))}, handle, indent=1)
        handle.write("\n")
    os.replace(tmp, path)
    return path

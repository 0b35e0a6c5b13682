"""Recorded test durations: what shards are balanced by.

caelum keeps them in the project at ``.caelum/test-durations.json``
(``{"version": 1, "durations": {nodeid: seconds}}``) and updates the file after every run.
pytest-split's ``.test_durations`` (a flat ``{nodeid: seconds}`` map) is read too, so a project
that already records durations for CI splitting is balanced from the first run; caelum's own
figures win where both know a test. A test nobody has timed is estimated at the mean.

The scheduler keeps them too, among its learned figures (:mod:`caelum_dask.learned`, saved in
the caelum home and loaded when a scheduler starts): one figure per test,
``test-seconds:<project id>:<nodeid>``, recorded after every run (:func:`record`, one call).
Why: a fresh clone, a CI checkout or a colleague's machine has no ``.caelum/`` folder, yet
the cluster has already timed the suite. The project id (:func:`project_id`) is the
repository's root commit, so every clone of one repository on any machine shares the
figures. At run start (:func:`known`, one call) the scheduler's figures fill in what the
project's files lack, and the files win where both know a test: the file is what the user
may have committed on purpose, the figures are only the latest shared measurements. On a
plain Dask scheduler without caelum's learning plugin both calls do nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from caelum_dask.learned import figure_name, known_figures, record_figures

CAELUM_FILE = Path(".caelum") / "test-durations.json"
PYTEST_SPLIT_FILE = Path(".test_durations")
#: the estimate for every test when nothing at all has been recorded
DEFAULT_SECONDS = 1.0
#: the learned figure's kind: seconds one test takes, per project and node id
FIGURE = "test-seconds"
#: seconds a ``git`` query may take before the project is named by its path instead
GIT_TIMEOUT = 30


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


def _git(root: Path, *args: str) -> str | None:
    """``git -C root ARGS``'s first output line, or None outside a work tree (or without git)."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True, text=True,
                             timeout=GIT_TIMEOUT).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return (out.splitlines() or [""])[0].strip()


def project_id(project: str | os.PathLike[str]) -> str:
    """A name for the project that is the same in every clone, on every machine.

    In a git work tree: the repository's first root commit, plus the project's folder inside
    the repository when it is not the top (two test projects of one repository must not share
    node ids). Elsewhere: the resolved path (only this checkout knows its figures).
    """
    root = Path(project).resolve()
    first = _git(root, "rev-list", "--max-parents=0", "HEAD")
    if not first:
        return str(root)
    inside = (_git(root, "rev-parse", "--show-prefix") or "").strip("/")
    return f"{first}/{inside}" if inside else first


def _prefix(project: str) -> str:
    return figure_name(FIGURE, project) + ":"


def learned(client: Any, project: str) -> dict[str, float]:
    """The scheduler's figures for the project, by node id; ``{}`` without the learning plugin."""
    prefix = _prefix(project)
    return {name[len(prefix):]: seconds for name, seconds in known_figures(client, prefix).items()}


def known(root: str | os.PathLike[str], client: Any, project: str) -> dict[str, float]:
    """Every duration a run can plan with: the scheduler's figures, overridden by the files."""
    return {**learned(client, project), **load(root)}


def record(client: Any, project: str, measured: Mapping[str, float]) -> None:
    """Send a run's measured durations to the scheduler's figures (one call; zero ones are not sent)."""
    record_figures(client, {figure_name(FIGURE, project, nodeid): float(seconds)
                            for nodeid, seconds in measured.items() if seconds > 0})

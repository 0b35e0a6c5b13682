"""What ``run_tests`` returns: :class:`TestRunResult`, one typed result with one JSON shape.

Why a dataclass: every front door (``caelum test --json``, the MCP ``run_tests`` tool, the
workflow step, ``pytest --caelum``) used to index a summary dict by string keys, so a typo
was a runtime ``KeyError`` and the shape lived nowhere. The top-level fields are typed here;
the per-platform summaries are :class:`PlatformSummary` typed dicts (they are JSON already and
are read as such by the renderer, the JUnit merge and the golden inputs). :meth:`to_dict`
gives exactly the published ``--json`` document, and :meth:`from_dict` reads one back (the
golden tests render checked-in documents).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from caelum_dask.results import Result


class PlatformSummary(TypedDict):
    """One platform's part of a run (``platform`` is ``"all"`` without ``--platforms``)."""

    platform: str
    exit_code: int
    counts: dict[str, int]
    collection: dict[str, Any]  # rc, machine, output (pytest's collection errors), mismatches
    shards: list[dict[str, Any]]  # one per pytest session: worker, machine, estimate, duration, nodeids…
    imbalance: float | None
    lost_shards: int
    env_removed: list[str]
    stopped: str | None
    tests: list[dict[str, Any]]  # every collected test once, in collection order


@dataclass
class SnapshotInfo(Result):
    """The project archive the run shipped: content digest, file count and size in bytes."""

    digest: str
    files: int
    bytes: int


@dataclass
class TestRunResult(Result):
    """A whole run: pytest's exit code, the totals, each platform's results and the files written.

    ``exit_code`` has pytest's meaning: 0 all passed, 1 tests failed, 2 interrupted
    (collection errors, lost sessions), 4 usage error, 5 nothing collected. ``stopped`` is
    the reason when ``-x``/``--maxfail`` ended the run early.
    """

    __test__ = False  # not a pytest test class, despite the name

    run_id: str
    project: str
    exit_code: int
    duration: float
    dist: str
    snapshot: SnapshotInfo
    counts: dict[str, int]
    platforms: list[PlatformSummary] = field(default_factory=list)
    junit: str | None = None
    durations_file: str | None = None
    stopped: str | None = None

    @property
    def tests(self) -> list[dict[str, Any]]:
        """Every test result of every platform (what the failure and flaky lists are drawn from)."""
        return [test for plat in self.platforms for test in plat["tests"]]

    def nodeids(self, *outcomes: str) -> list[str]:
        """The node ids of the tests that ended with one of ``outcomes``, in collection order."""
        return [t["nodeid"] for t in self.tests if t["outcome"] in outcomes]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TestRunResult:
        """A result from its ``to_dict()`` document (a saved ``caelum test --json`` output)."""
        snapshot = data.get("snapshot") or {}
        return cls(run_id=str(data["run_id"]), project=str(data["project"]), exit_code=int(data["exit_code"]),
                   duration=float(data["duration"]), dist=str(data["dist"]),
                   snapshot=SnapshotInfo(str(snapshot.get("digest", "")), int(snapshot.get("files", 0)),
                                         int(snapshot.get("bytes", 0))),
                   counts=dict(data["counts"]), platforms=list(data.get("platforms") or []),
                   junit=data.get("junit"), durations_file=data.get("durations_file"), stopped=data.get("stopped"))


__all__ = ["PlatformSummary", "SnapshotInfo", "TestRunResult"]

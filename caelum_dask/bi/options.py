"""The settings of one BI run, read once on the caller's side and sent with every task.

Why: collectors and the aggregation run on workers, and a worker's ``caelum.bi`` configuration
is not the caller's — a report asked for with ``caelum.bi.fix-pattern`` set must count fixes
with that pattern whichever worker aggregates, and how git history is read (revisions, depth,
parallel git processes) must not differ from machine to machine within one report. So
:meth:`BIOptions.from_config` is called where the run starts (``run_report``, ``collect``) and
the resolved options travel as a task argument; worker-side code reads no ``caelum.bi`` key.

What stays per machine is *where* the data is: each machine's own ``caelum.bi.roots`` (folders
on THAT machine) and its caelum home are read by its collector — they describe the machine, not
the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from caelum_dask.options import ConfiguredOptions


@dataclass(frozen=True)
class BIOptions(ConfiguredOptions):
    """How a BI run reads history and computes its tables (``None``: from ``caelum.bi``)."""

    CONFIG: ClassVar[Mapping[str, str]] = {
        "max_depth": "bi.max-depth",
        "git_revs": "bi.git-revs",
        "git_threads": "bi.git-threads",
        "deploy_tags": "bi.deploy-tags",
        "fix_pattern": "bi.fix-pattern",
        "dask_above_fraction": "bi.dask-above-fraction",
        "ownership_depth": "bi.ownership-depth",
    }

    max_depth: int | None = None  # directory levels searched for repositories under a root
    git_revs: str | None = None  # the revision arguments of `git log`
    git_threads: int | None = None  # repositories read at once on one machine
    deploy_tags: str | None = None  # tags matching this regular expression are deployments
    fix_pattern: str | None = None  # commit subjects matching this (case-insensitive) are fixes
    # above this share of the smallest worker's memory (bytes collected): map-reduce on the cluster
    dask_above_fraction: float | None = None
    ownership_depth: int | None = None  # directory depth of ownership / bus factor

    @classmethod
    def given(cls, options: BIOptions | None) -> BIOptions:
        """``options`` resolved, or all from the configuration of this process when ``None``.

        Library functions (``metrics.ownership(data)``) called directly take this path: the
        process calling them is the caller.
        """
        return cls.from_config() if options is None else options.resolved()


__all__ = ["BIOptions"]

"""Run a report: collectors on every machine, one aggregation task, exports on this machine.

The flow is one Dask computation: pinned collector tasks (``bi_collect-<run>.<n>``)
feed one aggregation task (``bi_aggregate-<run>.0``) that merges, deduplicates and
builds the report's tables on a worker — the collected rows move worker to worker, never via
the client. When the collected tables weigh more than ``caelum.bi.dask-above-fraction`` of the
smallest worker's memory, churn and activity are computed as a map-reduce over the collectors'
partitions instead, where the rows are (see ``large``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import dask.config
import pandas as pd
from distributed import Client, Future, as_completed

from caelum_dask import events, keys
from caelum_dask.bi import large
from caelum_dask.bi.collect import submit_collectors
from caelum_dask.bi.dataset import Dataset, parse_since
from caelum_dask.bi.definition import ReportDefinition, load
from caelum_dask.bi.export import export_all
from caelum_dask.bi.metrics import build
from caelum_dask.bi.options import BIOptions
from caelum_dask.errors import InvalidInput
from caelum_dask.progress import ProgressCallback, ProgressEvent
from caelum_dask.results import Result


@dataclass
class ReportResult(Result):
    """The tables of one report run, what could not be collected, and the files written."""

    run_id: str
    report: str
    title: str
    tables: dict[str, pd.DataFrame]
    problems: pd.DataFrame
    collected: dict[str, int]
    out: str | None = None
    files: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape (docs/bi.md): table sizes and columns, not the frames."""
        return {"run_id": self.run_id, "report": self.report, "title": self.title, "out": self.out,
                "seconds": round(self.seconds, 3), "collected": self.collected,
                "tables": {name: {"rows": len(frame), "columns": list(map(str, frame.columns))}
                           for name, frame in self.tables.items()},
                "problems": self.problems.to_dict(orient="records"), "files": self.files}


def aggregate(table_names: list[str], extra_pickled: bytes | None, options: BIOptions,
              precomputed: dict[str, pd.DataFrame], *parts: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The aggregation task: merge + dedup the collectors' tables and build the report's tables.

    ``extra_pickled`` is the definition's ``tables`` function, cloudpickled by value on the
    client: plain pickle would refer to the definition module by name, which workers lack.
    ``options`` are the caller's resolved :class:`BIOptions` (fix pattern, deploy tags,
    ownership depth): the report follows the configuration of whoever asked for it, not of
    the worker that happens to aggregate.
    """
    extra = cloudpickle.loads(extra_pickled) if extra_pickled else None
    data = Dataset.merge(list(parts))
    built = {name: precomputed[name] if name in precomputed else build(name, data, options) for name in table_names}
    derived = _extra_tables(extra, data, built, options) if extra is not None else {}
    for name, frame in derived.items():
        built[str(name)] = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    return {"tables": built, "problems": data.problems, "collected": data.summary()}


def _extra_tables(extra: Callable[..., Any], data: Dataset, built: dict[str, pd.DataFrame],
                  options: BIOptions) -> dict[str, Any]:
    """The definition's own ``tables(data, built)``.

    User code may call ``metrics.*`` without options; those read the configuration, so for its
    duration the caller's options are what ``caelum.bi`` says on this worker.
    """
    settings = {f"caelum.{key}": getattr(options, name) for name, key in BIOptions.CONFIG.items()}
    try:
        with dask.config.set(settings):
            return dict(extra(data, built) or {})
    except Exception as exc:  # noqa: BLE001 - user code: one clear line, not a worker traceback
        raise InvalidInput(f"the report definition's tables() failed: {type(exc).__name__}: {exc}") from None


class _Steps:
    """A report's progress as ``ProgressEvent(job="bi")``: one step per collector, the
    aggregation, and the export when there is one."""

    def __init__(self, callback: ProgressCallback | None, run_id: str, total: int) -> None:
        self.callback, self.run_id, self.total = callback, run_id, total
        self.done = self.failed = 0

    def say(self, message: str | None = None, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if self.callback is not None:
            self.callback(ProgressEvent(job="bi", done=self.done, total=self.total, failed=self.failed,
                                        message=message, run_id=self.run_id))

    def follow(self, futures: list[Future]) -> None:
        """Count the collectors as they finish (the aggregation is already submitted)."""
        for future in as_completed(futures):
            self.say(done=1, failed=int(future.status == "error"))


def _large_tables(client: Client, defn: ReportDefinition, futures: list[Future], run_id: str,
                  options: BIOptions, steps: _Steps) -> dict[str, pd.DataFrame]:
    """Churn/activity as a map-reduce over the collectors' partitions when the collected tables
    weigh more than ``caelum.bi.dask-above-fraction`` of the smallest worker's memory.

    Below that the aggregation task (one process) builds them in pandas with the other tables:
    the data fits, and one task is cheaper than scheduling partial tasks (``large.plan``).
    """
    wanted = [t for t in ("churn", "activity") if t in defn.tables]
    if not wanted or options.dask_above_fraction is None:  # not asked for / configured off
        return {}
    chosen = large.plan(client, futures, options.dask_above_fraction, run_id)
    if chosen.engine != "dask":
        return {}
    steps.say(f"{chosen.describe()}: aggregating churn/activity over the cluster")
    big = large.map_reduce(client, futures, run_id)
    return {t: big[t] for t in wanted}


def _export(report: ReportResult, defn: ReportDefinition, out: str | Path) -> None:
    notes = [f"{r['machine']} ({r['worker']}): {r['message']}" for r in report.problems.to_dict("records")]
    try:
        plots = defn.plots(report.tables)
    except Exception as exc:  # noqa: BLE001 - user code
        raise InvalidInput(f"the report definition's plots() failed: {type(exc).__name__}: {exc}") from None
    try:
        report.files = export_all(report.tables, Path(out), defn.title, plots, notes)
    except OSError as exc:
        raise InvalidInput(f"cannot write the report to {out}: {exc.strerror or exc}; "
                           "choose another --out folder") from None
    report.out = str(out)


def run_report(definition: str | Path | ReportDefinition, *, client: Client | None = None,
               roots: list[str] | None = None, since: str | None = None, out: str | Path | None = None,
               per: Literal["machine", "worker"] = "machine", progress: ProgressCallback | None = None,
               options: BIOptions | None = None) -> ReportResult:
    """Run a report definition and (with ``out``) write its exports; returns the DataFrames.

    ``since`` overrides the definition's SINCE (``all`` for the whole history); ``roots`` are
    searched on every machine in addition to its ``caelum.bi.roots``. ``options`` (default:
    this process's ``caelum.bi``) are resolved here and travel with the collectors and the
    aggregation. ``progress`` gets ``ProgressEvent(job="bi")``: a step per collector, one for
    the aggregation and one for the export.
    """
    defn = definition if isinstance(definition, ReportDefinition) else load(definition)
    window = parse_since(since if since is not None else defn.since)
    if client is None:
        from caelum_dask.cluster import client_scope

        with client_scope() as own:
            return run_report(defn, client=own, roots=roots, since=since, out=out, per=per, progress=progress,
                              options=options)
    options = BIOptions.given(options)
    started = time.monotonic()
    run_id, futures = submit_collectors(client, roots, window, per, defn.sources, options=options)
    steps = _Steps(progress, run_id, len(futures) + 1 + (out is not None))
    steps.say(f"collecting on {len(futures)} collector(s) (run {run_id})")
    precomputed = _large_tables(client, defn, futures, run_id, options, steps)
    extra = getattr(defn.module, "tables", None)
    blob = cloudpickle.dumps(extra) if callable(extra) else None
    with keys.kind("bi"):
        pending = client.submit(aggregate, defn.tables, blob, options, precomputed,
                                *futures, key=keys.task_key("bi_aggregate", run_id), pure=False)
    steps.follow(futures)
    result = pending.result()
    steps.say(f"aggregated {len(result['tables'])} table(s)", done=1)
    report = ReportResult(run_id=run_id, report=defn.name, title=defn.title, tables=result["tables"],
                          problems=result["problems"], collected=result["collected"])
    if out is not None:
        _export(report, defn, out)
        steps.say(f"wrote {out}", done=1)
    report.seconds = time.monotonic() - started
    events.emit(events.BI, "report-finished", sink=client, report=defn.name, run_id=run_id,
                tables=sorted(report.tables), out=report.out)
    return report

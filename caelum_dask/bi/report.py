"""Run a report: collectors on every machine, one aggregation task, exports on this machine.

The flow is one Dask computation: pinned collector tasks (``caelum-bi-<run>-collect-<n>``)
feed one aggregation task (``caelum-bi-<run>-aggregate``) that merges, deduplicates and
builds the report's tables on a worker — the collected rows move worker to worker, never via
the client. Above ``caelum.bi.dask-threshold`` file-change rows, churn and activity are
computed with dask.dataframe over the collectors' partitions instead (see ``large``).
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
from distributed import Client

from caelum_dask import config, events
from caelum_dask.bi import large
from caelum_dask.bi.collect import submit_collectors
from caelum_dask.bi.dataset import Dataset, parse_since
from caelum_dask.bi.definition import ReportDefinition, load
from caelum_dask.bi.export import export_all
from caelum_dask.bi.metrics import BUILDERS
from caelum_dask.errors import InvalidInput


@dataclass
class ReportResult:
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

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape (docs/bi.md)."""
        return {"run_id": self.run_id, "report": self.report, "title": self.title, "out": self.out,
                "seconds": round(self.seconds, 3), "collected": self.collected,
                "tables": {name: {"rows": len(frame), "columns": list(map(str, frame.columns))}
                           for name, frame in self.tables.items()},
                "problems": self.problems.to_dict(orient="records"), "files": self.files}


def aggregate(table_names: list[str], extra_pickled: bytes | None, settings: dict[str, Any],
              precomputed: dict[str, pd.DataFrame], *parts: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The aggregation task: merge + dedup the collectors' tables and build the report's tables.

    ``extra_pickled`` is the definition's ``tables`` function, cloudpickled by value on the
    client: plain pickle would refer to the definition module by name, which workers lack.
    ``settings`` is the caller's ``caelum.bi`` configuration (fix pattern, deploy tags,
    ownership depth): the report follows the configuration of whoever asked for it, not of
    the worker that happens to aggregate.
    """
    extra = cloudpickle.loads(extra_pickled) if extra_pickled else None
    data = Dataset.merge(list(parts))
    with dask.config.set({"caelum.bi": settings}):
        built = {name: precomputed[name] if name in precomputed else BUILDERS[name](data) for name in table_names}
        derived = _extra_tables(extra, data, built) if extra is not None else {}
    for name, frame in derived.items():
        built[str(name)] = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    return {"tables": built, "problems": data.problems, "collected": data.summary()}


def _extra_tables(extra: Callable[..., Any], data: Dataset, built: dict[str, pd.DataFrame]) -> dict[str, Any]:
    try:
        return dict(extra(data, built) or {})
    except Exception as exc:  # noqa: BLE001 - user code: one clear line, not a worker traceback
        raise InvalidInput(f"the report definition's tables() failed: {type(exc).__name__}: {exc}") from None


def _rows(part: dict[str, pd.DataFrame]) -> int:
    return len(part["files"])


def run_report(definition: str | Path | ReportDefinition, *, client: Client | None = None,
               roots: list[str] | None = None, since: str | None = None, out: str | Path | None = None,
               per: Literal["machine", "worker"] = "machine",
               progress: Callable[[str], None] | None = None) -> ReportResult:
    """Run a report definition and (with ``out``) write its exports; returns the DataFrames.

    ``since`` overrides the definition's SINCE (``all`` for the whole history); ``roots`` are
    searched on every machine in addition to its ``caelum.bi.roots``.
    """
    say = progress or (lambda _msg: None)
    defn = definition if isinstance(definition, ReportDefinition) else load(definition)
    window = parse_since(since if since is not None else defn.since)
    if client is None:
        from caelum_dask.cluster import client_scope

        with client_scope() as own:
            return run_report(defn, client=own, roots=roots, since=since, out=out, per=per, progress=progress)
    started = time.monotonic()
    run_id, futures = submit_collectors(client, roots, window, per, defn.sources)
    say(f"collecting on {len(futures)} collector(s) (run {run_id})")
    precomputed: dict[str, pd.DataFrame] = {}
    wanted_large = [t for t in ("churn", "activity") if t in defn.tables]
    if wanted_large:
        sizes = client.gather([client.submit(_rows, f, key=f"caelum-bi-{run_id}-size-{n}")
                               for n, f in enumerate(futures)])
        threshold = config.get("bi.dask-threshold")
        if sum(sizes) > int(500_000 if threshold is None else threshold):
            say(f"{sum(sizes)} file changes: aggregating churn/activity with dask.dataframe")
            files = large.files_from_futures(futures)
            big = large.aggregate_on_cluster(client, files)
            precomputed = {t: big[t] for t in wanted_large}
    extra = getattr(defn.module, "tables", None)
    blob = cloudpickle.dumps(extra) if callable(extra) else None
    settings = dict(dask.config.get("caelum.bi", default={}) or {})
    result = client.submit(aggregate, defn.tables, blob, settings, precomputed,
                           *futures, key=f"caelum-bi-{run_id}-aggregate", pure=False).result()
    say(f"aggregated {len(result['tables'])} table(s)")
    report = ReportResult(run_id=run_id, report=defn.name, title=defn.title, tables=result["tables"],
                          problems=result["problems"], collected=result["collected"])
    if out is not None:
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
        say(f"wrote {out}")
    report.seconds = time.monotonic() - started
    events.emit(events.BI, "report-finished", sink=client, report=defn.name, run_id=run_id,
                tables=sorted(report.tables), out=report.out)
    return report

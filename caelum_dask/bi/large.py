"""File-change aggregations for large data: one definition, run on pandas or over the cluster.

Collected rows only repeat across collectors when the same repository is cloned on several
machines, and then a commit's file rows are identical everywhere. So deduplication needs no
shuffle: partition *i* keeps a commit only if no earlier partition has it (it receives the
earlier partitions' distinct commit ids as one small Arrow array, not their rows). After that
every commit lives in exactly one partition, so churn per file and weekly activity (including
distinct commit counts) are exact map-reduce sums: per-partition ``groupby`` where the
partition already is, then a combine of the small partial tables.

Which engine runs is decided by bytes, not rows (:func:`plan`): the collectors measure their
tables where they are, and while the whole lot stays under ``caelum.bi.dask-above-fraction`` of
the smallest worker's memory one process can hold it, so one task does it all (pandas, no
scheduling of partial tasks, no transfer of partial tables); above it the map-reduce runs on the
cluster and no process ever holds all rows.

Measured costs this module avoids (benchmarks/RESULTS.md, "bi"): pandas' ``Series.isin`` on an
Arrow string column against an object array converts every value to a Python object (≈1 s for
250 000 rows against 190 000 ids) — :func:`pyarrow.compute.is_in` does it in ≈30 ms; a
named-aggregation ``agg`` re-factorizes the string group keys once per output column, so the
keys are grouped once and the sums taken together; ``nunique`` on the 40-character commit
strings is replaced by ``nunique`` on integer codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
from distributed import Client, Future

from caelum_dask import keys
from caelum_dask.bi.metrics import week_of

DEDUP_KEY = ["commit", "path", "old_path"]
CHURN_KEYS = ["repo", "path"]
ACTIVITY_KEYS = ["week", "author", "repo"]
ACTIVITY_COLUMNS = [*ACTIVITY_KEYS, "file_changes", "added", "deleted", "commits"]
USED = ["commit", "repo", "path", "author", "author_time", "added", "deleted"]  # what the tables read


def _arrow_strings(values: pd.Series | np.ndarray) -> pa.Array:
    """``values`` as one Arrow ``large_string`` array (zero-copy for pandas' Arrow strings)."""
    array = pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string())


def commit_ids(part: pd.DataFrame) -> pa.Array:
    """The distinct commits of one partition (what later partitions must not count again).

    An Arrow array: a few MB for 60 000 commits, pickled as buffers, and usable as the value
    set of :func:`pyarrow.compute.is_in` without conversion.
    """
    return pc.unique(_arrow_strings(part["commit"]))


def _seen(commits: pd.Series, earlier: tuple[pa.Array, ...]) -> np.ndarray:
    """Which of ``commits`` are in one of the ``earlier`` id arrays (a boolean array)."""
    values = pa.chunked_array([a.cast(pa.large_string()) for a in earlier], type=pa.large_string())
    hit = pc.is_in(_arrow_strings(commits), value_set=values.combine_chunks())
    return hit.to_numpy(zero_copy_only=False)


def partial_aggregates(part: pd.DataFrame, *earlier: pa.Array | np.ndarray) -> dict[str, pd.DataFrame]:
    """Dedup one partition against itself and the earlier partitions' commits, then aggregate.

    The kept rows are taken once, only the columns the tables need (every copy of a million
    rows costs pages; under Dask's ``MALLOC_TRIM_THRESHOLD_`` alone each one is mmapped anew,
    which caelum workers avoid with ``caelum.worker.malloc-mmap-threshold``);
    ``churn`` is ``added + deleted`` summed per file, the same integers as summing per row.
    """
    keep = ~part.duplicated(subset=DEDUP_KEY).to_numpy()
    if earlier:
        keep &= ~_seen(part["commit"], tuple(a if isinstance(a, pa.Array) else _arrow_strings(a) for a in earlier))
    rows = part[USED] if keep.all() else part.loc[keep, USED]
    rows = rows.assign(week=week_of(rows["author_time"]), commit_code=pd.factorize(rows["commit"])[0])
    by_file = rows.groupby(CHURN_KEYS)
    churn = by_file[["added", "deleted"]].sum()
    churn.insert(0, "revisions", by_file["commit"].count())
    churn["churn"] = churn["added"] + churn["deleted"]
    by_week = rows.groupby(ACTIVITY_KEYS)
    activity = by_week[["added", "deleted"]].sum()
    activity.insert(0, "file_changes", by_week["commit"].count())
    activity["commits"] = by_week["commit_code"].nunique()
    return {"churn": churn, "activity": activity}


def combine(partials: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Sum the partial tables and sort them like the pandas tables in ``metrics``."""
    churn = pd.concat([p["churn"] for p in partials]).groupby(level=CHURN_KEYS).sum()
    activity = pd.concat([p["activity"] for p in partials]).groupby(level=ACTIVITY_KEYS).sum()
    churn = churn.reset_index().sort_values(["churn", "repo", "path"], ascending=[False, True, True],
                                            ignore_index=True)
    activity = activity.reset_index().sort_values(["week", "repo", "author"], ignore_index=True)
    return {"churn": churn, "activity": activity[ACTIVITY_COLUMNS]}


def aggregate_parts(parts: list[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The map-reduce run in one process over ``parts`` (no concatenated copy of all rows)."""
    ids: list[pa.Array] = []
    partials = []
    for part in parts:
        partials.append(partial_aggregates(part, *ids))
        ids.append(commit_ids(part))
    return combine(partials)


def aggregate_in_pandas(files: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The single-process baseline: the same definition on one pandas DataFrame."""
    return combine([partial_aggregates(files)])


# -- where it runs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the collected file changes weigh, and which engine that picks (see :func:`plan`)."""

    rows: int
    bytes: int  # in-memory size of every collected table, measured where each collector ran
    worker_memory: int  # the smallest worker's memory limit (or its host's memory if unlimited)
    fraction: float | None  # caelum.bi.dask-above-fraction; None: never the map-reduce
    engine: Literal["pandas", "dask"]

    def describe(self) -> str:
        """One line for progress messages and the benchmark."""
        limit = "never" if self.fraction is None else f"{self.fraction:g} × {self.worker_memory / 2**20:,.0f} MiB"
        return (f"{self.rows} file changes, {self.bytes / 2**20:,.1f} MiB collected "
                f"(cluster above {limit}): {self.engine}")


def frame_bytes(frame: pd.DataFrame, sample: int = 1024) -> int:
    """The in-memory size of ``frame``, estimated cheaply.

    Numeric, datetime and Arrow-string columns report their buffers exactly without looking at
    values; Python-object columns would need every object measured (``deep=True`` takes 60 ms
    per 250 000 ``None`` values), so they are measured on the first ``sample`` rows and scaled.
    """
    size = int(frame.memory_usage(index=True, deep=False).sum())
    objects = [c for c, dtype in frame.dtypes.items() if dtype == object]
    if objects and len(frame):
        head = frame[objects].head(sample)
        extra = head.memory_usage(index=False, deep=True).sum() - head.memory_usage(index=False, deep=False).sum()
        size += int(extra * len(frame) / len(head))
    return size


def partition_size(part: dict[str, pd.DataFrame]) -> tuple[int, int]:
    """``(file-change rows, bytes of all tables)`` of one collector's result, where it lives."""
    frames = [f for f in part.values() if isinstance(f, pd.DataFrame)]
    return len(part.get("files", ())), sum(frame_bytes(f) for f in frames)


def _host_memory() -> int:
    return int(psutil.virtual_memory().total)


def smallest_worker_memory(client: Client) -> int:
    """The smallest memory limit among the workers; a worker without one counts its host's RAM.

    Any worker may end up running the single pandas task, so the smallest one bounds it.
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    limits = {address: int(info.get("memory_limit") or 0) for address, info in workers.items()}
    unlimited = [address for address, limit in limits.items() if not limit]
    if unlimited:
        limits.update(client.run(_host_memory, workers=unlimited))
    return min(limits.values()) if limits else _host_memory()


def plan(client: Client, futures: list[Future], fraction: float | None, run_id: str = "") -> Plan:
    """Measure the collectors' results where they are and pick the engine by bytes.

    ``dask`` when the collected tables weigh more than ``fraction`` of the smallest worker's
    memory: then the single aggregation process (which holds all of them and its working
    copies) could run out, and the map-reduce keeps each partition on its own worker.
    """
    with keys.kind("bi"):
        sizes = client.gather([client.submit(partition_size, f, key=keys.task_key("bi_size", run_id, n))
                               for n, f in enumerate(futures)])
    rows, size = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
    memory = smallest_worker_memory(client)
    above = fraction is not None and size > float(fraction) * memory
    return Plan(rows=rows, bytes=size, worker_memory=memory, fraction=fraction,
                engine="dask" if above else "pandas")


def _files_of(part: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return part["files"]


def _ids_of(part: dict[str, pd.DataFrame]) -> pa.Array:
    return commit_ids(part["files"])


def _partial_of(part: dict[str, pd.DataFrame], *earlier: pa.Array) -> dict[str, pd.DataFrame]:
    return partial_aggregates(part["files"], *earlier)


def _all_of(*parts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return aggregate_parts([p["files"] for p in parts])


def map_reduce(client: Client, futures: list[Future], run_id: str = "") -> dict[str, pd.DataFrame]:
    """Churn and activity over the cluster: a partial task where each collector's rows are,
    then one combine of the partial tables (rows never leave their worker)."""
    with keys.kind("bi"):
        ids = [client.submit(_ids_of, f, key=keys.task_key("bi_commit_ids", run_id, n))
               for n, f in enumerate(futures)]
        partials = [client.submit(_partial_of, f, *ids[:n], key=keys.task_key("bi_partial", run_id, n))
                    for n, f in enumerate(futures)]
        total = client.submit(combine, partials, key=keys.task_key("bi_combine", run_id))
    return total.result()


def aggregate(client: Client, futures: list[Future], fraction: float | None,
              run_id: str = "") -> tuple[dict[str, pd.DataFrame], Plan]:
    """Churn and activity of the collectors' ``futures`` with the engine :func:`plan` picks.

    ``pandas``: one task on the worker already holding the most of the data (Dask places it
    there) runs :func:`aggregate_parts`; ``dask``: :func:`map_reduce`. Same tables either way.
    """
    chosen = plan(client, futures, fraction, run_id)
    if chosen.engine == "dask":
        return map_reduce(client, futures, run_id), chosen
    with keys.kind("bi"):
        single = client.submit(_all_of, *futures, key=keys.task_key("bi_churn_activity", run_id))
    return single.result(), chosen


# -- a dask.dataframe of file changes --------------------------------------------------------------
def files_from_futures(futures: list[Future], meta: pd.DataFrame | None = None) -> dd.DataFrame:
    """One dask partition per collector, read from the futures where they already live."""
    parts = [dask.delayed(_files_of)(f) for f in futures]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def aggregate_lazy(files: dd.DataFrame) -> Any:
    """The map-reduce graph over the partitions of ``files`` (a Delayed of the combined tables)."""
    parts = files.to_delayed()
    ids = [dask.delayed(commit_ids)(p) for p in parts]
    partials = [dask.delayed(partial_aggregates)(p, *ids[:i]) for i, p in enumerate(parts)]
    return dask.delayed(combine)(partials)


def aggregate_on_cluster(client: Client, files: dd.DataFrame) -> dict[str, pd.DataFrame]:
    """Churn and activity of any dask.dataframe of file changes as one Dask computation."""
    return client.compute(aggregate_lazy(files), sync=True)

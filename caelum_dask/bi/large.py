"""File-change aggregations for large data: one definition, run on pandas or over the cluster.

Collected rows only repeat across collectors when the same repository is cloned on several
machines, and then a commit's file rows are identical everywhere. So deduplication needs no
shuffle: partition *i* keeps a commit only if no earlier partition has it (it receives the
earlier partitions' commit ids, which are small, not their rows). After that every commit
lives in exactly one partition, so churn per file and weekly activity (including distinct
commit counts) are exact map-reduce sums: per-partition ``groupby`` then a combine of the
small partial tables. Through the cluster the partitions are the collectors' results where
they already are (a dask.dataframe built from the collector futures); single-process it is
the same code on one pandas DataFrame.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, Future

from caelum_dask.bi.metrics import week_of

DEDUP_KEY = ["commit", "path", "old_path"]


def commit_ids(part: pd.DataFrame) -> np.ndarray:
    """The distinct commits of one partition (what later partitions must not count again)."""
    return pd.unique(part["commit"].to_numpy())


def partial_aggregates(part: pd.DataFrame, *earlier: np.ndarray) -> dict[str, pd.DataFrame]:
    """Dedup one partition against itself and the earlier partitions' commits, then aggregate."""
    part = part.drop_duplicates(subset=DEDUP_KEY)
    if earlier:
        part = part[~part["commit"].isin(np.concatenate(earlier))]
    part = part.assign(week=week_of(part["author_time"]), churn=part["added"] + part["deleted"])
    churn = part.groupby(["repo", "path"]).agg(
        revisions=("commit", "count"), added=("added", "sum"), deleted=("deleted", "sum"),
        churn=("churn", "sum"))
    activity = part.groupby(["week", "author", "repo"]).agg(
        file_changes=("commit", "count"), added=("added", "sum"), deleted=("deleted", "sum"),
        commits=("commit", "nunique"))
    return {"churn": churn, "activity": activity}


def combine(partials: list[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Sum the partial tables and sort them like the pandas tables in ``metrics``."""
    churn = pd.concat([p["churn"] for p in partials]).groupby(level=["repo", "path"]).sum()
    activity = pd.concat([p["activity"] for p in partials]).groupby(level=["week", "author", "repo"]).sum()
    churn = churn.reset_index().sort_values(["churn", "repo", "path"], ascending=[False, True, True],
                                            ignore_index=True)
    activity = activity.reset_index().sort_values(["week", "repo", "author"], ignore_index=True)
    return {"churn": churn, "activity": activity[["week", "author", "repo", "file_changes", "added",
                                                  "deleted", "commits"]]}


def files_from_futures(futures: list[Future], meta: pd.DataFrame | None = None) -> dd.DataFrame:
    """One dask partition per collector, read from the futures where they already live."""
    parts = [dask.delayed(_files_of)(f) for f in futures]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _files_of(part: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return part["files"]


def aggregate_lazy(files: dd.DataFrame) -> Any:
    """The map-reduce graph over the partitions of ``files`` (a Delayed of the combined tables)."""
    parts = files.to_delayed()
    ids = [dask.delayed(commit_ids)(p) for p in parts]
    partials = [dask.delayed(partial_aggregates)(p, *ids[:i]) for i, p in enumerate(parts)]
    return dask.delayed(combine)(partials)


def aggregate_on_cluster(client: Client, files: dd.DataFrame) -> dict[str, pd.DataFrame]:
    """Churn and activity as one Dask computation on ``client``'s cluster."""
    return client.compute(aggregate_lazy(files), sync=True)


def aggregate_in_pandas(files: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The single-process baseline: the same definition on one pandas DataFrame."""
    return combine([partial_aggregates(files)])

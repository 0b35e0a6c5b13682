"""The same file-change aggregations on pandas or on dask.dataframe (for data that is large).

The functions here only use the API pandas and dask.dataframe share, so one definition runs
single-process (a pandas DataFrame) or as one Dask computation over the collectors' partitions
where they already are (a dask DataFrame built from the collector futures): no row travels to
the client, only the aggregated tables do.
"""

from __future__ import annotations

from typing import Any

import dask.dataframe as dd
import pandas as pd
from distributed import Client, Future

from caelum_dask.bi.metrics import week_of


def _with_week(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(week=week_of(frame["author_time"]), churn=frame["added"] + frame["deleted"])


def file_aggregates(files: Any) -> dict[str, Any]:
    """Dedup file changes by (commit, path, old_path), then churn per file and weekly activity.

    ``files`` is a pandas or dask DataFrame with the collector's ``files`` columns; the result
    holds lazy dask objects for a dask input (compute them together with ``dask.compute``).
    """
    files = files.drop_duplicates(subset=["commit", "path", "old_path"])
    if isinstance(files, dd.DataFrame):
        files = files.map_partitions(_with_week)
    else:
        files = _with_week(files)
    churn = files.groupby(["repo", "path"]).agg(
        revisions=("commit", "count"), added=("added", "sum"), deleted=("deleted", "sum"),
        churn=("churn", "sum"))
    activity = files.groupby(["week", "author", "repo"]).agg(
        file_changes=("commit", "count"), added=("added", "sum"), deleted=("deleted", "sum"))
    commits = files[["week", "author", "repo", "commit"]].drop_duplicates().groupby(
        ["week", "author", "repo"])["commit"].count()
    return {"churn": churn, "activity": activity, "commits": commits}


def finish(parts: dict[str, pd.DataFrame | pd.Series]) -> dict[str, pd.DataFrame]:
    """Computed parts -> the ``churn`` and ``activity`` tables, sorted like the pandas ones."""
    churn = parts["churn"].reset_index().sort_values(["churn", "path"], ascending=[False, True],
                                                     ignore_index=True)
    activity = parts["activity"].join(parts["commits"].rename("commits")).reset_index()
    activity = activity.sort_values(["week", "repo", "author"], ignore_index=True)
    return {"churn": churn, "activity": activity}


def files_from_futures(futures: list[Future], meta: pd.DataFrame | None = None) -> dd.DataFrame:
    """One dask partition per collector, read from the futures where they already live."""
    from dask import delayed

    parts = [delayed(_files_of)(f) for f in futures]
    return dd.from_delayed(parts, meta=meta, verify_meta=False)


def _files_of(part: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return part["files"]


def aggregate_on_cluster(client: Client, files: dd.DataFrame) -> dict[str, pd.DataFrame]:
    """Run :func:`file_aggregates` as one Dask computation on ``client``'s cluster."""
    lazy = file_aggregates(files)
    computed = client.compute(list(lazy.values()), sync=True)
    return finish(dict(zip(lazy, computed)))


def aggregate_in_pandas(files: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The single-process baseline: the same definition on one pandas DataFrame."""
    return finish(file_aggregates(files))

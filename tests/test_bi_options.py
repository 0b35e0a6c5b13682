"""BIOptions travel with the tasks; BI progress is ProgressEvent(job="bi") for CLI and MCP.

One real worker process whose own ``caelum.bi`` settings contradict the caller's (search depth
1, a fix pattern that matches nothing): whatever the collectors and the aggregation compute must
follow the caller. Its ``caelum.bi.roots`` is the one setting that stays the worker's: roots are
folders of that machine, and the caller passes none.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.config
import pytest
from bi_fixtures import make_alpha
from harness import ProcessCluster, run_caelum

from caelum_dask.bi import BIOptions, collect, collect_here, metrics, run_report
from caelum_dask.bi.dataset import Dataset
from caelum_dask.progress import ProgressEvent

DEFINITION = '''TITLE = "deploys"
SINCE = "all"
SOURCES = ["git"]
TABLES = ["deployments"]


def tables(data, built):
    from caelum_dask.bi import metrics
    return {"mine": metrics.deployments(data)}
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bi-options")
    alpha = make_alpha(base / "roots" / "team" / "alpha")  # two levels under the root
    definition = base / "deploys.py"
    definition.write_text(DEFINITION)
    return {"root": base / "roots", "alpha": alpha, "definition": definition, "base": base}


@pytest.fixture(scope="module")
def cluster(world: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    pc = ProcessCluster(logdir=tmp_path_factory.mktemp("bi-options-logs"))
    try:
        pc.start_scheduler()
        pc.env = {"DASK_CAELUM__BI__ROOTS": json.dumps([str(world["root"])]),
                  "DASK_CAELUM__BI__MAX_DEPTH": "1", "DASK_CAELUM__BI__FIX_PATTERN": "^never$",
                  "DASK_CAELUM__HOME": str(world["base"] / "home")}
        pc.start_worker("W")
        client = pc.wait_for_workers(1)
        try:
            yield client, pc.address
        finally:
            client.close()
    finally:
        pc.stop()


def test_collectors_read_history_as_the_caller_says(cluster: tuple[Any, str]) -> None:
    client = cluster[0]
    data = collect(client, since=None, per="worker")  # the caller's max-depth (3) finds alpha
    assert data.repos["repo"].tolist() == ["alpha"] and len(data.commits) == 8
    with dask.config.set({"caelum.bi.max-depth": 1}):
        shallow = collect(client, since=None, per="worker")
    assert len(shallow.commits) == 0
    assert shallow.problems["kind"].tolist() == ["no-repositories"]
    assert "searched 1 levels deep" in shallow.problems["message"].iloc[0]
    deeper = collect(client, since=None, per="worker", options=BIOptions(max_depth=2, git_revs="v1.0"))
    assert len(deeper.commits) == 2  # only what tag v1.0 reaches


def test_report_follows_the_caller_and_reports_steps(cluster: tuple[Any, str], world: dict[str, Path],
                                                     tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    result = run_report(world["definition"], client=cluster[0], per="worker", out=tmp_path / "out",
                        progress=events.append)
    # the worker's own pattern would find no fix; the caller's finds the one fix commit,
    # in the built-in table and in the definition's own tables() that calls metrics without options
    assert result.tables["deployments"]["fixes"].tolist() == [0, 1, 0]
    assert result.tables["mine"]["fixes"].tolist() == [0, 1, 0]
    assert {e.job for e in events} == {"bi"} and {e.run_id for e in events} == {result.run_id}
    counted = [e for e in events if e.total is not None]
    assert counted[-1].done == counted[-1].total == 3 and counted[-1].failed == 0  # collector, aggregate, export
    assert [e.done for e in counted] == sorted(e.done for e in counted)
    messages = [e.message for e in events if e.message]
    assert messages[0].startswith("collecting on 1 collector(s)") and messages[-1] == f"wrote {tmp_path / 'out'}"
    assert result.to_dict()["tables"]["mine"]["rows"] == 3

    proc = run_caelum("bi", "report", str(world["definition"]), "--per", "worker", "--out", str(tmp_path / "cli"),
                      "--json", "--scheduler", cluster[1])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tables"]["deployments"] == {
        "rows": 3, "columns": list(result.tables["deployments"].columns)}
    assert "caelum bi: collecting on 1 collector(s)" in proc.stderr
    assert "caelum bi: 3/3 steps, 0 failed in" in proc.stderr  # ProgressDisplay's final line


def test_mcp_bi_report_sends_the_steps(cluster: tuple[Any, str], world: dict[str, Path], tmp_path: Path) -> None:
    from mcp import Client

    from caelum_dask.mcp_server import build_server
    from caelum_dask.mcp_server.handle import ClusterHandle

    handle = ClusterHandle(cluster[1])
    server = build_server(handle=handle)
    seen: list[tuple[float, float | None, str | None]] = []

    async def go() -> Any:
        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total, message))

        async with Client(server) as mcp:
            return await mcp.call_tool("bi_report", {"definition": str(world["definition"]), "per": "worker",
                                                     "out": str(tmp_path / "mcp")}, progress_callback=on_progress)

    try:
        answer = asyncio.run(go())
    finally:
        handle.close()
    assert not answer.is_error, answer.content
    assert seen and seen[-1][:2] == (3.0, 3.0) and "wrote" in (seen[-1][2] or "")


def test_library_calls_use_the_calling_process_configuration(world: dict[str, Path]) -> None:
    part = collect_here("here", roots=[str(world["alpha"])], since=None, sources_wanted=("git",),
                        options=BIOptions.from_config(git_revs="HEAD --branches --tags --remotes"))
    data = Dataset.merge([part])
    assert len(data.commits) == 8
    assert metrics.deployments(data)["fixes"].tolist() == [0, 1, 0]
    with dask.config.set({"caelum.bi.fix-pattern": "^never$"}):
        assert metrics.deployments(data)["fixes"].tolist() == [0, 0, 0]
        assert BIOptions.from_config().fix_pattern == "^never$"
    given = BIOptions.from_config(fix_pattern="crash")
    assert metrics.deployments(data, options=given)["fixes"].tolist() == [0, 1, 0]
    assert given.max_depth == 3 and given.dask_above_fraction == 0.01  # the rest from caelum.yaml
    with pytest.raises(TypeError, match="no option colour"):
        BIOptions.from_config(colour="blue")

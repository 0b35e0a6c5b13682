"""MCP tools of the capabilities, against the same engines the CLI uses."""

from __future__ import annotations

import asyncio
import json

import dask.config
import pytest
from mcp import Client

from caelum_dask.cluster import connect
from caelum_dask.mcp_server import build_server
from caelum_dask.mcp_server.handle import ClusterHandle

from harness import run_caelum


def _project(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text(
        "def f(x):\n    if x > 1 and x < 5:\n        return x\n    for i in range(x):\n        print(i)\n    return 0\n")
    (root / "pkg" / "b.py").write_text("from pkg import a\n\n\nclass B:\n    def g(self):\n        return a.f(3)\n")
    return root


def test_analyze_codebase_matches_the_cli_and_reports_progress(client, tmp_path):
    root = _project(tmp_path)
    handle = ClusterHandle(client.scheduler.address)
    server = build_server(handle=handle)
    progress: list[tuple[float, float | None]] = []

    async def go():
        async def on_progress(done, total, message):
            progress.append((done, total))

        async with Client(server) as mcp:
            ok = await mcp.call_tool("analyze_codebase", {"path": str(root), "out": str(tmp_path / "report")},
                                     progress_callback=on_progress)
            missing = await mcp.call_tool("analyze_codebase", {"path": str(tmp_path / "nope")})
            return ok, missing

    try:
        ok, missing = asyncio.run(go())
    finally:
        handle.close()
    assert not ok.is_error, ok.content
    summary = ok.structured_content
    cli = run_caelum("analyze", str(root), "--json", "--no-cache", "--scheduler", client.scheduler.address)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    assert summary["files"] == expected["files"] == 3
    assert summary["functions"] == expected["functions"]
    assert (tmp_path / "report" / "report.html").exists() and summary["report"] == str(tmp_path / "report")
    assert progress and progress[-1][0] == progress[-1][1]

    assert missing.is_error
    cli_missing = run_caelum("analyze", str(tmp_path / "nope"), "--scheduler", client.scheduler.address)
    message = cli_missing.stderr.strip().removeprefix("caelum: error: ")
    assert message in missing.content[0].text


@pytest.mark.slow
def test_llm_tools_route_through_the_pool(fakes, tmp_path):
    fake = fakes(models=["llama3.2:latest", "nomic-embed-text:latest"], loaded=["llama3.2:latest"])
    with dask.config.set({"caelum.llm.hosts": [fake.url], "caelum.llm.probe-default": False,
                         "caelum.embedded.n-workers": 1}):
        client = connect()
    handle = ClusterHandle(client.scheduler.address)
    server = build_server(handle=handle)

    async def go():
        async with Client(server) as mcp:
            models = await mcp.call_tool("llm_models", {})
            generated = await mcp.call_tool("llm_generate", {"model": "llama3.2", "prompt": "hello"})
            chat = await mcp.call_tool("llm_chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
            embedded = await mcp.call_tool("llm_embed", {"model": "nomic-embed-text", "input": ["a", "b"]})
            unknown = await mcp.call_tool("llm_generate", {"model": "no-such-model", "prompt": "x"})
            return models, generated, chat, embedded, unknown

    try:
        models, generated, chat, embedded, unknown = asyncio.run(go())
        cli = run_caelum("llm", "status", "--json", "--scheduler", client.scheduler.address)
    finally:
        handle.close()
        client.close()
    assert not models.is_error, models.content
    assert "llama3.2:latest" in models.structured_content["models"]
    assert cli.returncode == 0, cli.stderr
    assert set(json.loads(cli.stdout)["models"]) == set(models.structured_content["models"])
    assert not generated.is_error and generated.structured_content["response"]
    assert generated.structured_content["model"].startswith("llama3.2")
    assert not chat.is_error and chat.structured_content["message"]["role"] == "assistant"
    assert not embedded.is_error and len(embedded.structured_content["embeddings"]) == 2
    assert unknown.is_error and "no-such-model" in unknown.content[0].text
    assert len(fake.requests) >= 3


def _suite(tmp_path):
    root = tmp_path / "suite"
    root.mkdir()
    (root / "test_mod.py").write_text(
        "def test_ok():\n    assert 1 + 1 == 2\n\n"
        "def test_bad():\n    assert [1, 2] == [1, 3]\n\n"
        "import pytest\n\n@pytest.mark.skip(reason='later')\ndef test_skip():\n    pass\n")
    return root


@pytest.mark.slow
def test_run_tests_matches_caelum_test(client, tmp_path):
    root = _suite(tmp_path)
    handle = ClusterHandle(client.scheduler.address)
    server = build_server(handle=handle)

    async def go():
        async with Client(server) as mcp:
            ok = await mcp.call_tool("run_tests", {"path": str(root), "retry_failed": 0})
            bad = await mcp.call_tool("run_tests", {"path": str(root), "dist": "sideways"})
            return ok, bad

    try:
        ok, bad = asyncio.run(go())
    finally:
        handle.close()
    assert not ok.is_error, ok.content
    result = ok.structured_content
    cli = run_caelum("test", str(root), "--json", "--retry-failed", "0", "--no-record",
                     "--scheduler", client.scheduler.address)
    expected = json.loads(cli.stdout)
    assert result["exit_code"] == expected["exit_code"] == cli.returncode == 1
    assert result["counts"] == expected["counts"]
    (failure,) = result["failures"]
    assert failure["nodeid"] == "test_mod.py::test_bad" and "assert" in failure["traceback"]
    assert bad.is_error and "unknown --dist 'sideways'" in bad.content[0].text


@pytest.mark.slow
def test_bi_report_matches_the_cli(client, tmp_path):
    from bi_fixtures import make_alpha, rev_count

    from harness import REPO

    roots = tmp_path / "roots"
    repo = make_alpha(roots / "alpha")
    handle = ClusterHandle(client.scheduler.address)
    server = build_server(handle=handle)
    definition = str(REPO / "bi" / "weekly_team.py")

    async def go():
        async with Client(server) as mcp:
            ok = await mcp.call_tool("bi_report", {"definition": definition, "roots": [str(roots)], "since": "all",
                                                   "out": str(tmp_path / "mcp-out")})
            bad = await mcp.call_tool("bi_report", {"definition": str(tmp_path / "missing.py")})
            return ok, bad

    try:
        ok, bad = asyncio.run(go())
    finally:
        handle.close()
    assert not ok.is_error, ok.content
    cli = run_caelum("bi", "report", definition, "--roots", str(roots), "--since", "all", "--out",
                     str(tmp_path / "cli-out"), "--json", "--scheduler", client.scheduler.address)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    got = ok.structured_content
    assert {k: v["rows"] for k, v in got["tables"].items()} == {k: v["rows"] for k, v in expected["tables"].items()}
    assert got["collected"] == expected["collected"]
    import pandas as pd

    activity = pd.read_parquet(tmp_path / "mcp-out" / "activity.parquet")
    assert activity["commits"].sum() == rev_count(repo)
    assert bad.is_error
    cli_bad = run_caelum("bi", "report", str(tmp_path / "missing.py"), "--scheduler", client.scheduler.address)
    assert cli_bad.stderr.strip().removeprefix("caelum: error: ") in bad.content[0].text


WORKFLOW = '''
import os, time
from caelum_dask.workflow import Workflow, task


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int) -> int:
    return x * x


@task
def gate(values: list[int], release: str) -> int:
    """Waits for the test to create `release` (empty: no waiting)."""
    while release and not os.path.exists(release):
        time.sleep(0.05)
    return sum(values)


with Workflow("mcp-squares", params={"n": 5, "release": ""}) as wf:
    gate(square.map(numbers(wf.param("n"))), wf.param("release"))
'''


def test_workflow_tools_run_status_cancel(client, tmp_path):
    flow = tmp_path / "squares.py"
    flow.write_text(WORKFLOW)
    release = tmp_path / "release"
    handle = ClusterHandle(client.scheduler.address)
    server = build_server(handle=handle)
    messages: list[str] = []

    async def go():
        async def on_progress(done, total, message):
            messages.append(message or "")

        async with Client(server) as mcp:
            done = await mcp.call_tool("run_workflow", {"path": str(flow), "params": {"n": "4"}},
                                       progress_callback=on_progress)
            status = await mcp.call_tool("workflow_status", {"run_id": done.structured_content["run_id"]})
            started = await mcp.call_tool("run_workflow", {"path": str(flow), "wait": False,
                                                           "params": {"n": "3", "release": str(release)}})
            cancelled = await mcp.call_tool("cancel_run", {"run_id": started.structured_content["run_id"]})
            after = await mcp.call_tool("workflow_status", {"run_id": started.structured_content["run_id"]})
            missing = await mcp.call_tool("run_workflow", {"path": str(tmp_path / "nope.py")})
            unknown = await mcp.call_tool("run_workflow", {"path": str(flow), "params": {"bogus": "1"}})
            runs = await mcp.read_resource("caelum://runs")
            no_status = await mcp.call_tool("workflow_status", {"run_id": "no-such-run"})
            no_cancel = await mcp.call_tool("cancel_run", {"run_id": "no-such-run"})
            assert no_status.is_error and "no run 'no-such-run'" in no_status.content[0].text
            assert no_cancel.is_error and "no run 'no-such-run'" in no_cancel.content[0].text
            return done, status, started, cancelled, after, missing, unknown, runs

    try:
        done, status, started, cancelled, after, missing, unknown, runs = asyncio.run(go())
    finally:
        release.write_text("go")
        handle.close()
    assert not done.is_error, done.content
    result = done.structured_content
    run_id = result["run_id"]
    assert result["state"] == "completed" and result["results"]["gate"] == 0 + 1 + 4 + 9
    assert messages[0] == f"run {run_id} started" and messages[-1] == f"run {run_id} completed"
    cli = run_caelum("run", str(flow), "-p", "n=4", "--no-cache", "--json", "--scheduler", client.scheduler.address)
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout)
    assert expected["results"]["gate"] == result["results"]["gate"]
    assert expected["computed"] + expected["cached"] == result["computed"] + result["cached"]
    assert status.structured_content["id"] == run_id and status.structured_content["state"] == "completed"

    assert started.structured_content["state"] == "running" and started.structured_content["run_id"]
    assert cancelled.structured_content["state"] == "cancelled"
    assert after.structured_content["state"] == "cancelled"
    assert missing.is_error and "nope.py" in missing.content[0].text
    cli_missing = run_caelum("run", str(tmp_path / "nope.py"), "--scheduler", client.scheduler.address)
    assert cli_missing.returncode != 0
    assert unknown.is_error and "bogus" in unknown.content[0].text
    assert run_id in {r["id"] for r in json.loads(runs.contents[0].text)}

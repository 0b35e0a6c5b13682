"""The MCP front door, driven by the official SDK's clients (in-memory, stdio, HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from caelum_dask.mcp_server import build_server
from caelum_dask.mcp_server.handle import ClusterHandle

from harness import REPO, run_caelum


def call(server_or_transport, tool: str, args: dict | None = None, **client_kwargs):
    async def go():
        async with Client(server_or_transport, **client_kwargs) as client:
            return await client.call_tool(tool, args or {})

    return asyncio.run(go())


@pytest.fixture
def mcp_server(client):
    """An MCP server on the test's embedded cluster."""
    handle = ClusterHandle(client.scheduler.address)
    yield build_server(handle=handle)
    handle.close()


def test_tools_have_schemas_and_status_matches_the_cli(mcp_server, client):
    async def go():
        async with Client(mcp_server) as mcp:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            status = await mcp.call_tool("cluster_status", {})
            online = await mcp.call_tool("list_machines", {"status": "online"})
            offline = await mcp.call_tool("list_machines", {"status": "offline"})
            resource = await mcp.read_resource("caelum://machines")
            return tools, status, online, offline, resource

    tools, status, online, offline, resource = asyncio.run(go())
    assert {"cluster_status", "list_machines"} <= set(tools)
    assert tools["list_machines"].input_schema["properties"]["status"]
    assert not status.is_error
    cli = json.loads(run_caelum("status", "--json", "--scheduler", client.scheduler.address).stdout)
    got = status.structured_content
    assert got["scheduler"] == cli["scheduler"] and got["dashboard"] == cli["dashboard"]
    assert [m["id"] for m in got["machines"]] == [m["id"] for m in cli["machines"]]
    assert [w["address"] for w in got["machines"][0]["workers"]] == [w["address"] for w in cli["machines"][0]["workers"]]
    assert not offline.is_error
    assert json.loads(resource.contents[0].text)[0]["id"] == got["machines"][0]["id"]


def test_invalid_arguments_are_tool_errors_not_crashes(mcp_server):
    result = call(mcp_server, "list_machines", {"status": "sideways"})
    assert result.is_error
    # the server is still serving
    assert not call(mcp_server, "cluster_status").is_error


def test_unreachable_scheduler_is_a_tool_error_with_the_cli_message(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DASK_CAELUM__CONNECT_TIMEOUT", "1")
    import dask.config

    with dask.config.set({"caelum.connect-timeout": 1}):
        result = call(build_server(f"tcp://127.0.0.1:{port}"), "cluster_status")
    assert result.is_error
    assert f"cannot reach the scheduler at tcp://127.0.0.1:{port}" in result.content[0].text


@pytest.mark.slow
def test_stdio_transport_through_a_real_subprocess(client):
    """examples/mcp_client.py starts `caelum mcp` over stdio with the SDK's stdio client."""
    result = subprocess.run([sys.executable, str(REPO / "examples" / "mcp_client.py"), "--scheduler",
                             client.scheduler.address], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cluster_status" in result.stdout and "list_machines" in result.stdout
    assert f"scheduler {client.scheduler.address}" in result.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_http_transport_on_loopback_requires_the_token(client, tmp_path):
    port = _free_port()
    env = {**os.environ, "CAELUM_MCP_TOKEN": "s3cret", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "mcp.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "caelum_dask", "mcp", "--transport", "http", "--port", str(port),
                             "--scheduler", client.scheduler.address], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "mcp.log").read_text()
                time.sleep(0.1)
        # no token / wrong token: refused before MCP is spoken
        assert httpx2.post(url, json={}).status_code == 401
        assert httpx2.post(url, json={}, headers={"Authorization": "Bearer nope"}).status_code == 401

        async def with_token(token: str):
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            async with http:
                async with Client(streamable_http_client(url, http_client=http)) as mcp:
                    return await mcp.call_tool("cluster_status", {})

        result = asyncio.run(with_token("s3cret"))
        assert not result.is_error
        assert result.structured_content["scheduler"] == client.scheduler.address
        with pytest.raises(BaseException):
            asyncio.run(with_token("wrong"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_off_loopback_without_token_is_refused():
    result = run_caelum("mcp", "--transport", "http", "--host", "0.0.0.0", env={"CAELUM_MCP_TOKEN": ""})
    assert result.returncode != 0
    assert result.stderr.strip().startswith("caelum: error: refusing to serve MCP on 0.0.0.0 without a token")


def test_mcp_and_ollama_http_stacks_coexist():
    import ollama

    import mcp.client.streamable_http  # noqa: F401

    assert ollama.Client(host="http://127.0.0.1:9") is not None

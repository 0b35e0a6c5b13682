"""MCP tool of test sharding (same engine as `caelum test`)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.progress import progress_reporter

MAX_FAILURE_TEXT = 4000


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    @server.tool()
    @tool_errors
    def run_tests(
        path: str,
        ctx: Context,
        pytest_args: list[str] | None = None,
        shards: str = "auto",
        dist: str = "load",
        retry_failed: int = 1,
    ) -> dict[str, Any]:
        """Run the pytest suite at `path` sharded over the cluster (like `caelum test`).

        Returns the counts, pytest's exit code, the failures with their tracebacks, flaky tests
        and the merged JUnit file's location.
        """
        from caelum_dask.testing.runner import TestOptions
        from caelum_dask.testing.runner import run_tests as run

        report = progress_reporter(ctx)
        steps = 0

        def progress(message: str) -> None:
            nonlocal steps
            steps += 1
            report(steps, None, message)

        options = TestOptions(shards=shards, dist=dist, retry_failed=retry_failed, pytest_args=list(pytest_args or []))
        summary = run(path, options, client=handle.client(), progress=progress)
        tests = [t for platform in summary["platforms"] for t in platform["tests"]]
        return {
            "run_id": summary["run_id"],
            "exit_code": summary["exit_code"],
            "counts": summary["counts"],
            "duration": summary["duration"],
            "junit": summary["junit"],
            "failures": [
                {"nodeid": t["nodeid"], "outcome": t["outcome"], "message": t.get("message", ""),
                 "traceback": str(t.get("longrepr", ""))[:MAX_FAILURE_TEXT]}
                for t in tests if t["outcome"] in ("failed", "error")
            ],
            "flaky": [t["nodeid"] for t in tests if t["outcome"] == "flaky"],
        }

"""MCP tools of workflows (same engine as `caelum run` / `caelum runs`)."""

from __future__ import annotations

import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.progress import event_reporter, progress_reporter
from caelum_dask.mcp_server.runs import RunManager


def _stored(run_id: str) -> dict[str, Any]:
    from caelum_dask.workflow.store import RunStore

    with RunStore() as store:
        return json.loads(json.dumps(store.run(run_id), default=str))


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    manager = RunManager(handle.client)

    @server.tool()
    @tool_errors
    def run_workflow(
        path: str,
        ctx: Context,
        params: dict[str, str] | None = None,
        resume: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Run the workflow defined in the Python file at `path` (like `caelum run`).

        The run id comes at once: in the first progress notification, and as the whole result
        when `wait` is false. With `wait`, progress notifications follow the run and the result
        is the run's summary (`caelum run --json`). The run belongs to the server: a client that
        disconnects does not stop it; `cancel_run` does. `resume` re-runs a run id, reusing what
        it completed.
        """
        active = manager.start(path, params, resume)
        report = progress_reporter(ctx)
        report(0, None, f"run {active.run_id} started")
        if not wait:
            return active.snapshot()
        forward = event_reporter(ctx)
        seen = active.event
        while not active.finished.wait(0.25):
            event = active.event
            if event is not seen and event is not None and event.message is None:
                seen = event
                forward(event)
        if active.result is None:
            return active.snapshot()
        counts = active.result
        done = counts["computed"] + counts["cached"] + counts["failed"] + counts["skipped"]
        report(done, done, f"run {active.run_id} {counts['state']}")
        return active.result

    @server.tool()
    @tool_errors
    def workflow_status(run_id: str) -> dict[str, Any]:
        """A run's state, counts, tasks (state, machine, attempts) and errors, from the run store.

        `state` is running, completed, failed, cancelled (on request) or interrupted (its client
        stopped, died or lost the scheduler; `reason` says which); a run whose client died is
        found out when read. An interrupted run is finished by `run_workflow(resume=run_id)`.
        """
        active = manager.get(run_id)
        stored = _stored(run_id)
        if active is not None and not active.finished.is_set():
            stored["state"] = "running"
            stored["live_counts"] = active.counts
        return stored

    @server.tool()
    @tool_errors
    def cancel_run(run_id: str) -> dict[str, Any]:
        """Cancel a run this server started: its tasks are cancelled on the cluster, the run is recorded as cancelled."""
        active = manager.cancel(run_id)
        if active is None:
            stored = _stored(run_id)
            return {"run_id": stored["id"], "state": stored["state"],
                    "note": "not started by this server; only its own runs can be cancelled here"}
        return active.snapshot()

    @server.resource("caelum://runs", mime_type="application/json")
    def recent_runs() -> str:
        """The 20 most recent workflow runs (as `caelum runs list --json`)."""
        from caelum_dask.workflow.store import RunStore

        with RunStore() as store:
            return json.dumps(store.runs(20), default=str)

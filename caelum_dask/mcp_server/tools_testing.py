"""MCP tool of test sharding (same engine as `caelum test`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer

from caelum_dask.mcp_server.handle import ClusterHandle
from caelum_dask.mcp_server.progress import progress_reporter
from caelum_dask.progress import ProgressEvent

if TYPE_CHECKING:
    from caelum_dask.testing.engine import TestProgress

MAX_FAILURE_TEXT = 4000
#: the least time between two test-progress notifications (the last one is always sent)
NOTIFY_INTERVAL_SECONDS = 0.5


def progress_message(progress: TestProgress) -> str:
    """``12/40 tests, 1 failed, ETA 3s``: what the CLI's bar shows, as one line."""
    text = f"{progress.done}/{progress.total} tests, {progress.failed} failed"
    return text if progress.eta is None else f"{text}, ETA {progress.eta:.0f}s"


class ProgressNotifier:
    """Turns a run's status lines and TestProgress into MCP progress notifications.

    ``progress`` is the number of tests done and ``total`` the number collected, so a client
    shows the same done/total as ``caelum test``'s bar. Status lines ("snapshot …") reuse the
    current counts, so the progress value never goes down (MCP asks for it to increase).
    Unchanged counts are not resent and changes are sent at most every
    :data:`NOTIFY_INTERVAL_SECONDS`, except the one that completes the run.
    """

    def __init__(self, report: Callable[[float, float | None, str | None], None],
                 interval: float = NOTIFY_INTERVAL_SECONDS) -> None:
        self.report = report
        self.interval = interval
        self.done = 0
        self.total: int | None = None
        self._sent: tuple[int, int, int] | None = None
        self._sent_at = float("-inf")
        self._lock = threading.Lock()

    def status(self, message: str) -> None:
        """A status line ("snapshot …", "collected …") at the current counts."""
        with self._lock:
            self.report(self.done, self.total, message)

    def event(self, event: ProgressEvent) -> None:
        """The run's ProgressEvent: status lines are sent as they come; the counts go through
        :meth:`progress` (throttled), which the listener side already hears."""
        if event.message is not None:
            self.status(event.message)

    # -- the run's listener ----------------------------------------------------------
    def collected(self, platform: str, collection: dict[str, Any]) -> None:
        pass  # the status line says it; the counts come with the next progress

    def result(self, platform: str, result: dict[str, Any], final: bool) -> None:
        pass

    def progress(self, progress: TestProgress) -> None:
        if not progress.total:
            return  # nothing collected yet: no done/total to report
        key = (progress.done, progress.total, progress.failed)
        now = time.monotonic()
        complete = progress.done >= progress.total
        with self._lock:
            if key == self._sent or (not complete and now - self._sent_at < self.interval):
                return
            self._sent, self._sent_at = key, now
            self.done, self.total = progress.done, progress.total
            self.report(progress.done, progress.total, progress_message(progress))


def register(server: MCPServer, handle: ClusterHandle) -> None:
    from caelum_dask.mcp_server.server import tool_errors

    @server.tool()
    @tool_errors
    def run_tests(
        path: str,
        ctx: Context,
        pytest_args: list[str] | None = None,
        shards: str | None = None,
        dist: str | None = None,
        retry_failed: int | None = None,
    ) -> dict[str, Any]:
        """Run the pytest suite at `path` over the cluster (like `caelum test`).

        Unset options take `caelum test`'s defaults (caelum.testing.*: sessions, dist,
        retry-failed).

        Returns the counts, pytest's exit code, the failures with their tracebacks, flaky tests
        and the merged JUnit file's location.
        """
        from caelum_dask.testing.runner import TestOptions
        from caelum_dask.testing.runner import run_tests as run

        notifier = ProgressNotifier(progress_reporter(ctx))
        options = TestOptions.from_config(shards=shards, dist=dist, retry_failed=retry_failed,
                                          pytest_args=list(pytest_args or []))
        result = run(path, options, client=handle.client(), progress=notifier.event, listener=notifier)
        return {
            "run_id": result.run_id,
            "exit_code": result.exit_code,
            "counts": result.counts,
            "duration": result.duration,
            "junit": result.junit,
            "failures": [
                {"nodeid": t["nodeid"], "outcome": t["outcome"], "message": t.get("message", ""),
                 "traceback": str(t.get("longrepr", ""))[:MAX_FAILURE_TEXT]}
                for t in result.tests if t["outcome"] in ("failed", "error")
            ],
            "flaky": result.nodeids("flaky"),
        }

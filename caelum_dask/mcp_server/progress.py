"""Report progress to the MCP client from a sync tool running in the SDK's worker thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio.from_thread

from caelum_dask.progress import ProgressCallback, ProgressEvent


def progress_reporter(ctx: Any) -> Callable[[float, float | None, str | None], None]:
    """A plain callable that sends ``notifications/progress`` for the current request.

    Sync tools run in a thread started by anyio, so the async ``ctx.report_progress`` is
    called back on the server's event loop; a client that went away is ignored (the cluster
    job goes on).
    """

    def report(done: float, total: float | None = None, message: str | None = None) -> None:
        try:
            anyio.from_thread.run(ctx.report_progress, done, total, message)
        except Exception:  # client gone, or no progress token: the work continues
            pass

    return report


def event_reporter(ctx: Any) -> ProgressCallback:
    """An engine's ``progress=`` callback that forwards each :class:`ProgressEvent` to MCP.

    Counts become the notification's progress/total; the event's one-line text (status line or
    "12/40 tests, 1 failed, ETA 3s") its message, so an MCP client sees what the CLI's bar shows.
    """
    report = progress_reporter(ctx)

    def forward(event: ProgressEvent) -> None:
        report(float(event.done), None if event.total is None else float(event.total), event.text())

    return forward

"""Workflow runs started over MCP: they live in the server, not in the request.

A run is driven by a background thread, so a client that disconnects (or a request that is
cancelled) does not stop the cluster job; only ``cancel_run`` does. The thread keeps the run's
latest :class:`~caelum_dask.progress.ProgressEvent` in its record, which the requests that wait
on it forward as MCP progress notifications (from their own thread: MCP's ``report_progress``
is reachable only from the request's).

States are those of the run store: a run that stopped without finishing is ``cancelled``
(by ``cancel_run``) or ``interrupted`` (it lost its scheduler, or the server stopped); a run
whose server died reads ``interrupted`` in the store once its owner — this server's process —
is found gone, and ``run_workflow(resume=RUN_ID)`` finishes it.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from caelum_dask.errors import CaelumError, InvalidInput
from caelum_dask.progress import ProgressEvent


@dataclass
class ActiveRun:
    """One run started by this server."""

    path: str
    cancel: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    run_id: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    event: ProgressEvent | None = None  # the latest one; requests that wait forward it
    result: dict[str, Any] | None = None
    error: str | None = None
    unfinished: str | None = None  # the store's state of a run that stopped: cancelled | interrupted

    def on_progress(self, event: ProgressEvent) -> None:
        """The run's ``progress=`` callback: keep the event and the published ``counts`` shape."""
        self.run_id = event.run_id or self.run_id
        self.counts = {"run_id": self.run_id, **event.detail.get("counts", {})}
        self.event = event
        self.started.set()

    def state(self) -> str:
        """As the run store records it: ``running`` until the run's thread ends."""
        if not self.finished.is_set():
            return "running"
        if self.result:
            return str(self.result["state"])
        return self.unfinished or ("cancelled" if self.cancel.is_set() else "failed")

    def stopped(self, exc: BaseException) -> None:
        """Keep why the run's thread ended without a result, in the store's words."""
        from caelum_dask.workflow.runner import RunCancelled

        self.error = str(exc) if isinstance(exc, CaelumError) else f"{type(exc).__name__}: {exc}"
        if self.run_id is not None:  # it started: the runner recorded it as one of these
            self.unfinished = "cancelled" if isinstance(exc, RunCancelled) else "interrupted"

    def snapshot(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.state(), "counts": self.counts, "error": self.error}


def _jsonable(value: Any) -> Any:
    """Task outputs can be anything; MCP results must be JSON."""
    return json.loads(json.dumps(value, default=str))


class RunManager:
    """The runs this server started, by run id."""

    def __init__(self, client_factory: Any) -> None:
        self._client_factory = client_factory
        self._runs: dict[str, ActiveRun] = {}
        self._lock = threading.Lock()

    def start(self, path: str, params: dict[str, Any] | None, resume: str | None) -> ActiveRun:
        """Start a run in the background; returns once it has a run id (or failed to start)."""
        from caelum_dask.workflow import run_file

        active = ActiveRun(path=path)
        client = self._client_factory()

        def drive() -> None:
            try:
                result = run_file(path, client=client, params=params, resume=resume,
                                  progress=active.on_progress, cancel=active.cancel)
                active.run_id = result.run_id
                active.result = _jsonable(result.to_dict(results=True))
            except Exception as exc:  # noqa: BLE001 - reported to the client, never crashes the server
                active.stopped(exc)
            finally:
                active.finished.set()
                active.started.set()

        threading.Thread(target=drive, name=f"caelum-mcp-run-{path}", daemon=True).start()
        active.started.wait()
        if active.run_id is None:
            raise InvalidInput(active.error or f"the workflow in {path} did not start")
        with self._lock:
            self._runs[active.run_id] = active
        return active

    def get(self, run_id: str) -> ActiveRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def cancel(self, run_id: str, wait: float = 60) -> ActiveRun | None:
        active = self.get(run_id)
        if active is not None:
            active.cancel.set()
            deadline = time.monotonic() + wait
            while not active.finished.wait(0.2) and time.monotonic() < deadline:
                pass
        return active

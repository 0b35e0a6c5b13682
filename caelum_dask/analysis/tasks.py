"""What runs inside a Dask task: analyse one batch of files whose bytes came with the task."""

from __future__ import annotations

import socket
from typing import Any

from caelum_dask import events
from caelum_dask.analysis.loader import AnalyzerSpec
from caelum_dask.analysis.pipeline import analyze_file

FileItem = tuple[str, str, bool, bytes]  # (relative path, module, is package, content)


def analyze_batch(run_id: str, items: list[FileItem], spec: AnalyzerSpec,
                  time_limit: float | None) -> list[tuple[str, dict[str, Any]]]:
    """Rows for every file of the batch; a failing file is an error row, never a failed task."""
    classes = spec.classes()
    results = [
        (rel, analyze_file(rel, module, is_package, data, classes, spec.options, time_limit))
        for rel, module, is_package, data in items
    ]
    _report(run_id, len(items))
    return results


def _report(run_id: str, n_files: int) -> None:
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:
        return
    from caelum_dask.machine import machine_id

    events.emit(events.ANALYSIS, "batch-finished", sink=worker, run_id=run_id, files=n_files,
                worker=worker.address, machine=machine_id(socket.gethostname(), worker.ip))

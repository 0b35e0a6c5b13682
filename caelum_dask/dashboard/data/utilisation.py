"""Utilisation page data: CPU, memory, GPU use per machine over time.

Samples come from what the scheduler already has: each worker's heartbeat metrics
(``WorkerState.metrics["cpu"]``, process CPU percent, and ``["memory"]``, resident bytes) summed
over the machine's workers, and the registry's NVML readings of the machine's GPUs.
The history is wide (one column per machine and metric) so a page can ``stream`` just the new
rows every tick instead of resending every series.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

METRICS: tuple[str, ...] = ("cpu", "memory", "gpu_util", "gpu_memory")
METRIC_LABELS: dict[str, str] = {
    "cpu": "CPU % (worker processes, of the machine's cores)",
    "memory": "Memory used by workers (GiB)",
    "gpu_util": "GPU utilisation % (mean of the machine's GPUs)",
    "gpu_memory": "GPU memory used (GiB)",
}
_GIB = 1024**3
NAN = float("nan")


def machine_sample(node: dict[str, Any], worker_metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """One reading of one machine: cpu %, memory GiB, GPU utilisation % and GPU memory GiB.

    ``worker_metrics`` maps worker address to that worker's heartbeat metrics; workers
    missing from it (they left) are skipped. CPU is the workers' process CPU summed and
    divided by the machine's cores, so 100 means every core busy.
    """
    cpu = 0.0
    memory = 0.0
    seen = False
    for worker in node.get("workers") or []:
        metrics = worker_metrics.get(worker.get("address"))
        if not metrics:
            continue
        seen = True
        cpu += float(metrics.get("cpu") or 0.0)
        memory += float(metrics.get("memory") or 0.0)
    cores = (node.get("resources") or {}).get("cpu_cores") or 1
    gpus = (node.get("resources") or {}).get("gpus") or []
    utils = [g["utilization"] for g in gpus if g.get("utilization") is not None]
    used = [
        g["memory_gb"] - g["memory_free_gb"]
        for g in gpus
        if g.get("memory_gb") is not None and g.get("memory_free_gb") is not None
    ]
    return {
        "cpu": round(cpu / cores, 2) if seen else NAN,
        "memory": round(memory / _GIB, 3) if seen else NAN,
        "gpu_util": round(sum(utils) / len(utils), 1) if utils else NAN,
        "gpu_memory": round(sum(used), 3) if used else NAN,
    }


def column(metric: str, index: int) -> str:
    """Name of the history column of ``metric`` for the machine with stable index ``index``."""
    return f"{metric}_{index}"


@dataclass
class UtilisationHistory:
    """A bounded, wide time series: ``time`` plus one column per (metric, machine).

    Machines keep their column index for the life of the history, so a machine that leaves
    simply gets NaN (a gap in its line) and one that comes back continues its own line.
    """

    maxlen: int = 600
    machines: dict[str, int] = field(default_factory=dict)  # machine id -> column index
    hostnames: dict[str, str] = field(default_factory=dict)
    rows: deque[dict[str, float]] = field(default_factory=deque)
    seq: int = 0  # number of rows ever added
    layout_version: int = 0  # bumped when a machine gets a new column

    def add(self, now: float, samples: dict[str, dict[str, float]], hostnames: dict[str, str] | None = None) -> None:
        """Append one row: ``samples`` maps machine id to :func:`machine_sample` output."""
        for mid in samples:
            if mid not in self.machines:
                self.machines[mid] = len(self.machines)
                self.layout_version += 1
        self.hostnames.update(hostnames or {})
        row: dict[str, float] = {"time": now * 1000.0}  # Bokeh datetime axes want ms
        for mid, index in self.machines.items():
            sample = samples.get(mid) or {}
            for metric in METRICS:
                row[column(metric, index)] = sample.get(metric, NAN)
        self.rows.append(row)
        while len(self.rows) > self.maxlen:
            self.rows.popleft()
        self.seq += 1

    def columns(self) -> list[str]:
        return ["time"] + [column(m, i) for i in self.machines.values() for m in METRICS]

    def source(self) -> dict[str, list[float]]:
        """The whole history as ColumnDataSource data (machines added later are NaN before)."""
        names = self.columns()
        return {name: [row.get(name, NAN) for row in self.rows] for name in names}

    def rows_since(self, seq: int) -> dict[str, list[float]]:
        """Rows added after the history had ``seq`` rows, for ``ColumnDataSource.stream``."""
        new = min(self.seq - seq, len(self.rows))
        if new <= 0:
            return {}
        tail = list(self.rows)[-new:]
        return {name: [row.get(name, NAN) for row in tail] for name in self.columns()}

    def latest_source(self) -> dict[str, list[Any]]:
        """The latest reading of every machine, for a table."""
        out: dict[str, list[Any]] = {"machine": [], "hostname": []}
        for metric in METRICS:
            out[metric] = []
        last = self.rows[-1] if self.rows else {}
        for mid, index in self.machines.items():
            out["machine"].append(mid)
            out["hostname"].append(self.hostnames.get(mid, mid))
            for metric in METRICS:
                value = last.get(column(metric, index), NAN)
                out[metric].append(None if isinstance(value, float) and math.isnan(value) else value)
        return out

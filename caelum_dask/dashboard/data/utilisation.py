"""Utilisation page data: CPU, memory, GPU use per machine over time.

Samples come from what the scheduler already has: each worker's heartbeat metrics
(``WorkerState.metrics["cpu"]``, process CPU percent, and ``["memory"]``, resident bytes) summed
over the machine's workers, and the registry's NVML readings of the machine's GPUs.
A page draws the history in long form (one row per sample and machine, every metric a
column) with one glyph per metric, and ``stream``s just the new rows every tick: 50 machines
cost 4 glyphs and 50 new rows a second, not 200 line renderers and a resend of every series.
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
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)
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


@dataclass
class UtilisationHistory:
    """A bounded time series of machine samples, read in long form by the page.

    Each row is ``(time in ms, {machine id: (cpu, memory, gpu_util, gpu_memory)})`` with only
    the machines present at that time, so a machine that leaves simply stops getting points
    and one that comes back keeps its colour.
    """

    maxlen: int = 600
    machines: dict[str, int] = field(default_factory=dict)  # machine id -> colour index
    hostnames: dict[str, str] = field(default_factory=dict)
    rows: deque[tuple[float, dict[str, tuple[float, ...]]]] = field(default_factory=deque)
    seq: int = 0  # number of rows ever added

    def add(self, now: float, samples: dict[str, dict[str, float]], hostnames: dict[str, str] | None = None) -> None:
        """Append one row: ``samples`` maps machine id to :func:`machine_sample` output."""
        for mid in samples:
            self.machines.setdefault(mid, len(self.machines))
        self.hostnames.update(hostnames or {})
        values = {mid: tuple(float(sample.get(m, NAN)) for m in METRICS) for mid, sample in samples.items()}
        self.rows.append((now * 1000.0, values))  # Bokeh datetime axes want ms
        while len(self.rows) > self.maxlen:
            self.rows.popleft()
        self.seq += 1

    def _long(self, rows: list[tuple[float, dict[str, tuple[float, ...]]]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"time": [], "machine": [], "hostname": [], "colour": []}
        metric_columns = [out.setdefault(metric, []) for metric in METRICS]
        for when, values in rows:
            for mid, sample in values.items():
                out["time"].append(when)
                out["machine"].append(mid)
                out["hostname"].append(self.hostnames.get(mid, mid))
                out["colour"].append(PALETTE[self.machines[mid] % len(PALETTE)])
                for target, value in zip(metric_columns, sample):
                    target.append(value)
        return out

    def long_source(self) -> dict[str, list[Any]]:
        """The whole history, one row per (sample, machine present then)."""
        return self._long(list(self.rows))

    def long_rows_since(self, seq: int) -> dict[str, list[Any]]:
        """The long-form rows of the samples added after the history had ``seq`` rows."""
        new = min(self.seq - seq, len(self.rows))
        if new <= 0:
            return {}
        return self._long(list(self.rows)[-new:])

    def latest_source(self) -> dict[str, list[Any]]:
        """The latest reading of every machine seen (None where it has none now), for a table."""
        out: dict[str, list[Any]] = {"machine": [], "hostname": []}
        for metric in METRICS:
            out[metric] = []
        last = self.rows[-1][1] if self.rows else {}
        for mid in self.machines:
            out["machine"].append(mid)
            out["hostname"].append(self.hostnames.get(mid, mid))
            sample = last.get(mid)
            for i, metric in enumerate(METRICS):
                value = sample[i] if sample is not None else NAN
                out[metric].append(None if math.isnan(value) else value)
        return out

"""Machines page data: one row per MachineNode, one row per GPU."""

from __future__ import annotations

import time
from typing import Any

from caelum_dask.resources import GPU

STATUS_COLOURS: dict[str, str] = {"online": "#2ca02c", "busy": "#ff7f0e", "offline": "#d62728",
                                  "owner-active": "#9467bd"}  # a desktop owner is using it
UNKNOWN_COLOUR = "#7f7f7f"


def heartbeat_text(age: float | None) -> str:
    """``"1.2s ago"``, ``"3m 4s ago"`` or ``"never"``."""
    if age is None:
        return "never"
    if age < 60:
        return f"{age:.1f}s ago"
    minutes, seconds = divmod(int(age), 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s ago"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m ago"


def _gib(value: Any) -> str:
    return "" if value is None else f"{float(value):g} GiB"


def advertised_resources(node: dict[str, Any]) -> dict[str, float]:
    """The Dask resources all of a machine's workers advertise, summed by name."""
    total: dict[str, float] = {}
    for worker in node.get("workers") or []:
        for name, amount in (worker.get("resources") or {}).items():
            total[name] = total.get(name, 0) + amount
    return total


def gpu_text(node: dict[str, Any]) -> str:
    """The GPUs of a machine in one line: NVML descriptions, else the advertised GPU resource."""
    gpus = (node.get("resources") or {}).get("gpus") or []
    if gpus:
        parts = []
        for gpu in gpus:
            util = f", {gpu['utilization']:.0f}% busy" if gpu.get("utilization") is not None else ""
            parts.append(f"{gpu.get('index')}: {gpu.get('name')} ({_gib(gpu.get('memory_gb'))}{util})")
        return "; ".join(parts)
    amount = advertised_resources(node).get(GPU)
    if amount:
        return f"GPU={amount:g} (Dask resource, no NVML description)"
    return "none"


def machines_source(nodes: list[dict[str, Any]], now: float | None = None) -> dict[str, list[Any]]:
    """Every MachineNode field as table columns, with a status colour and heartbeat age."""
    now = time.time() if now is None else now
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "id", "hostname", "ip_address", "platform", "os", "python", "caelum_version",
            "status", "status_colour", "cpu_cores", "memory_gb", "disk_space_gb", "n_gpus",
            "gpus", "resources", "services", "n_workers", "workers", "heartbeat_age",
            "heartbeat", "first_seen",
        )
    }
    order = {"busy": 0, "online": 1, "owner-active": 2, "offline": 3}
    for node in sorted(nodes, key=lambda n: (order.get(n.get("status", ""), 3), n.get("hostname", ""))):
        res = node.get("resources") or {}
        last = node.get("last_heartbeat")
        age = max(0.0, now - last) if last else None
        workers = node.get("workers") or []
        advertised = advertised_resources(node)
        columns["id"].append(node.get("id", ""))
        columns["hostname"].append(node.get("hostname", ""))
        columns["ip_address"].append(node.get("ip_address", ""))
        columns["platform"].append(node.get("platform", ""))
        columns["os"].append(node.get("os", ""))
        columns["python"].append(node.get("python", ""))
        columns["caelum_version"].append(node.get("caelum_version") or "")
        columns["status"].append(node.get("status", ""))
        columns["status_colour"].append(STATUS_COLOURS.get(node.get("status", ""), UNKNOWN_COLOUR))
        columns["cpu_cores"].append(res.get("cpu_cores"))
        columns["memory_gb"].append(res.get("memory_gb"))
        columns["disk_space_gb"].append(res.get("disk_space_gb"))
        columns["n_gpus"].append(len(res.get("gpus") or []) or int(advertised.get(GPU, 0)))
        columns["gpus"].append(gpu_text(node))
        columns["resources"].append(" ".join(f"{k}={v:g}" for k, v in sorted(advertised.items())))
        columns["services"].append(
            ", ".join(f"{k}:{v}" for k, v in sorted((node.get("services") or {}).items()))
        )
        columns["n_workers"].append(len(workers))
        columns["workers"].append(", ".join(str(w.get("name") or w.get("address")) for w in workers))
        columns["heartbeat_age"].append(age)
        columns["heartbeat"].append(heartbeat_text(age))
        first = node.get("first_seen")
        columns["first_seen"].append(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(first)) if first else ""
        )
    return columns


def gpus_source(nodes: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """One row per GPU: NVML readings where there are some, else the advertised GPU resource."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "machine", "hostname", "index", "name", "memory_gb", "memory_used_gb",
            "utilization", "uuid", "status", "status_colour",
        )
    }

    def add(node: dict[str, Any], **row: Any) -> None:
        columns["machine"].append(node.get("id", ""))
        columns["hostname"].append(node.get("hostname", ""))
        columns["status"].append(node.get("status", ""))
        columns["status_colour"].append(STATUS_COLOURS.get(node.get("status", ""), UNKNOWN_COLOUR))
        for key in ("index", "name", "memory_gb", "memory_used_gb", "utilization", "uuid"):
            columns[key].append(row.get(key))

    for node in sorted(nodes, key=lambda n: n.get("hostname", "")):
        gpus = (node.get("resources") or {}).get("gpus") or []
        for gpu in gpus:
            total, free = gpu.get("memory_gb"), gpu.get("memory_free_gb")
            used = round(total - free, 2) if total is not None and free is not None else None
            add(node, index=gpu.get("index"), name=gpu.get("name"), memory_gb=total,
                memory_used_gb=used, utilization=gpu.get("utilization"), uuid=gpu.get("uuid"))
        if not gpus:
            for worker in node.get("workers") or []:
                amount = (worker.get("resources") or {}).get(GPU)
                if amount:
                    add(node, index=None, name=f"GPU={amount:g} on worker {worker.get('name')} (no NVML)",
                        memory_gb=(worker.get("resources") or {}).get("GPU_MEMORY_GB"),
                        memory_used_gb=None, utilization=None, uuid="")
    return columns


def summary_text(nodes: list[dict[str, Any]]) -> str:
    """``"3 machines: 1 busy, 1 online, 1 offline; 2 GPUs"``."""
    if not nodes:
        return "no machines yet: start a worker with `caelum worker tcp://SCHEDULER:8786`"
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node.get("status", "unknown")] = counts.get(node.get("status", "unknown"), 0) + 1
    gpus = sum(len((n.get("resources") or {}).get("gpus") or []) or
               int(advertised_resources(n).get(GPU, 0)) for n in nodes)
    states = ", ".join(f"{counts[s]} {s}" for s in ("busy", "online", "offline") if s in counts)
    noun = "machine" if len(nodes) == 1 else "machines"
    return f"{len(nodes)} {noun}: {states}; {gpus} GPU{'s' if gpus != 1 else ''}"


#: scaling events shown on the machines page (the newest first)
SCALING_ROWS = 20


def scaling_source(messages: list[dict[str, Any]], rows: int = SCALING_ROWS) -> dict[str, list[Any]]:
    """The adaptive controller's recent decisions (``caelum.scaling`` events), newest first.

    One row per event: when, what (scale-up, started, scale-down, retired, …), the workers and
    hosts it names, and the rest of the message as ``key=value`` text, so a new field shows up
    without a change here.
    """
    columns: dict[str, list[Any]] = {name: [] for name in ("time", "event", "workers", "hosts", "detail")}
    for message in list(messages)[-rows:][::-1]:
        workers = message.get("workers") or ([message["worker"]] if message.get("worker") else [])
        hosts = message.get("hosts") or ([message["host"]] if message.get("host") else [])
        rest = {k: v for k, v in message.items() if k not in ("time", "event", "workers", "worker", "hosts", "host")}
        columns["time"].append(str(message.get("time", ""))[11:23])
        columns["event"].append(str(message.get("event", "")))
        columns["workers"].append(", ".join(map(str, workers)))
        columns["hosts"].append(", ".join(sorted(set(map(str, hosts)))))
        columns["detail"].append(" ".join(f"{k}={v}" for k, v in sorted(rest.items())))
    return columns

"""What the pool knows about one Ollama server: where it is, what it has, what it has loaded.

A :class:`Backend` is built from a worker's probe report (see :mod:`.discovery`); the router
only reads it. Model names are compared in Ollama's normal form (``llama3.2`` means
``llama3.2:latest``) so that a request for either finds the same installed model.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

GIB = 1024**3


def normalize_model(model: str) -> str:
    """Ollama's naming rule: a model name without a tag is the ``:latest`` tag."""
    name = str(model).strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class Backend:
    """One Ollama server as last reported by the machine it runs on."""

    url: str
    machine: str
    hostname: str = ""
    local_url: str = ""
    up: bool = False
    version: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    error: str | None = None
    checked_at: float = field(default_factory=time.time)

    def has(self, model: str) -> bool:
        return normalize_model(model) in self.models

    def is_loaded(self, model: str) -> bool:
        return normalize_model(model) in self.loaded

    @property
    def gpu_free_gb(self) -> float | None:
        """Free memory summed over the machine's GPUs (NVML), None without NVML readings."""
        free = [g.get("memory_free_gb") for g in self.gpus if g.get("memory_free_gb") is not None]
        return round(sum(free), 2) if free else None

    @property
    def gpu_utilization(self) -> float | None:
        util = [g.get("utilization") for g in self.gpus if g.get("utilization") is not None]
        return round(sum(util) / len(util), 1) if util else None

    @property
    def vram_used_gb(self) -> float:
        return round(sum(int(m.get("size_vram") or 0) for m in self.loaded.values()) / GIB, 2)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = sorted(self.models)
        data["loaded"] = [
            {"model": name, "size_vram_gb": round(int(info.get("size_vram") or 0) / GIB, 2),
             "expires_at": info.get("expires_at")}
            for name, info in self.loaded.items()
        ]
        data["gpu_free_gb"] = self.gpu_free_gb
        data["gpu_utilization"] = self.gpu_utilization
        return data

    @classmethod
    def from_report(cls, report: dict[str, Any], *, machine: str, hostname: str,
                    reachable_host: str | None, workers: list[str], gpus: list[dict[str, Any]]) -> Backend:
        """A backend from one entry of a worker's probe report (see ``discovery.probe``)."""
        local = report["url"]
        return cls(
            url=reachable_url(local, reachable_host),
            local_url=local,
            machine=machine,
            hostname=hostname,
            up=bool(report.get("up")),
            version=report.get("version"),
            models={normalize_model(m.get("model") or m.get("name")): m for m in report.get("models") or []},
            loaded={normalize_model(m.get("model") or m.get("name")): m for m in report.get("loaded") or []},
            gpus=list(gpus),
            workers=list(workers),
            error=report.get("error"),
            checked_at=float(report.get("checked_at") or time.time()),
        )


_LOOPBACK = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]", "::", "[::]"}


def reachable_url(local_url: str, host: str | None) -> str:
    """The URL other machines use: a loopback/any address is replaced by the machine's IP.

    Ollama listens on 127.0.0.1 by default; a GPU box meant to serve the pool runs it with
    ``OLLAMA_HOST=0.0.0.0`` and is reached at the address its Dask worker registered with.
    """
    from urllib.parse import urlsplit, urlunsplit

    if not host:
        return local_url
    parts = urlsplit(local_url)
    if parts.hostname not in _LOOPBACK:
        return local_url
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

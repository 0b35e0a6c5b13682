"""ResourceRequirements: what a task needs, turned into Dask submit arguments.

Consumable amounts (cores, memory, GPUs, GPU memory, disk) become Dask ``resources=`` that the
workers advertise; placement constraints (platform, a named machine) become ``workers=`` with
``allow_other_workers=False``. Dask would let a task that no worker can run wait forever, so
requirements are checked against the registry first: one that no machine can ever meet is an
immediate :class:`UnsatisfiableRequirement` naming the requirement and what the machines offer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from caelum_dask import resources as R
from caelum_dask.errors import UnsatisfiableRequirement


@dataclass(frozen=True)
class ResourceRequirements:
    """The seed plan's requirement fields plus placement constraints."""

    cpu_cores: float | None = None
    memory_gb: float | None = None
    gpu_required: bool = False
    gpu_memory_gb: float | None = None
    disk_space_gb: float | None = None
    platform: str | None = None
    machine: str | None = None  # a machine id, hostname or IP address
    gpus: int | None = None  # how many GPUs; gpu_required alone means one

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}

    @classmethod
    def from_value(cls, value: "ResourceRequirements | dict[str, Any] | None") -> "ResourceRequirements":
        """Accept a ResourceRequirements, a dict of its fields, or None (no requirement)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise UnsatisfiableRequirement(
                f"unknown resource requirement(s) {sorted(unknown)}; "
                f"known: {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**value)

    def dask_resources(self) -> dict[str, float]:
        """The consumable part, as Dask ``resources=``."""
        wanted: dict[str, float] = {}
        if self.cpu_cores:
            wanted[R.CPU] = float(self.cpu_cores)
        if self.memory_gb:
            wanted[R.MEMORY_GB] = float(self.memory_gb)
        if self.gpus or self.gpu_required or self.gpu_memory_gb:
            wanted[R.GPU] = float(self.gpus or 1)
        if self.gpu_memory_gb:
            wanted[R.GPU_MEMORY_GB] = float(self.gpu_memory_gb)
        if self.disk_space_gb:
            wanted[R.DISK_GB] = float(self.disk_space_gb)
        return wanted

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.to_dict().items()) or "nothing"

    # -- placement -------------------------------------------------------------------------------
    def eligible_workers(self, machines: list[dict[str, Any]]) -> list[str]:
        """Addresses of the online workers that can run a task with these requirements."""
        wanted = self.dask_resources()
        found = []
        for node in machines:
            if node["status"] == "offline" or not self._placement_matches(node):
                continue
            for worker in node["workers"]:
                offered = worker["resources"]
                if all(offered.get(name, 0) >= amount for name, amount in wanted.items()):
                    found.append(worker["address"])
        return found

    def _placement_matches(self, node: dict[str, Any]) -> bool:
        if self.platform and node["platform"] != self.platform.lower():
            return False
        if self.machine and self.machine not in (node["id"], node["hostname"], node["ip_address"]):
            return False
        return True

    def check(self, machines: list[dict[str, Any]]) -> list[str]:
        """The eligible workers; :class:`UnsatisfiableRequirement` when there are none."""
        eligible = self.eligible_workers(machines)
        if not eligible:
            raise UnsatisfiableRequirement(
                f"no machine can meet the requirement ({self.describe()}); "
                f"the cluster offers: {offer_summary(machines)}. "
                "Add a machine that has it, lower the requirement, or pass wait_for_machines= "
                "to wait for one to join"
            )
        return eligible

    def submit_kwargs(
        self, client: Any, *, wait_for_machines: float | None = None
    ) -> dict[str, Any]:
        """Keyword arguments for ``client.submit``/``compute`` that enforce these requirements.

        Fails at once when no machine can meet them; with ``wait_for_machines=seconds`` waits
        that long for one to join first.
        """
        from caelum_dask.cluster import machines as list_machines

        deadline = time.monotonic() + (wait_for_machines or 0)
        while True:
            snapshot = list_machines(client)
            try:
                eligible = self.check(snapshot)
                break
            except UnsatisfiableRequirement:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        return self.kwargs_for(eligible)

    def kwargs_for(self, eligible: list[str]) -> dict[str, Any]:
        """Submit arguments, given the eligible workers computed by :meth:`check`."""
        kwargs: dict[str, Any] = {}
        wanted = self.dask_resources()
        if wanted:
            kwargs["resources"] = wanted
        if self.platform or self.machine:
            kwargs["workers"] = eligible
            kwargs["allow_other_workers"] = False
        return kwargs


def offer_summary(machines: list[dict[str, Any]]) -> str:
    """What each online machine's workers offer, for error messages."""
    parts = []
    for node in machines:
        if node["status"] == "offline":
            continue
        offers = []
        for worker in node["workers"]:
            res = ", ".join(f"{k}={v:g}" for k, v in sorted(worker["resources"].items()))
            offers.append(f"[{res or 'no resources'}]")
        parts.append(f"{node['hostname']} ({node['platform']}): {' '.join(offers)}")
    return "; ".join(parts) or "no online machines"

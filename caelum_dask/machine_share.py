"""One machine, one budget: worker processes started separately share the machine.

A worker process detects its machine and advertises its share of it at start-up (see
:mod:`caelum_dask.worker`). Processes of one ``caelum worker --nworkers N`` command know they
are N and split correctly; processes started by separate commands (two ``caelum worker``, or
``caelum worker`` beside ``dask worker --preload caelum_dask.worker``) cannot know of each
other when they start, so each advertises the whole machine and resource-constrained tasks
oversubscribe it.

The registry on the scheduler does know: it groups workers by machine. It computes the split
(:func:`shares_for_machine`: the same even split and round-robin GPU deal as ``--nworkers``,
ordered by the machine-wide slot each process claimed) and every caelum worker follows it
(:class:`ShareFollower`, a periodic callback in the worker): it asks the registry for its share
and applies it with Dask's public ``Worker.set_resources``, which updates the worker's own
accounting and the scheduler's. Resources given explicitly (``--resources``) are never
touched. A change is applied only while the worker uses none of its resources, because Dask
resets the scheduler's count of used resources when totals change.

Known limit: ``CUDA_VISIBLE_DEVICES`` is set once when a worker starts; a re-split changes how
many GPUs a worker advertises, not which devices its process can see.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caelum_dask import compat
from caelum_dask.nvml import GPUInfo
from caelum_dask.resources import MachineResources, share_for_worker

logger = logging.getLogger(__name__)

#: the scheduler handler a worker asks for its share
HANDLER = "caelum_resource_share"
#: the key of the worker's startup description that lists its explicit resource names
EXPLICIT_KEY = "explicit_resources"


@dataclass(frozen=True)
class Member:
    """A caelum worker process of one machine, as the registry knows it."""

    address: str
    slot: int  # machine-wide, unique among the processes serving one scheduler
    slots: int  # how many processes its own command declared


def machine_from_dict(description: Mapping[str, Any]) -> MachineResources:
    """The :class:`MachineResources` a worker described at registration (``to_dict`` form)."""
    gpus = tuple(GPUInfo(**{k: g[k] for k in ("index", "name", "memory_gb", "uuid") if k in g})
                 for g in description.get("gpus") or [])
    return MachineResources(cpu_cores=int(description.get("cpu_cores") or 1),
                            memory_gb=float(description.get("memory_gb") or 0.0), gpus=gpus,
                            disk_space_gb=float(description.get("disk_space_gb") or 0.0))


def shares_for_machine(machine: MachineResources, members: Sequence[Member]) -> dict[str, dict[str, float]]:
    """What each process of ``members`` should advertise: the machine split among all of them.

    Processes are ranked by their machine-wide slot, so the split is stable while they run
    and the round-robin GPU deal matches ``--nworkers`` when one command started them all.
    """
    ranked = sorted(members, key=lambda m: (m.slot, m.address))
    return {m.address: share_for_worker(machine, rank, len(ranked)).resources
            for rank, m in enumerate(ranked)}


def target_resources(current: Mapping[str, float], share: Mapping[str, float],
                     explicit: Sequence[str]) -> dict[str, float]:
    """The worker's resources after applying ``share``, explicit names kept as they are."""
    return {**current, **{k: v for k, v in share.items() if k not in explicit}}


class ShareFollower:
    """A worker's periodic check that it advertises its current share of the machine."""

    def __init__(self, worker: Any, explicit: Sequence[str]) -> None:
        self.worker = worker
        self.explicit = tuple(explicit)

    async def check(self) -> None:
        worker = self.worker
        if worker.status.name != "running":
            return
        try:
            share = await getattr(worker.scheduler, HANDLER)(address=worker.contact_address)
        except Exception:  # scheduler without the registry, or a reconnect in progress
            return
        if not share:
            return
        current = compat.worker_resources(worker)
        wanted = target_resources(current, share, self.explicit)
        if wanted == current or not compat.worker_resources_idle(worker):
            return
        logger.info("caelum: this machine's workers were re-split; advertising %s", wanted)
        await worker.set_resources(**wanted)


__all__ = ["EXPLICIT_KEY", "HANDLER", "Member", "ShareFollower", "machine_from_dict", "shares_for_machine",
           "target_resources"]

"""Worker preload: ``dask worker ADDR --preload caelum_dask.worker``.

Runs inside every worker process before it registers with the scheduler, and uses Dask's own
extension points rather than a side channel:

* detected resources go into the worker's resource table (explicit ``--resources`` win), so
  they are part of the ``register-worker`` message like any typed ``--resources``;
* the machine description (MachineNode fields) is a ``startup_information`` entry, which Dask
  sends once at registration and the scheduler keeps in ``WorkerState.extra``;
* live GPU readings are a ``metrics`` entry, sent with every heartbeat.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dask.config
from dask.utils import parse_timedelta

from caelum_dask import compat, config, machine_share, resources, revocation, slots
from caelum_dask.machine import describe_local_machine
from caelum_dask.nvml import describe_gpus

logger = logging.getLogger(__name__)

STARTUP_KEY = "caelum"
METRICS_KEY = "caelum_gpus"
#: Dask's shipped value of ``distributed.worker.profile.interval`` (a user who changed it keeps theirs)
DASK_PROFILE_INTERVAL = "10ms"


def apply_worker_defaults() -> None:
    """caelum's defaults for Dask worker settings, applied where the user kept Dask's.

    Dask's statistical profiler samples every worker thread's stack every 10 ms; on the deep
    stacks of CPU-bound Python (AST visitors, pytest) that costs several percent of a core.
    ``caelum.worker.profile-interval`` (100 ms) keeps the dashboard's Profile page useful at a
    tenth of the cost. Runs when this preload is imported, which Dask does before the worker
    reads the setting.
    """
    current = str(dask.config.get("distributed.worker.profile.interval", default=DASK_PROFILE_INTERVAL))
    if parse_timedelta(current, default="ms") == parse_timedelta(DASK_PROFILE_INTERVAL):
        dask.config.set({"distributed.worker.profile.interval": config.get("worker.profile-interval")})


def dask_setup(worker: Any) -> None:
    """Preload entry point (Dask calls it with the Worker, before registration)."""
    revocation.install(worker)  # first: a plain `dask worker --preload caelum_dask.worker` refuses revoked peers too
    _start_llm_discovery(worker)
    if not config.get("resources.detect"):
        return
    machine = resources.detect(config.get("resources.disk-path") or worker.local_directory)
    claim = slots.claim_slot(worker.scheduler.address, slots.slot_count(worker.state.nthreads))
    worker._caelum_slot = claim  # held (with its lock) for the life of the worker
    share = resources.share_for_worker(machine, claim.share, claim.count)

    explicit = compat.worker_resources(worker)
    advertised = resources.merge_resources(share.resources, explicit)
    compat.advertise_resources(worker, {k: v for k, v in advertised.items() if k not in explicit})

    if share.gpu_indices and config.get("resources.set-cuda-visible-devices"):
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", ",".join(map(str, share.gpu_indices)))

    description = {
        **describe_local_machine(),
        "resources": machine.to_dict(),
        "slot": claim.index,
        "slots": claim.count,
        "gpu_indices": list(share.gpu_indices),
        machine_share.EXPLICIT_KEY: sorted(explicit),
    }
    worker.startup_information[STARTUP_KEY] = lambda _worker: description
    if machine.gpus:
        mine = set(share.gpu_indices)
        worker.metrics[METRICS_KEY] = lambda _worker: [
            gpu.to_dict() for gpu in describe_gpus() if gpu.index in mine
        ]
    logger.info(
        "caelum: slot %d/%d, advertising %s", claim.index, claim.count, compat.worker_resources(worker)
    )
    _follow_machine_share(worker, sorted(explicit))


def _follow_machine_share(worker: Any, explicit: list[str]) -> None:
    """Keep advertising this process's share when other processes of the machine come and go."""
    from tornado.ioloop import PeriodicCallback

    follower = machine_share.ShareFollower(worker, explicit)
    interval = parse_timedelta(config.get("registry.check-interval"))
    callback = PeriodicCallback(follower.check, interval * 1000)
    worker.periodic_callbacks["caelum-machine-share"] = callback  # started and stopped with the worker


def _start_llm_discovery(worker: Any) -> None:
    """Find this machine's Ollama server(s) from the start (see caelum_dask.llm.discovery)."""
    if not config.get("llm.discover-on-start"):
        return
    from caelum_dask.llm.discovery import LLMDiscovery

    worker.loop.add_callback(worker.plugin_add, plugin=LLMDiscovery(), name=LLMDiscovery.name)


def dask_teardown(worker: Any) -> None:
    claim = getattr(worker, "_caelum_slot", None)
    if claim is not None:
        claim.release()


apply_worker_defaults()

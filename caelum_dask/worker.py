"""Worker preload: ``dask worker ADDR --preload caelum_dask.worker``.

Runs inside every worker process before it registers with the scheduler, and uses Dask's own
extension points rather than a side channel:

* detected resources go into the worker's resource table (explicit ``--resources`` win), so
  they are part of the ``register-worker`` message like any typed ``--resources``;
* the machine description (MachineNode fields) is a ``startup_information`` entry, which Dask
  sends once at registration and the scheduler keeps in ``WorkerState.extra``;
* live GPU readings are a ``metrics`` entry, sent with every heartbeat;
* glibc's mmap threshold is set for the worker process (``caelum.worker.malloc-mmap-threshold``,
  see :func:`apply_malloc_mmap_threshold`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import dask.config
from dask.utils import parse_bytes, parse_timedelta

from caelum_dask import compat, config, machine_share, resources, revocation, slots
from caelum_dask.machine import describe_local_machine
from caelum_dask.nvml import describe_gpus

logger = logging.getLogger(__name__)

STARTUP_KEY = "caelum"
METRICS_KEY = "caelum_gpus"
#: Dask's shipped value of ``distributed.worker.profile.interval`` (a user who changed it keeps theirs)
DASK_PROFILE_INTERVAL = "10ms"
#: glibc's ``mallopt`` parameter number of the mmap threshold (malloc.h: ``M_MMAP_THRESHOLD``)
M_MMAP_THRESHOLD = -3
#: glibc's own ceiling for the threshold on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``); glibc before
#: 2.35 refuses more, later ones accept anything, so caelum holds every version to it
MMAP_THRESHOLD_MAX = 32 * 2**20
#: The variable glibc reads at process start for the same threshold (a user who set it keeps it)
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"
#: What :func:`apply_malloc_mmap_threshold` did in this process (read by :func:`allocator_setting`)
_allocator: dict[str, Any] = {"mmap_threshold": None, "reason": "not a caelum worker"}


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


def _mallopt(param: int, value: int) -> int | None:
    """glibc's ``mallopt`` (1 on success, 0 refused), or None where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # musl and others have no such name
            return None
    except (ValueError, OSError):
        return None
    import ctypes  # here: the scheduler and clients import this module too, and never call it

    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return int(libc.mallopt(param, value))


def apply_malloc_mmap_threshold() -> dict[str, Any]:
    """Set glibc's mmap threshold of this worker process to ``caelum.worker.malloc-mmap-threshold``.

    Why: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``), which also switches off glibc's dynamic mmap
    threshold, so every allocation over 128 KiB (any pandas/NumPy column of more than 16k
    values) is a fresh ``mmap`` whose pages fault in anew and go back on ``free``: the BI
    aggregation of 1M rows took 0.60 s of CPU under it against 0.36 s in a plain process
    (benchmarks/RESULTS.md "## bi"). Only ``mallopt`` can change it in a running process (glibc
    reads the variable once, at start); the trim threshold Dask chose is kept, so freed memory
    at the top of the heap still goes back to the OS. A worker whose environment sets
    ``MALLOC_MMAP_THRESHOLD_`` keeps it (the user's choice wins); null leaves glibc and Dask as
    they are; other C libraries are left alone; a value above glibc's 32 MiB ceiling is refused
    (with a warning), whatever the glibc version. Returns (and keeps, for
    :func:`allocator_setting`) what was done.
    """
    wanted = config.get("worker.malloc-mmap-threshold")
    size = None if wanted is None else parse_bytes(wanted) if isinstance(wanted, str) else int(wanted)
    done = None
    if size is None:
        reason = "caelum.worker.malloc-mmap-threshold is null"
    elif os.environ.get(MMAP_THRESHOLD_ENV):
        reason = f"{MMAP_THRESHOLD_ENV}={os.environ[MMAP_THRESHOLD_ENV]} in the environment"
    elif not 0 < size <= MMAP_THRESHOLD_MAX:
        done = 0
        reason = f"caelum.worker.malloc-mmap-threshold={wanted} is outside 1 B..32 MiB (glibc's bound)"
    else:
        done = _mallopt(M_MMAP_THRESHOLD, size)
        reason = {None: "not glibc", 1: "caelum.worker.malloc-mmap-threshold"}.get(
            done, f"glibc refused mallopt(M_MMAP_THRESHOLD, {size})")
    applied = size if done == 1 else None
    _allocator.clear()
    _allocator.update({"mmap_threshold": applied, "reason": reason})
    if applied is not None:
        logger.info("caelum: glibc mmap threshold %d bytes (caelum.worker.malloc-mmap-threshold)", applied)
    elif done == 0:
        logger.warning("caelum: malloc mmap threshold not set: %s", reason)
    else:
        logger.debug("caelum: malloc mmap threshold left as it is: %s", reason)
    return allocator_setting()


def allocator_setting() -> dict[str, Any]:
    """What this process's worker start did to glibc's allocator: ``{"mmap_threshold": bytes
    or None, "reason": why}``; small so tests and ``client.run(allocator_setting)`` can read it."""
    return dict(_allocator)


def dask_setup(worker: Any) -> None:
    """Preload entry point (Dask calls it with the Worker, before registration)."""
    revocation.install(worker)  # first: a plain `dask worker --preload caelum_dask.worker` refuses revoked peers too
    apply_malloc_mmap_threshold()  # here, not at import: the scheduler and clients import this module too
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

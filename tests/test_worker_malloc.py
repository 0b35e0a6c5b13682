"""caelum.worker.malloc-mmap-threshold: glibc's mmap threshold set in caelum workers at start."""

from __future__ import annotations

import ctypes
import os
import sys

import dask.config
import pytest

from caelum_dask import worker

GLIBC = sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else "")
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt/mallinfo2 are glibc's")

PROBE = 8 * 2**20  # between glibc's 128 KiB (Dask's nanny environment) and caelum's 16 MiB


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _probe_is_mmapped() -> bool:
    """Whether glibc serves an 8 MiB malloc in this process with a fresh mmap (its threshold is below)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblks
    block = libc.malloc(PROBE)
    try:
        return bool(libc.mallinfo2().hblks > before)
    finally:
        libc.free(block)


def _allocator(dask_worker) -> dict:
    return {"setting": worker.allocator_setting(), "mmapped": _probe_is_mmapped(),
            "env": os.environ.get(worker.MMAP_THRESHOLD_ENV)}


def test_null_applies_nothing() -> None:
    with dask.config.set({"caelum.worker.malloc-mmap-threshold": None}):
        got = worker.apply_malloc_mmap_threshold()
    assert got == {"mmap_threshold": None, "reason": "caelum.worker.malloc-mmap-threshold is null"}
    assert worker.allocator_setting() == got


def test_the_environment_variable_wins(monkeypatch) -> None:
    monkeypatch.setenv(worker.MMAP_THRESHOLD_ENV, "262144")
    with dask.config.set({"caelum.worker.malloc-mmap-threshold": "16MiB"}):
        got = worker.apply_malloc_mmap_threshold()
    assert got["mmap_threshold"] is None and "MALLOC_MMAP_THRESHOLD_=262144" in got["reason"]


def test_a_value_above_glibcs_bound_is_reported_not_applied() -> None:
    with dask.config.set({"caelum.worker.malloc-mmap-threshold": "64MiB"}):  # glibc >= 2.35 would take it
        got = worker.apply_malloc_mmap_threshold()
    assert got["mmap_threshold"] is None and "outside" in got["reason"]


@needs_glibc
@pytest.mark.slow
def test_workers_apply_the_threshold_unless_the_environment_sets_one_or_it_is_null(process_cluster) -> None:
    process_cluster.start_scheduler()
    process_cluster.start_worker("default", nanny=True)  # the nanny exports MALLOC_TRIM_THRESHOLD_, as in a real cluster
    process_cluster.env[worker.MMAP_THRESHOLD_ENV] = "131072"
    process_cluster.start_worker("users-env", nanny=True)
    del process_cluster.env[worker.MMAP_THRESHOLD_ENV]
    process_cluster.env["DASK_CAELUM__WORKER__MALLOC_MMAP_THRESHOLD"] = "None"
    process_cluster.start_worker("null", nanny=True)
    client = process_cluster.wait_for_workers(3)
    try:
        got = {info["name"]: client.run(_allocator, workers=[address])[address]
               for address, info in client.scheduler_info(n_workers=-1)["workers"].items()}
    finally:
        client.close()
    assert got["default"]["setting"] == {"mmap_threshold": 16 * 2**20, "reason": "caelum.worker.malloc-mmap-threshold"}
    assert not got["default"]["mmapped"]  # glibc itself now keeps an 8 MiB block in the heap
    assert got["users-env"]["env"] == "131072" and got["users-env"]["setting"]["mmap_threshold"] is None
    assert got["users-env"]["mmapped"]  # the user's 128 KiB holds
    assert got["null"]["setting"]["mmap_threshold"] is None and "null" in got["null"]["setting"]["reason"]
    assert got["null"]["mmapped"]  # Dask's nanny environment as it was: 128 KiB, fixed

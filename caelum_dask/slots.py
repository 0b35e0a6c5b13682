"""Which share of the machine a worker process gets.

``dask worker --nworkers 4`` starts four processes that know nothing of each other. Each
claims the lowest free *slot* by taking an exclusive ``flock`` on a per-scheduler lock file
in the temp folder; the kernel releases the lock when the process dies, so a restarted worker
reclaims the slot of the one it replaces. The number of slots comes from
``CAELUM_WORKER_SLOTS`` (set by ``caelum worker --nworkers`` and the embedded cluster) or,
for plain ``dask worker``, from how many processes of this thread count fill the machine.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import IO

SLOTS_ENV = "CAELUM_WORKER_SLOTS"


@dataclass
class SlotClaim:
    """A held slot; keep the object alive for as long as the worker runs."""

    index: int  # unique among the processes serving one scheduler on this machine
    count: int
    handle: IO[str] | None

    @property
    def share(self) -> int:
        """Which share of the machine this process takes (processes beyond ``count`` wrap)."""
        return self.index % self.count

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def slot_count(nthreads: int, cpu_count: int | None = None) -> int:
    """How many worker processes share this machine."""
    explicit = os.environ.get(SLOTS_ENV)
    if explicit:
        return max(1, int(explicit))
    cores = cpu_count or os.cpu_count() or 1
    return max(1, round(cores / max(1, nthreads)))


def _lock_dir(scheduler_address: str) -> pathlib.Path:
    digest = hashlib.sha1(scheduler_address.encode()).hexdigest()[:16]
    path = pathlib.Path(tempfile.gettempdir()) / "caelum-slots" / digest
    path.mkdir(parents=True, exist_ok=True)
    return path


def claim_slot(scheduler_address: str, count: int) -> SlotClaim:
    """Take the lowest free slot among the processes serving ``scheduler_address`` here.

    More processes than slots wrap around (slot ``i`` shares with ``i - count``); that only
    happens when the user starts more processes than they declared.
    """
    directory = _lock_dir(scheduler_address)
    index = 0
    while True:
        handle = open(directory / f"slot-{index}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            index += 1
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        return SlotClaim(index=index, count=count, handle=handle)

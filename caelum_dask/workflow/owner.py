"""Who owns a workflow run, and whether that owner is still there.

A run is driven by one client process (``caelum run``, the MCP server, a Python program): it
alone writes the run's rows, and only it can finish the run. If that process dies without
recording how the run ended (``kill -9``, a crash, a machine that went down), nothing else
would ever say so and the run would read ``running`` forever. So the run store keeps the
owner — host name, pid, the process's start time (a pid can be reused by a later process;
its start time tells them apart), the scheduler address and the Dask client id — and
whoever reads the runs asks :class:`OwnerCheck` whether the owner of a ``running`` run is
known to be gone:

* on the owner's host: the pid is gone, a zombie, or now belongs to another process (its
  start time differs);
* elsewhere: the run's scheduler answers (within ``caelum.workflow.owner-check-timeout``)
  and no longer knows the run's client, so the run's futures were released with it. A
  scheduler that cannot be reached, or one on a loopback address of another machine (an
  embedded cluster), tells nothing, and the run is left as it is.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from caelum_dask import config

#: start times read twice from the OS for the same process agree to the clock tick; a
#: different process on the same pid started at least this much later or earlier
START_TIME_TOLERANCE = 0.5


@dataclass(frozen=True)
class Owner:
    """The process driving a run, as recorded in the run store's ``owner_*`` columns."""

    host: str
    pid: int
    started: float  # psutil create_time: tells a reused pid from the owner
    scheduler: str | None = None
    client: str | None = None

    @classmethod
    def current(cls, client: Any = None) -> "Owner":
        """This process, running on ``client``'s scheduler (a :class:`distributed.Client`)."""
        scheduler = getattr(getattr(client, "scheduler", None), "address", None) if client is not None else None
        return cls(host=socket.gethostname(), pid=os.getpid(), started=psutil.Process().create_time(),
                   scheduler=scheduler, client=getattr(client, "id", None))

    def columns(self) -> dict[str, Any]:
        """The run store's columns for this owner."""
        return {"owner_host": self.host, "owner_pid": self.pid, "owner_started": self.started,
                "scheduler": self.scheduler, "owner_client": self.client}


def local_reason(pid: int, started: float | None, host: str) -> str | None:
    """Why the owner process ``pid`` (started at ``started``) on this host is gone, or None if alive."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"its client process {pid} on {host} exited without recording the end of the run"
        if started is not None and abs(proc.create_time() - started) > START_TIME_TOLERANCE:
            return f"its client process {pid} on {host} is gone (the pid now belongs to another process)"
    except psutil.NoSuchProcess:
        return f"its client process {pid} on {host} is gone"
    except psutil.Error:  # AccessDenied: it exists, and we may not look closer
        return None
    return None


def _loopback(address: str) -> bool:
    from distributed.comm.addressing import get_address_host

    try:
        host = get_address_host(address)
    except ValueError:
        return True  # not an address we could reach anyway
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clients_of(dask_scheduler: Any) -> list[str]:
    return list(dask_scheduler.clients)


@dataclass
class OwnerCheck:
    """Decides, for runs read together, whether each one's owner is gone.

    Scheduler answers are kept for the whole check, so listing many runs of one remote
    scheduler asks it once.
    """

    host: str = field(default_factory=socket.gethostname)
    timeout: float | None = None
    _clients: dict[str, set[str] | None] = field(default_factory=dict)

    def reason(self, run: Mapping[str, Any]) -> str | None:
        """Why the owner of ``run`` (a ``running`` run row) is known to be gone; None: alive or unknown."""
        pid, host = run.get("owner_pid"), run.get("owner_host")
        if pid is None or host is None:  # recorded before owners were: nothing to go by
            return None
        if host == self.host:
            return local_reason(int(pid), run.get("owner_started"), host)
        address, client_id = run.get("scheduler"), run.get("owner_client")
        if not address or not client_id or _loopback(address):
            return None
        known = self.connected_clients(address)
        if known is None or client_id in known:
            return None
        return f"its client {client_id} (process {pid} on {host}) is no longer connected to the scheduler {address}"

    def connected_clients(self, address: str) -> set[str] | None:
        """The client ids the scheduler at ``address`` knows, or None when it cannot be asked."""
        if address not in self._clients:
            self._clients[address] = self._ask(address)
        return self._clients[address]

    def _ask(self, address: str) -> set[str] | None:
        from dask.utils import parse_timedelta

        from caelum_dask.cluster import connect

        timeout = self.timeout if self.timeout is not None else parse_timedelta(
            config.get("workflow.owner-check-timeout"))
        try:
            with connect(address, timeout=timeout) as client:
                return set(client.run_on_scheduler(_clients_of))
        except Exception:  # noqa: BLE001 - unreachable, refused, TLS: the scheduler tells nothing
            return None

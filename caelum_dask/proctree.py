"""Ending every process a job started, not only its process group.

A process group is not enough: a test's server fixture that calls
``subprocess.Popen(..., start_new_session=True)`` leaves the group, and once its parent dies it
is re-parented to init, out of any tree. So a job's processes are found two ways, and both are
killed:

* the live tree under the job's root process (``psutil.Process.children(recursive=True)``),
  which still holds helpers that left the group while their parent lives;
* every process whose environment carries the job's marker variable (``KEY=VALUE`` set in
  the root's environment, inherited by every descendant that did not scrub its environment),
  which finds orphans wherever they were re-parented.

Only processes of the same user can be read (root reads all); that is where a job's
processes live.
"""

from __future__ import annotations

import os
import signal

import psutil


def marked(key: str, value: str) -> list[psutil.Process]:
    """Every readable process whose environment has ``key=value`` (this process excluded)."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(key) == value:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its live descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill(processes: list[psutil.Process], timeout: float = 5.0) -> int:
    """SIGKILL each process (once each) and wait for them to go; returns how many it signalled."""
    alive = []
    for proc in {p.pid: p for p in processes}.values():
        try:
            proc.send_signal(signal.SIGKILL)
            alive.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=timeout)
    return len(alive)

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

A command that started no process at all (a warm ``caelum analyze``, ``caelum runs list``)
skips both searches: :func:`never_started_a_process` tells it from two system calls, without
importing psutil or reading every process's environment (about 20 ms of a 50 ms command).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

#: every process a ``caelum`` command starts carries the command's marker here (and its
#: callers' markers: nested commands append theirs, separated by ``:``)
JOB_ENV = "CAELUM_JOBS"


def marked(key: str, value: str) -> list[psutil.Process]:
    """Every readable process whose environment has ``key=value`` (this process excluded)."""
    return _matching(key, lambda found: found == value)


def marked_in(key: str, value: str) -> list[psutil.Process]:
    """Every readable process whose ``key`` (a ``:``-separated list) contains ``value``."""
    return _matching(key, lambda found: value in found.split(":"))


def _matching(key: str, wanted: Callable[[str], bool]) -> list[psutil.Process]:
    import psutil

    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if wanted(proc.environ().get(key, "")):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its live descendants (empty if it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def kill(processes: list[psutil.Process], timeout: float = 5.0) -> int:
    """SIGKILL each process (once each) and wait for them to go; returns how many it signalled."""
    import psutil

    alive = []
    for proc in {p.pid: p for p in processes}.values():
        try:
            proc.send_signal(signal.SIGKILL)
            alive.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=timeout)
    return len(alive)


@contextlib.contextmanager
def job_scope() -> Iterator[str]:
    """Run a command so that nothing it started outlives it.

    The command's marker is added to :data:`JOB_ENV` in this process's environment, so every
    process it starts (embedded cluster workers, test sessions, a workflow step's commands and
    whatever they start, in their own sessions too) inherits it. SIGTERM becomes ``SystemExit``
    so the command's own cleanup runs (clusters closed, runs recorded as interrupted) as on
    Ctrl-C; when the command ends, for whatever reason, the process trees of the children it
    started and every process carrying the marker are killed. Children this process already had
    (the command run in-process by a test runner or a notebook) are not the command's.
    """
    marker = uuid.uuid4().hex[:16]
    previous_env = os.environ.get(JOB_ENV)
    os.environ[JOB_ENV] = f"{previous_env}:{marker}" if previous_env else marker
    # a command run inside a longer-lived process leaves that process's own children alone
    before = set() if never_started_a_process() else _children()
    previous = _on_sigterm()
    try:
        yield marker
    finally:
        _restore_sigterm(previous)
        if before or not never_started_a_process():
            new = [tree(pid) for pid in _children() - before]
            leftovers = [p for family in new for p in family] + marked_in(JOB_ENV, marker)
            if leftovers:
                kill(leftovers)
        if previous_env is None:
            os.environ.pop(JOB_ENV, None)
        else:
            os.environ[JOB_ENV] = previous_env


def never_started_a_process() -> bool:
    """Whether this process has never had a child, so nothing it started can be alive anywhere.

    No child now (``waitid`` without reaping answers ECHILD; a running or zombie child would be
    seen) and none ever waited for (each adds its page faults and CPU time to
    ``RUSAGE_CHILDREN``; any process that ran has page faults). A process that ignores SIGCHLD
    has its children reaped unseen, so there the answer is always no.
    """
    if not hasattr(os, "waitid") or signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN:
        return False
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_minflt == 0 and usage.ru_majflt == 0 and usage.ru_utime == 0 and usage.ru_stime == 0
    return False  # a child exists (running, or ended and not yet waited for)


def _children() -> set[int]:
    import psutil

    try:
        return {child.pid for child in psutil.Process().children()}
    except psutil.Error:
        return set()


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _on_sigterm() -> Any:
    """Install the SIGTERM -> SystemExit handler (main thread only); returns the old one."""
    try:
        return signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: the caller's handler stays
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except ValueError:
            pass

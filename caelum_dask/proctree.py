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
importing psutil or reading every process's environment (about 20 ms of a 50 ms command). On
Linux the marker search reads ``/proc/<pid>/environ`` itself (~3 ms) and imports psutil only to
kill what it found (the import alone is ~14 ms).
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
    pids = _matching_pids_in_proc(key, wanted)
    if pids is not None:
        return _processes(pids)
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


def _matching_pids_in_proc(key: str, wanted: Callable[[str], bool]) -> list[int] | None:
    """The pids whose ``key`` satisfies ``wanted``, read straight from ``/proc/<pid>/environ``;
    None where there is no ``/proc`` (psutil does the search there).

    Why not psutil here: this search runs at the end of every command that started a process,
    and ``import psutil`` alone costs ~14 ms where the search itself costs ~3 ms; psutil is
    imported only when something was found (to kill it).
    """
    if not os.path.isdir("/proc/self"):
        return None
    prefix = key.encode() + b"="
    me = str(os.getpid())
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        value = next((e[len(prefix):] for e in entries if e.startswith(prefix)), b"")
        if wanted(value.decode("utf-8", "surrogateescape")):
            found.append(int(name))
    return found


def _processes(pids: list[int]) -> list[psutil.Process]:
    if not pids:
        return []
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            continue
    return procs


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
            new = [tree(pid) for pid in _children() - before] if before or _has_children() else []
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
    if signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN or _has_children():
        return False
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_minflt == 0 and usage.ru_majflt == 0 and usage.ru_utime == 0 and usage.ru_stime == 0


def _has_children() -> bool:
    """Whether this process has a child now, running or ended and not yet waited for (no psutil)."""
    if not hasattr(os, "waitid"):
        return True
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


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

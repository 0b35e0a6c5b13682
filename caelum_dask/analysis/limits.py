"""A per-file time limit inside a Dask task, so one pathological file cannot stall a run.

Dask has no task time limit, and a worker thread cannot use SIGALRM. A watchdog thread raises
:class:`AnalysisTimeout` in the analysing thread (CPython's ``PyThreadState_SetAsyncExc``), which
interrupts any Python-level loop; the file becomes an error row and the batch goes on.

One watchdog thread per process serves every analysing thread: a thread started per file (a
``threading.Timer``) cost about a third of a millisecond each, a percent of a whole run.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class AnalysisTimeout(Exception):
    """The file took longer than the per-file time limit."""


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None)


class _Watchdog:
    """Deadlines of the threads analysing a file, and the one thread that enforces them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[float, int]] = {}  # thread ident -> (deadline, token)
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, ident: int, seconds: float) -> int:
        """Interrupt thread ``ident`` in ``seconds`` unless :meth:`disarm` comes first."""
        with self._cond:
            token = next(self._tokens)
            self._deadlines[ident] = (time.monotonic() + seconds, token)
            if self._thread is None or not self._thread.is_alive():  # first use (or a forked child)
                self._thread = threading.Thread(target=self._run, name="caelum-analysis-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, ident: int, token: int) -> bool:
        """Forget the deadline; True if it had already fired (an exception may still be pending)."""
        with self._cond:
            entry = self._deadlines.get(ident)
            if entry is not None and entry[1] == token:
                del self._deadlines[ident]
                return False
            return True

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._deadlines:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                for ident, (deadline, _) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[ident]
                        _set_async_exc(ident, AnalysisTimeout)
                if self._deadlines:
                    self._cond.wait(min(d for d, _ in self._deadlines.values()) - now)


_WATCHDOG = _Watchdog()


def call_with_limit(fn: Callable[[], T], seconds: float | None) -> T:
    """``fn()``, or :class:`AnalysisTimeout` once it has run for ``seconds``."""
    if not seconds or seconds <= 0:
        return fn()
    ident = threading.get_ident()
    token = _WATCHDOG.arm(ident, seconds)
    try:
        try:
            return fn()
        finally:
            if _WATCHDOG.disarm(ident, token):
                _set_async_exc(ident, None)  # clear one still pending
    except AnalysisTimeout:
        raise AnalysisTimeout(f"analysis took longer than the {seconds:g} s limit") from None

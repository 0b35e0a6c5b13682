"""A per-file time limit inside a Dask task, so one pathological file cannot stall a run.

Dask has no task time limit, and a worker thread cannot use SIGALRM. A watchdog thread raises
:class:`AnalysisTimeout` in the analysing thread (CPython's ``PyThreadState_SetAsyncExc``), which
interrupts any Python-level loop; the file becomes an error row and the batch goes on.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class AnalysisTimeout(Exception):
    """The file took longer than the per-file time limit."""


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None)


def call_with_limit(fn: Callable[[], T], seconds: float | None) -> T:
    """``fn()``, or :class:`AnalysisTimeout` once it has run for ``seconds``."""
    if not seconds or seconds <= 0:
        return fn()
    ident = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                _set_async_exc(ident, AnalysisTimeout)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            return fn()
        finally:
            timer.cancel()
            with lock:
                state["done"] = True
                if state["fired"]:
                    _set_async_exc(ident, None)  # clear one still pending
    except AnalysisTimeout:
        raise AnalysisTimeout(f"analysis took longer than the {seconds:g} s limit") from None

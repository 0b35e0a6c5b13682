"""One progress display for long CLI commands, on stderr.

A command that streams many results (tests, files, tasks) has to say how far it is without
drowning the user: stdout belongs to the command's result (``--json`` must stay pure JSON), so
progress always goes to stderr, and how it looks depends on who reads stderr:

* a terminal gets ONE live bar (rich): description, done/total, failures so far and the ETA;
  status lines ("snapshot …", "collected …") are printed above the bar, which stays at the
  bottom;
* anything else (a CI log, a pipe, a test capturing output) gets plain lines: the status
  lines, a progress line at most every few seconds and only when something changed, and one
  final line, never a line per item.

Usage::

    with ProgressDisplay("caelum test", noun="tests", live=not as_json) as display:
        display.status("snapshot abc: 12 files")
        display.update(done=3, total=20, failed=1, eta=4.0)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from caelum_dask.progress import ProgressEvent

#: the least time between two plain (non-terminal) progress lines
PLAIN_INTERVAL_SECONDS = 5.0


@dataclass(frozen=True)
class ProgressState:
    """How far a command is: what every rendering (bar, plain line, final line) is made from."""

    done: int = 0
    total: int | None = None  # None: not known yet (e.g. the tests are still being collected)
    failed: int = 0
    eta: float | None = None  # seconds left, None when nothing can be estimated yet
    running: int = 0  # items started and not finished (a workflow's executing tasks)


def format_seconds(seconds: float) -> str:
    """A short human duration: ``3s``, ``2m05s``, ``1h02m`` (what a progress line has room for)."""
    whole = max(0, int(round(seconds)))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def counts_text(state: ProgressState, noun: str) -> str:
    """``12/40 tests, 1 failed`` (or ``12 tests, …`` while the total is unknown), then
    ``, 3 running`` while some are."""
    done = f"{state.done}/{state.total}" if state.total is not None else str(state.done)
    text = f"{done} {noun}, {state.failed} failed"
    return f"{text}, {state.running} running" if state.running else text


def progress_text(state: ProgressState, noun: str) -> str:
    """One progress line without a prefix: ``12/40 tests, 1 failed, ETA 3s``."""
    text = counts_text(state, noun)
    return text if state.eta is None else f"{text}, ETA {format_seconds(state.eta)}"


def final_text(state: ProgressState, noun: str, elapsed: float) -> str:
    """The last line: ``20/20 tests, 1 failed in 3s`` (no ETA and nothing running: it is over)."""
    return f"{counts_text(replace(state, running=0), noun)} in {format_seconds(elapsed)}"


def _countable(state: ProgressState) -> bool:
    """Whether there is anything to count yet: a known total or something done."""
    return state.total is not None or state.done > 0


def is_terminal(stream: TextIO) -> bool:
    """Whether a person is watching ``stream`` (a closed or odd stream counts as not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class ProgressDisplay:
    """One progress bar (terminal) or throttled plain lines (anything else) on stderr.

    ``live=False`` forces plain lines even on a terminal (``--json``: scripts read the output);
    ``live=None`` or ``True`` draw the bar only when ``stream`` is a terminal. ``clock`` and
    ``interval`` exist so that tests can drive the throttling without waiting.
    """

    def __init__(self, prefix: str, noun: str = "items", *, stream: TextIO | None = None,
                 live: bool | None = None, interval: float = PLAIN_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.noun = noun
        self.stream = stream if stream is not None else sys.stderr
        self.live = live is not False and is_terminal(self.stream)
        self.interval = interval
        self.clock = clock
        self.state: ProgressState | None = None  # None until the first update
        self._lock = threading.Lock()  # updates may come from another thread than status lines
        self._started = clock()
        self._printed_at = self._started
        self._printed: ProgressState | None = None
        self._bar: Any = None  # rich.progress.Progress while live
        self._task: Any = None
        self._closed = False

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> ProgressDisplay:
        self._started = self._printed_at = self.clock()
        if self.live:
            self._start_bar()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # a command that failed before anything was done (bad address, bad input): its one
        # error line stands alone; one that failed part-way still says how far it got
        self.close(final=exc_type is None or bool(self.state is not None and self.state.done))

    def close(self, final: bool = True) -> None:
        """Take the bar down and print the final line (only if there was anything to count)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            if final and self.state is not None and _countable(self.state):
                self._write(final_text(self.state, self.noun, self.clock() - self._started))

    # -- what commands call --------------------------------------------------------------
    def status(self, message: str) -> None:
        """A status line ("snapshot …"): printed as it is, above the bar when there is one."""
        with self._lock:
            self._write(message)

    def update(self, done: int, total: int | None, *, failed: int = 0, eta: float | None = None,
               running: int = 0) -> None:
        """The latest counts; drawn on the bar, or printed now and then as a plain line."""
        state = ProgressState(done=done, total=total, failed=failed, eta=eta, running=running)
        with self._lock:
            self.state = state
            if self._bar is not None:
                self._draw(state)
            elif self._plain_due(state):
                self._printed, self._printed_at = state, self.clock()
                self._write(progress_text(state, self.noun))

    def __call__(self, event: ProgressEvent) -> None:
        """Take an engine's :class:`~caelum_dask.progress.ProgressEvent` (a ``progress=`` callback).

        A status line is printed (above the bar); counts move the bar. An event that carries both
        does both.
        """
        if event.message is not None:
            self.status(event.message)
        if event.total is not None or event.done > 0:
            self.update(event.done, event.total, failed=event.failed, eta=event.eta, running=event.running)

    # -- rendering -----------------------------------------------------------------------
    def _write(self, text: str) -> None:
        line = f"{self.prefix}: {text}" if self.prefix else text
        if self._bar is not None:  # rich prints above the live bar; no markup: "[linux]" is text
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
            return
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not fail the command
            pass

    def _plain_due(self, state: ProgressState) -> bool:
        """A plain line only every ``interval`` seconds, only when the counts changed, and
        not before there is anything to count ("0 tests" while collecting is noise)."""
        if not _countable(state):
            return False
        if self._printed is not None and (state.done, state.total, state.failed, state.running) == (
                self._printed.done, self._printed.total, self._printed.failed, self._printed.running):
            return False
        return self.clock() - self._printed_at >= self.interval

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(file=self.stream, force_terminal=True, highlight=False)
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.noun, markup=False),
            TextColumn("{task.fields[failed]}"), TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
            console=console, transient=True, redirect_stdout=False, redirect_stderr=True,
        )
        self._task = self._bar.add_task(self.prefix, total=None, failed="", eta="")
        self._bar.start()

    def _draw(self, state: ProgressState) -> None:
        failed = f"[red]{state.failed} failed" if state.failed else f"{state.failed} failed"
        if state.running:
            failed += f"[/], {state.running} running" if state.failed else f", {state.running} running"
        eta = f"ETA {format_seconds(state.eta)}" if state.eta is not None else "ETA -"
        self._bar.update(self._task, completed=state.done, total=state.total, failed=failed, eta=eta)


__all__ = ["PLAIN_INTERVAL_SECONDS", "ProgressDisplay", "ProgressState", "counts_text", "final_text",
           "format_seconds", "is_terminal", "progress_text"]

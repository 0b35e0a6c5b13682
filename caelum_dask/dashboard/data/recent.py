"""The recent runs of one capability, as the scheduler keeps them for a dashboard page."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar, Generic, TypeVar

R = TypeVar("R")


class RecentRuns(Generic[R]):
    """Runs seen on an event topic, most recent last, at most ``keep`` of them.

    Bounded so a long-lived scheduler never grows with its history; ``version`` is bumped by
    subclasses whenever a page needs to redraw.
    """

    run_class: ClassVar[Any]  # how a run of this capability is made from its run id

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self.runs: OrderedDict[str, R] = OrderedDict()
        self.version = 0

    def get(self, run_id: str) -> R | None:
        return self.runs.get(run_id)

    def latest(self) -> R | None:
        return next(reversed(self.runs.values()), None)

    def _run(self, run_id: str) -> R:
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = self.run_class(run_id=run_id)
            while len(self.runs) > self.keep:
                self.runs.popitem(last=False)
        return run

"""Which session runs which tests next: the run's queue, chunk sizes, the tail and stealing.

Pure bookkeeping (no Dask, no processes), so it is tested on its own. The model is
pytest-xdist's load scheduling (``xdist/scheduler/load.py``, ``worksteal.py``), across machines:

* Tests are grouped into units by ``--dist`` (a test; a file; a module or class) and queued
  longest first by recorded duration; a run with nothing recorded keeps collection order.
* A session is handed a chunk whenever its queue runs low: about a ``1 / (2 × sessions)``
  share of the estimated work still queued, never less than one unit. Chunks shrink as the
  queue empties (guided self-scheduling), so start-up costs one message per session and the
  tail is handed out one unit at a time.
* When the queue is empty and a session runs dry, it steals from the session with the most
  queued-but-unstarted work: the back half of that queue is asked back (never the test after
  the running one, whose fixtures are kept alive for it), and the tests that had not started
  yet come back to the queue.
* A failed test is queued again (``retry``) for a session on another machine when there is
  one, to tell flaky from broken.
* Sessions whose worker was lost give their queued tests back; the test that was running is
  re-queued too, up to ``allowed_losses`` times, then reported lost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from caelum_dask.testing.partition import units_of

#: a session asks for more when fewer than this many tests are queued on it…
LOW_WATER_TESTS = 2
#: …or when less than this much estimated work (seconds) is
LOW_WATER_SECONDS = 0.5


@dataclass
class Unit:
    """Tests that go to one session together, in collection order."""

    ids: list[int]
    estimate: float
    avoid_machine: str | None = None  # a retry prefers another machine
    retry: int = 0


@dataclass
class SessionSlot:
    """What the dispatcher knows of one session."""

    name: str
    machine: str = ""
    ready: bool = False
    alive: bool = True
    queued: deque[Unit] = field(default_factory=deque)  # handed over, not finished, in order
    running: int | None = None
    last_sent: bool | None = None
    stealing: bool = False
    done: int = 0

    def queued_tests(self) -> int:
        return sum(len(u.ids) for u in self.queued)

    def queued_estimate(self) -> float:
        return sum(u.estimate for u in self.queued)


@dataclass
class Dispatch:
    """An instruction for the engine: send ``ids`` (``last``) to ``session``, or steal."""

    session: str
    op: str
    ids: list[int]
    last: bool = False


class Dispatcher:
    """The queue of one platform's run (see the module docstring)."""

    def __init__(self, nodeids: Sequence[str], estimates: Mapping[str, float], dist: str,
                 ordered_by_duration: bool, retries: int = 0, allowed_losses: int = 1) -> None:
        self.nodeids = list(nodeids)
        self.estimates = [float(estimates.get(n, 0.0)) for n in self.nodeids]
        position = {n: i for i, n in enumerate(self.nodeids)}
        units = [Unit([position[n] for n in group], sum(self.estimates[position[n]] for n in group))
                 for group in units_of(self.nodeids, dist)]
        if ordered_by_duration:
            units.sort(key=lambda u: -u.estimate)  # stable: ties keep collection order
        self.pending: deque[Unit] = deque(units)
        self.sessions: dict[str, SessionSlot] = {}
        self.retries = retries
        self.allowed_losses = allowed_losses
        self.losses: dict[int, int] = {}
        self.finished: set[int] = set()
        self.retried: dict[int, int] = {}
        self.stopped = False
        self.expected = 1  # sessions the run has (collected or about to): chunks are shares of them
        self.done_estimate = 0.0  # estimates vs measured durations of finished tests: the pace
        self.done_actual = 0.0

    # -- state changes -----------------------------------------------------------------
    def add_session(self, name: str, machine: str) -> None:
        self.sessions[name] = SessionSlot(name=name, machine=machine, ready=True)

    def started(self, session: str, index: int) -> None:
        slot = self.sessions.get(session)
        if slot is not None:
            slot.running = index

    def finished_test(self, session: str, index: int, duration: float | None = None) -> None:
        """A test has its result; drop it from the session's queue."""
        self.finished.add(index)
        if duration is not None:
            self.done_estimate += self.estimates[index]
            self.done_actual += duration
        slot = self.sessions.get(session)
        if slot is None:
            return
        slot.done += 1
        if slot.running == index:
            slot.running = None
        for unit in slot.queued:
            if index in unit.ids:
                unit.ids.remove(index)
                unit.estimate = max(0.0, unit.estimate - self.estimates[index])
                break
        while slot.queued and not slot.queued[0].ids:
            slot.queued.popleft()

    def retry(self, index: int, machine: str) -> bool:
        """Queue a failed test again if retries remain; True if it was."""
        attempt = self.retried.get(index, 0)
        if self.stopped or attempt >= self.retries:
            return False
        self.retried[index] = attempt + 1
        self.finished.discard(index)
        self.pending.append(Unit([index], self.estimates[index], avoid_machine=machine, retry=attempt + 1))
        return True

    def released(self, session: str, indices: Sequence[int]) -> None:
        """Tests a session gave back (stolen, stopped): to the front of the queue."""
        slot = self.sessions.get(session)
        if slot is not None:
            slot.stealing = False
            gone = set(indices)
            for unit in slot.queued:
                unit.ids = [i for i in unit.ids if i not in gone]
            slot.queued = deque(u for u in slot.queued if u.ids)
        back = [i for i in indices if i not in self.finished]
        if back and not self.stopped:
            self.pending.appendleft(Unit(back, sum(self.estimates[i] for i in back)))

    def lost(self, session: str) -> list[int]:
        """The session's worker is gone: its tests go back; returns tests lost too often."""
        slot = self.sessions.pop(session, None)
        if slot is None:
            return []
        given_up = []
        back: list[int] = []
        # the running test; if its start was not heard of yet, the first queued one (a
        # session runs its queue in order), so a test that kills its worker at once is caught
        running = slot.running if slot.running is not None else next((u.ids[0] for u in slot.queued if u.ids), None)
        for unit in slot.queued:
            for index in unit.ids:
                if index == running:
                    self.losses[index] = self.losses.get(index, 0) + 1
                    if self.losses[index] > self.allowed_losses:
                        given_up.append(index)
                        continue
                back.append(index)
        if back and not self.stopped:
            self.pending.appendleft(Unit(back, sum(self.estimates[i] for i in back)))
        return given_up

    def stop(self) -> list[int]:
        """``-x``/``--maxfail`` reached: nothing more is handed out; returns what never ran."""
        self.stopped = True
        never = [i for unit in self.pending for i in unit.ids]
        self.pending.clear()
        return never

    # -- decisions ---------------------------------------------------------------------
    def complete(self) -> bool:
        """Nothing queued and nothing in any session's hands."""
        return not self.pending and not any(s.queued for s in self.sessions.values())

    def plan(self) -> list[Dispatch]:
        """What to send now: chunks to sessions running low, ``last`` flags, steals."""
        if self.stopped:
            return []
        ready = [s for s in self.sessions.values() if s.ready and s.alive]
        out = self._refills(ready)
        if not self.pending:
            for slot in ready:
                if not slot.queued:  # idle with nothing left to hand out
                    out.extend(self._steal_for(slot, ready))
        return out + self._last_flags(ready, out)

    def _refills(self, ready: list[SessionSlot]) -> list[Dispatch]:
        out = []
        for slot in sorted(ready, key=lambda s: s.queued_estimate()):
            if self.pending and self._low(slot):
                chunk = self._take(slot, max(len(ready), self.expected))
                if chunk:
                    slot.queued.extend(chunk)
                    out.append(Dispatch(slot.name, "run", [i for u in chunk for i in u.ids]))
        return out

    def _last_flags(self, ready: list[SessionSlot], sent: list[Dispatch]) -> list[Dispatch]:
        """Tell each session whether more is coming (it holds its last test back until then)."""
        last = not self.pending
        extra = []
        runs = {d.session: d for d in sent if d.op == "run"}
        for slot in ready:
            if slot.name in runs:
                runs[slot.name].last = last
                slot.last_sent = last
            elif slot.last_sent is not last and (slot.queued or last):
                extra.append(Dispatch(slot.name, "run", [], last))
                slot.last_sent = last
        return extra

    def pace(self) -> float:
        """Measured seconds per estimated second so far (1.0 until something finished).

        Unknown durations are all estimated alike, so this turns "N tests queued" into time:
        a session is refilled while it still has about LOW_WATER_SECONDS of work, which hides
        the round trip to the client for suites of millisecond tests.
        """
        return self.done_actual / self.done_estimate if self.done_estimate > 0 else 1.0

    def _low(self, slot: SessionSlot) -> bool:
        unstarted = slot.queued_tests() - (1 if slot.running is not None else 0)
        return unstarted < LOW_WATER_TESTS or slot.queued_estimate() * self.pace() < LOW_WATER_SECONDS

    def _take(self, slot: SessionSlot, sessions: int) -> list[Unit]:
        share = sum(u.estimate for u in self.pending) / (2 * max(1, sessions))
        chunk: list[Unit] = []
        total = 0.0
        others_alive = any(s.machine != slot.machine for s in self.sessions.values() if s.alive)
        skipped: list[Unit] = []
        while self.pending:
            unit = self.pending[0]
            if chunk and total + unit.estimate > share:
                break  # never more than the share, so the long tests at the head go out singly
            self.pending.popleft()
            if unit.avoid_machine == slot.machine and others_alive:
                skipped.append(unit)  # a retry waits for a session on another machine
                continue
            chunk.append(unit)
            total += unit.estimate
        self.pending.extendleft(reversed(skipped))
        return chunk

    def _steal_for(self, slot: SessionSlot, ready: list[SessionSlot]) -> list[Dispatch]:
        victims = [s for s in ready if s is not slot and not s.stealing and len(s.queued) >= 1]
        best, best_units, best_estimate = None, [], 0.0
        for victim in victims:
            stealable = self._stealable(victim)
            estimate = sum(u.estimate for u in stealable)
            if stealable and estimate > best_estimate:
                best, best_units, best_estimate = victim, stealable, estimate
        if best is None:
            return []
        take, total = [], 0.0
        for unit in reversed(best_units):  # from the back: the half furthest from running
            if take and total + unit.estimate > best_estimate / 2:
                break
            take.append(unit)
            total += unit.estimate
        best.stealing = True
        return [Dispatch(best.name, "steal", [i for u in reversed(take) for i in u.ids])]

    def _stealable(self, victim: SessionSlot) -> list[Unit]:
        """Whole units behind the running test's unit and the next one."""
        return list(victim.queued)[2:]  # the first is (or is about to be) running, the second is its successor

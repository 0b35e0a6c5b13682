"""The pytest plugin of a long-lived test session (``-p _caelum_session``).

It runs inside the *user's* Python (maybe another venv, ``--python``), so it imports nothing
from caelum: the file is copied to a cache folder that is put on ``PYTHONPATH``.

Why it exists: a session collects once and then runs whatever tests it is handed, for the
whole run, the way pytest-xdist's workers do (``xdist/remote.py``), so no test pays for an
interpreter start or a second collection. It talks to the worker-side relay over two pipes
whose descriptors arrive in ``CAELUM_SESSION_FDS`` (``"in,out"``), one JSON object a line:

relay -> session
    ``{"op": "run", "ids": [index, ...], "last": bool}`` queue tests (indices into the
    collection); ``last`` says nothing more is coming for now, so the final queued test is
    run without waiting for a successor;
    ``{"op": "steal", "ids": [...]}`` give back those not started yet (never the next one,
    whose fixtures the running test keeps alive);
    ``{"op": "stop"}`` give back everything queued and end after the running test;
    ``{"op": "shutdown"}`` end once the queue is empty.
session -> relay
    ``{"collected": {...}}`` once; ``{"r": nodeid, ...}`` when a test has finished all its phases (outcome, report categories as
    pytest's terminal counts them, duration, text, and with ``full`` pytest's own serialised
    reports); ``{"released": [...]}``; ``{"stopped": reason}`` on ``-x``/``--maxfail``;
    ``{"finished": exitstatus}`` once every report (session-scoped teardown included) and the
    JUnit file are written: the results are complete, the interpreter is only exiting.

A test runs with ``nextitem`` set to the test queued after it, exactly as in a plain run, so
module- and class-scoped fixtures live across the tests of a unit. Tests run in the order they
were handed over, so the relay knows which test is running without being told: the first one
handed over and not reported yet (the one to blame when the interpreter dies).
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import threading
from collections import deque
from typing import Any

import pytest

NODEID_PROPERTY = "caelum_nodeid"


class _Link:
    """The two pipes to the relay, and the queue of tests handed to this session."""

    def __init__(self, fds: str, full: bool) -> None:
        infd, outfd = (int(x) for x in fds.split(","))
        self.inbox = os.fdopen(infd, "rb")
        self.out = os.fdopen(outfd, "wb")
        self.full = full
        self.lock = threading.Lock()
        self.cond = threading.Condition()
        self.torun: deque[int] = deque()
        self.last = False
        self.shutdown = False

    def send(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, default=str) + "\n").encode()
        with self.lock:
            self.out.write(data)
            self.out.flush()

    def listen(self) -> None:
        """Reader thread: commands update the queue; a closed pipe means shut down."""
        for line in self.inbox:
            try:
                self.handle(json.loads(line))
            except ValueError:
                continue
        with self.cond:
            self.shutdown = True
            self.cond.notify_all()

    def handle(self, command: dict[str, Any]) -> None:
        op = command.get("op")
        with self.cond:
            if op == "run":
                self.torun.extend(int(i) for i in command.get("ids", ()))
                self.last = bool(command.get("last"))
            elif op == "steal":
                wanted = set(command.get("ids", ()))
                keep = [self.torun[0]] if self.torun else []  # the running test's successor stays
                rest = list(self.torun)[1:]
                released = [i for i in rest if i in wanted]
                self.torun = deque(keep + [i for i in rest if i not in wanted])
                self.send({"released": released})
            elif op == "stop":
                self.send({"released": list(self.torun)})
                self.torun.clear()
                self.shutdown = True
            elif op == "shutdown":
                self.shutdown = True
            self.cond.notify_all()

    def next_pair(self) -> tuple[int, int | None] | None:
        """The next test and its successor, waiting while one is needed; None: the end."""
        with self.cond:
            while True:
                if len(self.torun) >= 2 or (self.torun and (self.last or self.shutdown)):
                    index = self.torun.popleft()
                    return index, (self.torun[0] if self.torun else None)
                if self.shutdown and not self.torun:
                    return None
                self.cond.wait()


_LINK: _Link | None = None
_STATE: dict[str, dict[str, Any]] = {}
_COLLECT_REPORTS: list[Any] = []
_DESELECTED: list[int] = [0]


def pytest_configure(config: pytest.Config) -> None:
    global _LINK
    fds = os.environ.get("CAELUM_SESSION_FDS")
    if fds:
        _LINK = _Link(fds, os.environ.get("CAELUM_SESSION_FULL") == "1")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if not report.passed:
        _COLLECT_REPORTS.append(report)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _DESELECTED[0] += len(items)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # at collection, so tests skipped before setup carry it too (merged JUnit)
        item.user_properties.append((NODEID_PROPERTY, item.nodeid))


def _category(config: pytest.Config, report: Any) -> str:
    category = config.hook.pytest_report_teststatus(report=report, config=config)[0]
    return str(category or "")


def _serialise(config: pytest.Config, report: Any) -> Any:
    return config.hook.pytest_report_to_serializable(config=config, report=report)


def pytest_collection_finish(session: pytest.Session) -> None:
    if _LINK is None:
        return
    ids = [item.nodeid for item in session.items]
    config = session.config
    errors = [{"nodeid": r.nodeid, "longrepr": str(r.longrepr)} for r in _COLLECT_REPORTS if r.failed]
    cats: dict[str, int] = {}
    for report in _COLLECT_REPORTS:  # as pytest's terminal counts them: error / skipped
        key = "error" if report.failed else _category(config, report) or "skipped"
        cats[key] = cats.get(key, 0) + 1
    _LINK.send({"collected": {
        "ids": ids, "digest": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "errors": errors,
        "categories": cats, "deselected": _DESELECTED[0],
        "reports": [_serialise(config, r) for r in _COLLECT_REPORTS] if _LINK.full else [],
    }})
    if os.environ.get("CAELUM_SESSION_FREEZE") == "1":
        # Collection leaves thousands of long-lived objects (items, modules, fixtures'
        # definitions); every full collection during the run would walk them again. Freezing
        # them once (after dropping collection's own garbage) takes them out of the GC's way
        # for the whole session: on networkx's suite ~13 % of the CPU time.
        gc.collect()
        gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    if _LINK is None:
        return None  # a plain pytest run that merely has this plugin on its path
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error{'s' if session.testsfailed != 1 else ''} "
                                  "during collection")
    if session.config.option.collectonly:
        return True
    threading.Thread(target=_LINK.listen, name="caelum-session-commands", daemon=True).start()
    items = session.items
    while True:
        pair = _LINK.next_pair()
        if pair is None:
            break
        index, successor = pair
        nextitem = items[successor] if successor is not None else None
        items[index].config.hook.pytest_runtest_protocol(item=items[index], nextitem=nextitem)
        if session.shouldfail or session.shouldstop:
            with _LINK.cond:
                released = list(_LINK.torun)
                _LINK.torun.clear()
            _LINK.send({"stopped": str(session.shouldfail or session.shouldstop), "released": released})
            break
    return True


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _STATE[nodeid] = {"outcome": "passed", "duration": 0.0, "longrepr": "", "message": "",
                      "categories": [], "reports": []}


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # skip: (file, line, reason)
        return str(report.longrepr[2])
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]  # e.g. "fixture 'x' not found"
    return errors[0] if errors else (lines[-1].strip() if lines else "")


def _outcome(report: pytest.TestReport, current: str) -> str:
    """One word per test (what ``--json`` shows); the counts come from the categories."""
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if wasxfail:
            return "xfailed" if report.skipped else "xpassed" if report.passed else "failed"
        return "failed" if report.failed else "skipped" if report.skipped else current
    if report.failed:  # setup or teardown
        return "error"
    if report.skipped and report.when == "setup":
        return "xfailed" if wasxfail else "skipped"
    return current


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = _STATE.setdefault(report.nodeid, {"outcome": "passed", "duration": 0.0, "longrepr": "",
                                              "message": "", "categories": [], "reports": []})
    config = _CONFIG[0]
    state["duration"] += float(report.duration or 0.0)
    if config is not None:
        category = _category(config, report)
        if category:
            state["categories"].append(category)
        if _LINK is not None and _LINK.full:
            state["reports"].append(_serialise(config, report))
    outcome = _outcome(report, state["outcome"])
    if outcome != state["outcome"]:
        state["outcome"] = outcome
        if report.failed or report.skipped:
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                state["longrepr"] = f"{longrepr[0]}:{longrepr[1]}: {longrepr[2]}"
            else:
                state["longrepr"] = report.longreprtext
            state["message"] = _message(report)
            if outcome == "error":
                state["message"] = f"error at {report.when}: {state['message']}"


_CONFIG: list[pytest.Config | None] = [None]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    _CONFIG[0] = session.config


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    state = _STATE.pop(nodeid, None)
    if state is not None and _LINK is not None:
        _LINK.send({"r": nodeid, **state})


@pytest.hookimpl(trylast=True)  # after the runner's final teardown and junitxml's file
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _LINK is not None:
        _LINK.send({"finished": int(exitstatus)})

"""The pytest plugin every shard subprocess loads (``-p _caelum_shard_plugin``).

It runs inside the *user's* Python (maybe another venv, ``--python``), so it imports nothing
from caelum: the file is copied next to the unpacked snapshot and put on ``PYTHONPATH``.

Why it exists: JUnit XML is written only when a pytest session ends, so a shard whose
interpreter dies (``os._exit``, a segfault) or hangs loses it. The plugin appends one JSON line
per event to ``$CAELUM_SHARD_EVENTS`` and flushes it at once:

* ``{"collected": [nodeid, ...]}`` after collection;
* ``{"start": nodeid}`` before a test's setup (the last unmatched one is the test that crashed
  or hung);
* ``{"report": {...}}`` when a test has finished all its phases (outcome, duration, traceback);
* ``{"finished": exitstatus}`` when the session ends normally.

It also records each test's node id as the JUnit property ``caelum_nodeid`` so merged JUnit
testcases map back to node ids unambiguously.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

_STATE: dict[str, dict[str, Any]] = {}


def _write(record: dict[str, Any]) -> None:
    path = os.environ.get("CAELUM_SHARD_EVENTS")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def pytest_collection_finish(session: pytest.Session) -> None:
    _write({"collected": [item.nodeid for item in session.items]})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:  # at collection, so tests skipped before setup carry it too
        item.user_properties.append(("caelum_nodeid", item.nodeid))


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _STATE[nodeid] = {"nodeid": nodeid, "outcome": "passed", "duration": 0.0,
                      "longrepr": "", "message": ""}
    _write({"start": nodeid, "t": time.time()})


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # skip: (file, line, reason)
        return str(report.longrepr[2])
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    return ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    state = _STATE.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed",
                                              "duration": 0.0, "longrepr": "", "message": ""})
    state["duration"] += float(report.duration or 0.0)
    wasxfail = hasattr(report, "wasxfail")
    outcome = state["outcome"]
    if report.when == "call":
        if wasxfail and report.skipped:
            outcome = "xfailed"
        elif wasxfail and report.passed:
            outcome = "xpassed"
        elif report.failed:
            outcome = "failed"
        elif report.skipped:
            outcome = "skipped"
    elif report.failed:  # setup or teardown error
        outcome = "error"
    elif report.skipped and report.when == "setup":
        outcome = "xfailed" if wasxfail else "skipped"
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


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    state = _STATE.pop(nodeid, None)
    if state is not None:
        _write({"report": state})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _write({"finished": int(exitstatus)})

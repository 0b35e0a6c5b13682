"""``pytest --caelum [ADDRESS]``: the caelum test engine behind the user's own pytest command.

Registered through the ``pytest11`` entry point (name ``caelum``), the way pytest-xdist's
``-n`` is. Without ``--caelum`` this module adds its options and does nothing else; it imports
only pytest and the standard library (the engine, Dask and distributed are imported with
``--caelum`` only).

With ``--caelum`` a controller (modelled on xdist's ``DSession``) takes over the session:

* ``pytest_collection`` collects nothing here; the long-lived pytest sessions on the cluster's
  workers collect (with the same arguments, ini file and conftests, so ``-k``/``-m`` apply);
* ``pytest_runtestloop`` runs :func:`caelum_dask.testing.runner.run_tests` with
  ``full_reports`` and replays what the sessions send into this pytest's own hooks:
  collection reports to ``pytest_collectreport``, each test's reports to
  ``pytest_runtest_logstart``/``logreport``/``logfinish``. The terminal report, ``--junitxml``,
  ``--durations``, the ``-r`` summary, the last-failed cache and the exit code are pytest's own;
* a test that crashed or hung its interpreter has no pytest reports: one failed report naming
  the crash is made for it (as xdist's ``handle_crashitem`` does).

``caelum test PATH -- ARGS`` is the command-line twin; both run the same engine.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from caelum_dask.progress import ProgressEvent
    from caelum_dask.testing.result import TestRunResult

#: the user property the worker-side session plugin adds to every test (caelum's own)
_SESSION_PROPERTY = "caelum_nodeid"
#: the plugin a worker-side session loads: a pytest with it is a session, never a controller
_SESSION_PLUGIN = "_caelum_session"
#: the folder a worker unpacks a project snapshot into is named by its hash
_DIGEST = re.compile(r"[0-9a-f]{16,64}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):\d+")
#: our options that take a value (they are dropped from the arguments the sessions get)
_VALUED = ("--caelum-sessions", "--caelum-dist")
#: pytest's short options with a value that the engine knows (left as the user wrote them)
_KNOWN_SHORT = frozenset({"-k", "-m", "-p", "-c", "-o", "-W", "-r"})


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("caelum", "run the tests on a caelum/Dask cluster")
    group.addoption(
        "--caelum", action="store", nargs="?", const="", default=None, metavar="ADDRESS",
        help="Run the tests on a caelum cluster: long-lived pytest sessions on its workers fed "
             "from one queue. ADDRESS is the scheduler (e.g. --caelum=tcp://10.0.0.5:8786); without "
             "one: CAELUM_SCHEDULER, the config key caelum.scheduler-address, else an embedded "
             "cluster on this machine.")
    group.addoption(
        "--caelum-sessions", action="store", default=None, metavar="auto|N",
        help="With --caelum: how many pytest sessions (default: caelum.testing.sessions, auto = one "
             "per worker thread).")
    group.addoption(
        "--caelum-dist", action="store", default=None, choices=("load", "loadfile", "loadscope"),
        help="With --caelum: load (tests spread freely), loadfile (a file's tests stay in one "
             "session) or loadscope (a module's or class's tests stay together). Default: "
             "caelum.testing.dist (load).")


@pytest.hookimpl(trylast=True)  # after the terminal reporter is configured (as xdist does)
def pytest_configure(config: pytest.Config) -> None:
    value = config.getoption("caelum", None)
    if value is None or config.pluginmanager.has_plugin(_SESSION_PLUGIN):
        return  # no --caelum, or this pytest is itself one of a run's sessions (ini addopts)
    if config.getoption("collectonly", False):
        return  # nothing runs: collect here, as a plain pytest does
    if config.getoption("usepdb", False) or config.getoption("trace", False):
        raise pytest.UsageError("--caelum cannot run --pdb/--trace: the tests run on other machines")
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") not in ("no", None):
        raise pytest.UsageError("--caelum and pytest-xdist's -n/--dist do not mix; give one of them "
                                "(-n 0 or -p no:xdist turns xdist off)")
    sessions = str(config.getoption("caelum_sessions") or "auto")
    if sessions != "auto" and not (sessions.isdigit() and int(sessions) > 0):
        raise pytest.UsageError(f"--caelum-sessions must be 'auto' or a positive number (got {sessions!r})")
    address, path = _split_value(value)
    args = session_args(_addopts_env() + list(config.invocation_params.args),
                        list(config.getoption("file_or_dir", None) or ()), keep_value=path is not None)
    controller = CaelumController(config, address, args)
    config.pluginmanager.register(controller, "caelum-controller")
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if terminal is not None:
        terminal.showfspath = False  # results arrive in completion order, not file by file


def _split_value(value: str) -> tuple[str | None, str | None]:
    """``(address, path)``: ``--caelum X`` takes X as its value even when X is a test path."""
    if not value:
        return None, None
    if "://" in value or (_HOST_PORT.fullmatch(value) and not os.path.exists(value)):
        return value, None
    return None, value


def _addopts_env() -> list[str]:
    """``PYTEST_ADDOPTS``: this pytest applied it, the workers' sessions do not see it."""
    import shlex

    return shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))


def session_args(args: list[str], positional: list[str] | None = None, keep_value: bool = False) -> list[str]:
    """The user's pytest arguments minus ours: what every session is started with.

    ``positional``: the test paths pytest parsed from ``args`` (``file_or_dir``). A word that
    follows an option and is not one of them is that option's value (a conftest's
    ``--flavour sweet``); it is glued to it (``--flavour=sweet``) so that the engine, which
    knows only pytest's own options, does not take it for a test path. ``keep_value``: the
    word after a bare ``--caelum`` is a test path, not an address.
    """
    pending = Counter(positional or ())
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        following = args[i + 1] if i + 1 < len(args) else None
        if arg == "--":
            out.extend(args[i:])
            break
        skip = _ours(arg, following, keep_value)
        if skip is None:
            glued = _glued(arg, following, pending)
            out.append(glued or arg)
            skip = 1 if glued else 0
            if not glued and pending[arg]:
                pending[arg] -= 1
        i += 1 + skip
    return out


def _ours(arg: str, following: str | None, keep_value: bool) -> int | None:
    """How many following words a caelum option takes with it; None: not one of ours."""
    name = arg.split("=", 1)[0]
    if arg == "--caelum":
        return 1 if following is not None and not following.startswith("-") and not keep_value else 0
    if name == "--caelum":
        return 0
    if name in _VALUED:
        return 0 if "=" in arg else 1
    return None


def _glued(arg: str, following: str | None, pending: Counter[str]) -> str | None:
    """``--opt value`` as ``--opt=value`` when ``value`` is not one of pytest's test paths."""
    if (arg.startswith("-") and arg != "-" and "=" not in arg and arg not in _KNOWN_SHORT
            and following is not None and not following.startswith("-") and not pending[following]):
        return f"{arg}={following}" if arg.startswith("--") else arg + following
    return None


class _Deselected:
    """Stands for a test deselected in the sessions (the terminal only counts them)."""

    __slots__ = ()


class CaelumController:
    """Runs the session's tests with caelum's engine and replays the results into pytest."""

    def __init__(self, config: pytest.Config, address: str | None, args: list[str]) -> None:
        self.config = config
        self.address = address
        self.args = args
        self.client: Any = None
        self.run_id = ""
        self.session: pytest.Session | None = None
        self.terminal = config.pluginmanager.getplugin("terminalreporter")
        self.collection_errors = 0
        self.root = Path(config.rootpath)
        try:  # where pytest runs in the snapshot: the invocation folder, relative to the rootdir
            workdir = Path(config.invocation_params.dir).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            raise pytest.UsageError(f"--caelum: run pytest inside its rootdir {self.root} (the folder "
                                    "shipped to the workers)") from None
        self.workdir = "" if workdir == "." else workdir
        self.rebased: dict[str, str] = {}  # a session's node id path -> ours
        self.local_paths: dict[str, str] = {}  # a path on a worker -> the same file here
        self.seen_collection = False
        self.replayed: set[str] = set()

    # -- pytest's hooks ------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Connect before anything runs: a bad address is a usage error, as a bad option is."""
        from caelum_dask.cluster import connect, resolve_address
        from caelum_dask.errors import CaelumError

        self.session = session
        target = resolve_address(self.address)
        self.line(f"caelum: scheduler {target}" if target else
                  "caelum: no scheduler given; starting an embedded cluster on this machine")
        try:
            self.client = connect(self.address)
        except CaelumError as exc:
            raise pytest.UsageError(f"--caelum: {exc}") from None

    @pytest.hookimpl
    def pytest_collection(self) -> bool:
        return True  # the sessions collect, on the workers

    @pytest.hookimpl
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        from caelum_dask.errors import CaelumError
        from caelum_dask.testing.runner import TestOptions, run_tests

        config = self.config
        options = TestOptions.from_config(
            shards=config.getoption("caelum_sessions"), dist=config.getoption("caelum_dist"),
            retry_failed=0, junit=None, pytest_args=list(self.args), record_durations=True,
            workdir=self.workdir, full_reports=True)
        try:
            result = run_tests(self.root, options, client=self.client, progress=self.on_event, listener=self)
        except CaelumError as exc:
            raise pytest.UsageError(f"--caelum: {exc}") from None
        self.run_id = result.run_id
        self._finish(session, result)
        return True

    @pytest.hookimpl
    def pytest_unconfigure(self) -> None:
        self.close()

    def close(self) -> None:
        """After pytest's own summary: let the sessions finish exiting, then let the cluster go."""
        client, self.client = self.client, None
        if client is not None:
            if self.run_id:
                from caelum_dask.testing.engine import settle

                settle(client, self.run_id)
            client.close()

    # -- the engine's listener (called in this thread, from SuiteRun's loop) ------------------
    def collected(self, platform: str, collection: dict[str, Any]) -> None:
        config = self.config
        self.seen_collection = True
        reports = [self._report(d) for d in collection.get("reports") or ()]
        if not reports:  # an engine that did not send pytest's own: rebuild the errors
            reports = [pytest.CollectReport(e["nodeid"], "failed", e["longrepr"], [])
                       for e in collection.get("errors") or ()]
        for report in reports:
            config.hook.pytest_collectreport(report=report)
        self.collection_errors = sum(1 for r in reports if r.failed)
        ids = collection.get("ids") or []
        deselected = int(collection.get("deselected") or 0)
        if deselected and self.terminal is not None:
            self.terminal.pytest_deselected([_Deselected() for _ in range(deselected)])
        assert self.session is not None
        self.session.testscollected = len(ids)
        where = f" on {collection['machine']}" if collection.get("machine") else ""
        self.line(f"caelum: collected {len(ids)} item{'s' if len(ids) != 1 else ''}"
                  + (f" / {deselected} deselected" if deselected else "")
                  + (f" / {self.collection_errors} error{'s' if self.collection_errors != 1 else ''}"
                     if self.collection_errors else "") + where)

    def result(self, platform: str, result: dict[str, Any], final: bool) -> None:
        if not final:
            return  # never with retry_failed=0; a retry's verdict would follow
        hook = self.config.hook
        nodeid = self._rebase(result["nodeid"])
        self.replayed.add(nodeid)
        reports = [self._report(d) for d in result.get("reports") or ()]
        if not reports:  # it crashed or hung its interpreter, or was lost with its worker
            reports = [self._crash_report(result)]
        location = tuple(reports[0].location)
        hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for report in reports:
            hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)

    def progress(self, progress: Any) -> None:
        """The listener's counts: not shown (pytest's own report shows each test as it comes)."""

    def on_event(self, event: ProgressEvent) -> None:
        """The run's status lines (``-v``)."""
        message = event.message
        if message and not message.startswith("[") and self.config.option.verbose > 0:
            self.line(f"caelum: {message}")

    # -- helpers --------------------------------------------------------------------------
    def line(self, text: str) -> None:
        if self.terminal is not None and self.config.option.verbose >= 0:
            self.terminal.write_line(text)

    def _report(self, data: dict[str, Any]) -> Any:
        report = self.config.hook.pytest_report_from_serializable(config=self.config, data=data)
        report.nodeid = self._rebase(report.nodeid)
        location = getattr(report, "location", None)
        if isinstance(report, pytest.TestReport) and location:  # a CollectReport's is derived
            report.location = (self._rebase(location[0]), *tuple(location)[1:])
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
            report.longrepr = (self._local_path(str(longrepr[0])), *longrepr[1:])
        props = getattr(report, "user_properties", None)
        if props:
            report.user_properties = [p for p in props if not (p and p[0] == _SESSION_PROPERTY)]
        return report

    def _rebase(self, nodeid: str) -> str:
        """A session's node id relative to this pytest's rootdir.

        Run from a subfolder, a session's rootdir may be that folder (an engine that starts its
        sessions with ``--rootdir .`` in the work folder): its ids then lack the folder's path.
        The local files tell which: the same snapshot is here.
        """
        path, sep, rest = nodeid.partition("::")
        if not self.workdir or not path:
            return nodeid
        if path not in self.rebased:
            inside = not (self.root / path).exists() and (self.root / self.workdir / path).exists()
            self.rebased[path] = f"{self.workdir}/{path}" if inside else path
        return self.rebased[path] + sep + rest

    def _local_path(self, path: str) -> str:
        """A path in a worker's unpacked snapshot (``…/<digest>/tests/x.py``) as the file here."""
        if path not in self.local_paths:
            local = path
            parts = Path(path).parts
            marks = [i for i, part in enumerate(parts) if _DIGEST.fullmatch(part)]
            if marks and Path(path).is_absolute():
                candidate = self.root.joinpath(*parts[marks[-1] + 1:])
                if candidate.exists():
                    local = str(candidate)
            self.local_paths[path] = local
        return self.local_paths[path]

    def _crash_report(self, result: dict[str, Any]) -> pytest.TestReport:
        nodeid = self._rebase(result["nodeid"])
        path = nodeid.split("::")[0]
        where = f" on {result['machine']}" if result.get("machine") else ""
        text = str(result.get("longrepr") or result.get("message") or "no report from the session")
        domain = nodeid.partition("::")[2].replace("::", ".") or path
        report = pytest.TestReport(nodeid, (path, None, domain), {}, "failed",
                                   f"caelum{where}: {text}", "call", [],
                                   duration=float(result.get("duration") or 0.0))
        return report

    def _finish(self, session: pytest.Session, result: TestRunResult) -> None:
        """End as pytest's own ``pytest_runtestloop`` would (``-x``, collection errors, …)."""
        platforms = result.platforms
        if platforms and not self.seen_collection:  # no session could collect: show why
            self._no_collection(session, platforms[0]["collection"])
        # tests no session was left to run never reached the listener; after -x/--maxfail the
        # tests still queued are not run (pytest does not report them either), not lost
        lost = [] if result.stopped else [t for t in result.tests if t.get("lost")]
        for test in lost:
            if self._rebase(test["nodeid"]) not in self.replayed:
                self.result(platforms[0]["platform"], test, True)
        self._raise_like_pytest(session, result.stopped, lost)

    def _no_collection(self, session: pytest.Session, collection: dict[str, Any]) -> None:
        if self.terminal is not None:
            self.terminal.write_sep("=", "caelum: no pytest session could collect", red=True)
            self.terminal.write_line(str(collection.get("output") or "").rstrip())
        raise session.Interrupted(f"caelum: no pytest session could collect the tests "
                                  f"(exit code {collection.get('rc')})")

    def _raise_like_pytest(self, session: pytest.Session, stopped: str | None, lost: list[Any]) -> None:
        if self.collection_errors and not self.config.option.continue_on_collection_errors:
            n = self.collection_errors
            raise session.Interrupted(f"{n} error{'s' if n != 1 else ''} during collection")
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if stopped and not session.shouldstop:
            session.shouldstop = stopped
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        if lost:
            raise session.Interrupted(f"caelum: {len(lost)} test{'s' if len(lost) != 1 else ''} lost "
                                      "with their workers")

"""The remote half of ``caelum up``/``caelum down``: the host's Python runs this file's source.

The launcher sends this module's source with ``python -c`` (see :func:`caelum_dask.deploy.ssh.helper`),
so the host does not import caelum-dask and Dask just to manage a pid file;
``python -m caelum_dask.deploy.remote start|stop|state …`` does the same by hand.

Why this exists: Dask's ``SSHCluster`` runs each scheduler/worker as a child of its SSH
channel and kills it when the cluster object closes (``Process.close`` and a
``weakref.finalize`` both call ``proc.kill()``, and ``SpecCluster.close`` terminates the
scheduler), so a cluster started that way dies with the command that started it. ``caelum up``
must leave a cluster running after it exits, so the launcher (see :mod:`.launcher`, built on
Dask's SSH spec classes) runs this small helper over the same asyncssh connection instead: it
starts the real command in a new session (``setsid``, no controlling terminal, stdin from
/dev/null, output to a log file) with a pid file in the run folder, waits until the process
prints Dask's own "started" line, and exits. ``stop`` ends the whole process group (a nanny
and its worker processes included) and removes the pid file.

Only the standard library and psutil (a caelum-dask dependency) are used, so the helper runs on
any host where caelum-dask is installed. Every command prints one JSON object on stdout.

Run folder layout (``run_dir`` in the cluster file)::

    RUN_DIR/NAME.pid     {"pid", "create_time", "argv", "started"}
    RUN_DIR/NAME.log     the process's stdout and stderr
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil


def _files(run_dir: str, name: str) -> tuple[Path, Path]:
    folder = Path(os.path.expanduser(run_dir))
    return folder / f"{name}.pid", folder / f"{name}.log"


def read_pidfile(pidfile: Path) -> dict[str, Any] | None:
    """The pid file's record when its process still runs, else None (a stale file is removed)."""
    try:
        record = json.loads(pidfile.read_text())
        proc = psutil.Process(int(record["pid"]))
        alive = abs(proc.create_time() - float(record["create_time"])) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE
    except (OSError, ValueError, KeyError, psutil.Error):
        alive = False
        record = None
    if not alive:
        pidfile.unlink(missing_ok=True)
        return None
    return record


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(pgid: int, timeout: float) -> bool:
    """SIGTERM the group, wait (polling) until it is gone, SIGKILL what is left; True if it was running."""
    if not group_members(pgid):
        return False
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and group_members(pgid):
        time.sleep(0.1)
    if group_members(pgid):
        _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.1)
    return True


def start(run_dir: str, name: str, marker: str, count: int, timeout: float, argv: list[str]) -> dict[str, Any]:
    """Start ``argv`` detached unless NAME already runs; wait for ``count`` ``marker`` lines in its log."""
    pidfile, logfile = _files(run_dir, name)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    running = read_pidfile(pidfile)
    if running is not None:
        return {"state": "already-running", "pid": running["pid"], "lines": _marker_lines(logfile, marker)}
    with open(logfile, "w") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: survives the SSH session, own process group
            cwd=pidfile.parent,
            close_fds=True,
        )
    record = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "argv": argv,
              "started": time.time()}
    pidfile.write_text(json.dumps(record))
    deadline = time.monotonic() + timeout
    while True:
        lines = _marker_lines(logfile, marker)
        if len(lines) >= count:
            return {"state": "started", "pid": proc.pid, "lines": lines}
        if proc.poll() is not None:
            pidfile.unlink(missing_ok=True)
            return {"state": "failed", "pid": proc.pid, "reason": f"exited with status {proc.returncode}",
                    "log": _tail(logfile)}
        if time.monotonic() > deadline:
            stop_group(proc.pid, 10)
            pidfile.unlink(missing_ok=True)
            return {"state": "failed", "pid": proc.pid,
                    "reason": f"no {marker!r} line after {timeout:g}s", "log": _tail(logfile)}
        time.sleep(0.1)


def stop(run_dir: str, name: str, timeout: float) -> dict[str, Any]:
    """End NAME's process group and remove its pid file."""
    pidfile, _ = _files(run_dir, name)
    record = read_pidfile(pidfile)
    if record is None:
        return {"state": "not-running"}
    stop_group(int(record["pid"]), timeout)
    pidfile.unlink(missing_ok=True)
    return {"state": "stopped", "pid": record["pid"]}


def state(run_dir: str, names: list[str]) -> dict[str, Any]:
    """Which of NAMES run now: ``{name: pid or null}``."""
    result = {}
    for name in names:
        record = read_pidfile(_files(run_dir, name)[0])
        result[name] = None if record is None else record["pid"]
    return result


def _marker_lines(logfile: Path, marker: str) -> list[str]:
    try:
        text = logfile.read_text(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if marker in line]


def _tail(logfile: Path, lines: int = 15) -> str:
    try:
        return "\n".join(logfile.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caelum_dask.deploy.remote")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start")
    p_start.add_argument("--run-dir", required=True)
    p_start.add_argument("--name", required=True)
    p_start.add_argument("--marker", required=True)
    p_start.add_argument("--count", type=int, default=1)
    p_start.add_argument("--timeout", type=float, default=60)
    p_start.add_argument("argv", nargs=argparse.REMAINDER)
    p_stop = sub.add_parser("stop")
    p_stop.add_argument("--run-dir", required=True)
    p_stop.add_argument("--name", required=True)
    p_stop.add_argument("--timeout", type=float, default=20)
    p_state = sub.add_parser("state")
    p_state.add_argument("--run-dir", required=True)
    p_state.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "start":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        result = start(args.run_dir, args.name, args.marker, args.count, args.timeout, command)
    elif args.command == "stop":
        result = stop(args.run_dir, args.name, args.timeout)
    else:
        result = state(args.run_dir, args.names)
    sys.stdout.write(json.dumps(result) + "\n")
    return 1 if result.get("state") == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())

"""Running one command on one host over SSH (asyncssh, as Dask's SSHCluster does).

The remote command line is built here: the cluster file's environment variables go in front
as ``env K=V …`` (no reliance on the server's ``AcceptEnv``), every word is shell-quoted, and
the configured Python runs the command, so the host finds the same interpreter and packages
the cluster file names.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caelum_dask.deploy import remote
from caelum_dask.deploy.schema import HostProcess

_REMOTE_SOURCE = Path(remote.__file__).read_text()


@dataclass
class Result:
    """What a remote command left: exit status and its output."""

    exit_status: int
    stdout: str
    stderr: str


class SSHFailure(Exception):
    """The host could not be reached or refused us; ``str()`` is one line."""


def helper(*args: str) -> list[str]:
    """Python arguments that run :mod:`caelum_dask.deploy.remote` on the host.

    The module's source is passed with ``-c`` (it needs only the standard library and
    psutil), so the host's Python does not import caelum-dask and Dask just to write a pid
    file: a ``caelum down`` of many hosts stays quick.
    """
    return ["-c", _REMOTE_SOURCE, *args]


def command_line(proc: HostProcess, argv: list[str]) -> str:
    """``env K=V … PYTHON ARGS…`` for a POSIX shell on the host."""
    words = ["env", *(f"{k}={v}" for k, v in sorted(proc.env.items())), proc.python, *argv]
    return " ".join(shlex.quote(w) for w in words)


async def connect(proc: HostProcess) -> Any:
    """An asyncssh connection to the process's host; :class:`SSHFailure` with one line otherwise."""
    import asyncssh

    options = proc.ssh.connect_options()
    try:
        return await asyncssh.connect(proc.host, **options)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SSHFailure(f"cannot connect over SSH to {proc.host}:{options['port']} ({text})") from None


async def run(connection: Any, command: str, timeout: float | None = None) -> Result:
    """Run a shell command on an open connection and collect its output."""
    import asyncssh

    try:
        completed = await connection.run(command, check=False, timeout=timeout)
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise SSHFailure(f"remote command failed ({exc})") from None
    return Result(
        exit_status=completed.exit_status if completed.exit_status is not None else -1,
        stdout=str(completed.stdout or ""),
        stderr=str(completed.stderr or ""),
    )

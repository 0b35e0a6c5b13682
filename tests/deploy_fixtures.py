"""A real OpenSSH server on a loopback port, for the deployment tests.

``sshd`` runs in the foreground (``-D``) with a generated host key and a generated user key in
``authorized_keys``, as the current user, listening on 127.0.0.1 only; the tests reach it with
asyncssh exactly as ``caelum up`` reaches a remote machine. Tests that need it are skipped with
the reason when ``/usr/sbin/sshd`` (package openssh-server) or ``ssh-keygen`` is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from harness import REPO

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SSHServer:
    port: int
    client_key: Path
    known_hosts: Path

    def ssh_options(self) -> dict[str, Any]:
        return {"port": self.port, "username": os.environ.get("USER") or _user(),
                "client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts)}


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _skip_reason() -> str | None:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing (apt-get install openssh-client)"
    return None


class SSHDUnavailable(Exception):
    """sshd is not installed or did not start; the message says why."""


@contextlib.contextmanager
def running_sshd(folder: Path) -> Iterator[SSHServer]:
    """Start sshd on 127.0.0.1:<free port> with keys generated in ``folder``; stop it on exit."""
    reason = _skip_reason()
    if reason:
        raise SSHDUnavailable(reason)
    host_key, client_key = folder / "host_key", folder / "client_key"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nUsePAM no\nStrictModes no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxSessions 50\nMaxStartups 50\n"
    )
    host_pub = Path(f"{host_key}.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    log = open(folder / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SSHDUnavailable(f"sshd did not start: {(folder / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)
        yield SSHServer(port=port, client_key=client_key, known_hosts=known_hosts)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """One sshd for the whole session (skipped, with the reason, where sshd is unavailable)."""
    try:
        with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except SSHDUnavailable as exc:
        pytest.skip(str(exc))


def cluster_file(path: Path, server: SSHServer, run_dir: Path, workers: list[dict[str, Any]],
                 scheduler_port: int | None = None, **extra: Any) -> Path:
    """Write a cluster file that deploys onto 127.0.0.1 through ``server`` with this Python."""
    data = {
        "name": "test",
        "python": sys.executable,
        "env": {"PYTHONPATH": str(REPO), "DASK_CAELUM__HOME": str(run_dir / "home")},
        "run_dir": str(run_dir),
        "join_timeout": 90,
        "ssh": server.ssh_options(),
        "scheduler": {"host": "127.0.0.1", "port": scheduler_port or free_port(),
                      "dashboard_address": f"127.0.0.1:{free_port()}"},
        "workers": workers,
        **extra,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def processes_under(run_dir: Path) -> list[psutil.Process]:
    """Live processes started for ``run_dir`` (their working directory is the run folder)."""
    found = []
    for proc in psutil.process_iter(["cwd", "status", "cmdline"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.info["cwd"] and Path(proc.info["cwd"]) == run_dir:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_all_under(run_dir: Path) -> None:
    """Teardown safety net: end whatever a failed test left running for ``run_dir``."""
    procs = processes_under(run_dir)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=15)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The cluster file's run folder; whatever still runs under it is killed at teardown (a
    safety net: the tests themselves assert that nothing is left)."""
    folder = tmp_path / "run"
    folder.mkdir()
    try:
        yield folder
    finally:
        kill_all_under(folder)

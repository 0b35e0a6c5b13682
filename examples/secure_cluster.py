"""A mutual-TLS caelum cluster on this machine, end to end (docs/security.md).

Run:  python examples/secure_cluster.py [CERT_DIR]

1. `caelum certs init` makes the cluster CA; `caelum certs issue` a certificate per machine
   (here three names on one machine: the scheduler, a worker and this client).
2. `caelum scheduler --tls` and `caelum worker --tls` start as subprocesses on 127.0.0.1.
3. This script connects with `caelum_dask.connect(address, tls=DIR)`, runs a computation,
   shows that a plain-tcp client is refused, and stops everything it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import caelum_dask


def caelum(*args: str) -> list[str]:
    return [sys.executable, "-m", "caelum_dask", *args]


def main(cert_dir: Path) -> None:
    subprocess.run(caelum("certs", "init", str(cert_dir)), check=True)
    for name in ("scheduler", "worker1", "client"):
        subprocess.run(caelum("certs", "issue", name, "--dir", str(cert_dir), "--host", "127.0.0.1"), check=True)

    logs = Path(tempfile.mkdtemp(prefix="caelum-secure-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=open(logs / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        return proc

    try:
        spawn("scheduler", caelum("scheduler", "--tls", str(cert_dir), "--tls-name", "scheduler",
                                  "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0"))
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline:
            match = re.search(r"Scheduler at:\s+(\S+)", (logs / "scheduler.log").read_text())
            address = match.group(1) if match else None
            time.sleep(0.2)
        if address is None:
            raise SystemExit(f"scheduler did not start; see {logs}/scheduler.log")
        print(f"scheduler at {address}")
        spawn("worker1", caelum("worker", address, "--tls", str(cert_dir), "--tls-name", "worker1",
                                "--nthreads", "1", "--", "--no-nanny", "--host", "127.0.0.1",
                                "--dashboard-address", "127.0.0.1:0"))

        with caelum_dask.connect(address, tls=cert_dir, tls_name="client") as client:
            client.wait_for_workers(1, timeout=60)
            futures = client.map(lambda x: x * x, range(100))
            total = client.submit(sum, futures).result()
            print(f"sum of squares over mutual TLS: {total}")
            for node in caelum_dask.machines(client):
                print(f"machine {node['id']} {node['status']} workers "
                      f"{[w['address'] for w in node['workers']]}")

        plain = "tcp://" + address.removeprefix("tls://")
        try:
            caelum_dask.connect(plain, timeout=5).close()
        except caelum_dask.CaelumError as exc:
            print(f"plain tcp refused: {exc}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="caelum-certs-")) / "tls")

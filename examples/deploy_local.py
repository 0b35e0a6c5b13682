"""Bring a cluster up from a cluster file, use it, and take it down again (Python API).

    python examples/deploy_local.py examples/cluster.yaml

does what ``caelum up examples/cluster.yaml`` + ``caelum down examples/cluster.yaml`` do, with
one task in between that asks for a GPU so it runs on the worker whose cluster file entry
declares ``resources: {GPU: 1}``. Edit the hosts in the cluster file first (every host needs
SSH access with your key and caelum-dask installed); tests/test_deploy.py runs this script
against a real sshd on 127.0.0.1. Prints one JSON object: what started and where the task ran.
"""

from __future__ import annotations

import json
import socket
import sys

from distributed import Client

from caelum_dask.deploy import down, load, up
from caelum_dask.deploy.preflight import client_security


def where() -> str:
    from distributed import get_worker

    return str(get_worker().name)


def main(path: str) -> None:
    spec = load(path)
    result = up(spec, progress=lambda event: print(f"up: {event.text()}", file=sys.stderr))
    try:
        with Client(result.scheduler, security=client_security(spec)) as client:
            ran_on = client.submit(where, resources={"GPU": 1}, pure=False).result(timeout=60)
            hostname = client.submit(socket.gethostname, pure=False).result(timeout=60)
    finally:
        stopped = down(spec, progress=lambda event: print(f"down: {event.text()}", file=sys.stderr))
    print(json.dumps({"scheduler": result.scheduler, "started": result.started, "workers": result.workers,
                      "gpu_task_ran_on": ran_on, "hostname": hostname, "down": stopped["processes"]}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/deploy_local.py CLUSTER_FILE")
    main(sys.argv[1])

"""Client side of the network-namespace test; runs inside the scheduler's namespace.

    python tests/netns_driver.py ADDRESS TLS_DIR VICTIM_NAME GO_FILE

Submits a plain Dask computation through caelum_dask.connect(tls=…), prints JSON lines on
stdout: {"victim_holds": n} once the victim worker holds finished results, then waits for
GO_FILE (the test creates it after cutting the victim's link), then gathers everything and
prints {"result", "expected", "holders"}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import caelum_dask

N_TASKS = 60


def main(address: str, tls: str, victim_name: str, go_file: str) -> None:
    with caelum_dask.connect(address, tls=tls, tls_name="client", timeout=20) as client:
        client.wait_for_workers(3, timeout=120)
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        victim = next(a for a, n in names.items() if n == victim_name)

        def work(x: int) -> int:
            time.sleep(0.2)
            return x * x

        futures = client.map(work, range(N_TASKS), pure=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            held = sum(victim in where for where in client.who_has(futures).values())
            if held >= 3:
                break
            time.sleep(0.05)
        print(json.dumps({"victim_holds": held}), flush=True)
        while not Path(go_file).exists():
            time.sleep(0.05)
        results = client.gather(futures)
        holders = sorted({names.get(a, a) for where in client.who_has(futures).values() for a in where})
        print(json.dumps({"result": sum(results), "expected": sum(x * x for x in range(N_TASKS)),
                          "exact": results == [x * x for x in range(N_TASKS)], "holders": holders}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])

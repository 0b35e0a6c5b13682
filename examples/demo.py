"""The `make demo` job: a caelum cluster on this machine, end to end.

Starts the embedded cluster (what every caelum command uses when no scheduler is given),
adds a second "machine" — a plain `dask worker --resources GPU=1` bound to 127.0.0.2, standing
in for a GPU box on the LAN — and shows what caelum adds to Dask: the machine registry,
resource-aware placement, the immediate error for a requirement nobody can meet, and the
cluster events. Then it runs the main job, the code-health workflow
(workflows/code_health.py: analysis -> tests -> BI report), on this repository.
Run it with `make demo` or `python examples/demo.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from distributed import get_worker

from caelum_dask import ResourceRequirements, UnsatisfiableRequirement, connect, machines
from caelum_dask.dashboard import pages_url


def where_am_i() -> str:
    """A task that reports the worker it ran on."""
    return get_worker().address


def start_gpu_box(scheduler: str) -> subprocess.Popen[bytes]:
    """A plain `dask worker` declaring one GPU, on a second loopback address."""
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--name", "gpu-box",
         "--host", "127.0.0.2", "--nthreads", "1", "--no-nanny", "--dashboard-address", "127.0.0.2:0",
         "--resources", "GPU=1", "--preload", "caelum_dask.worker"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


def section(title: str) -> None:
    print(f"\n== {title}")


REPO = Path(__file__).resolve().parent.parent
# A fast part of this repository's own suite, so the demo takes seconds, not minutes.
DEMO_TESTS = "tests/test_resources.py tests/test_requirements.py tests/test_dashboard_data.py -q"


def run_code_health(client) -> None:
    """The main job: workflows/code_health.py on this repository."""
    from caelum_dask.workflow import run_file

    section("the code-health workflow on this repository (caelum run workflows/code_health.py)")
    out = REPO / "demo-output" / "code-health"
    result = run_file(str(REPO / "workflows" / "code_health.py"), client=client,
                      params={"path": str(REPO), "pytest_args": DEMO_TESTS, "out": str(out)},
                      progress=lambda counts: None)
    print(f"run {result.run_id}: {result.state}; {result.computed} tasks computed, {result.cached} cached, "
          f"{result.failed} failed")
    if not result.ok:
        for name, error in (result.errors or {}).items():
            print(f"  {name}: {str(error).splitlines()[0] if error else ''}")
        return
    summary = result["summarise"]
    print(f"analysis: {summary['files']} files, {summary['functions']} functions, "
          f"mean cyclomatic complexity {summary['mean_complexity']}")
    for fn in summary["worst_functions"][:3]:
        print(f"    {fn['rank']} {fn['complexity']:>3}  {fn['path']}:{fn['lineno']} {fn['name']}")
    counts = summary["tests"]
    print(f"tests ({DEMO_TESTS.replace(' -q', '')}): {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped (sharded over the workers)")
    print(f"BI report: {summary['report']}/report.html (+ CSV, Parquet, report.xlsx); "
          + ", ".join(f"{k} {v}" for k, v in summary["tables"].items()))


def main() -> int:
    print("caelum demo: starting an embedded cluster on this machine (no scheduler given)")
    with connect() as client:
        gpu_box = start_gpu_box(client.scheduler.address)
        try:
            client.wait_for_workers(len(client.scheduler_info()["workers"]) + 1, timeout=120)
            section("machines (caelum status)")
            for node in machines(client):
                res = node["resources"]
                print(f"{node['hostname']}@{node['ip_address']}: {node['status']}, "
                      f"{res['cpu_cores']} cores, {res['memory_gb']} GiB, {len(node['workers'])} worker(s)")
                for w in node["workers"]:
                    print(f"    {w['address']}  " + " ".join(f"{k}={v:g}" for k, v in sorted(w["resources"].items())))

            section("a task that needs a GPU")
            req = ResourceRequirements(gpu_required=True)
            placed = client.submit(where_am_i, pure=False, **req.submit_kwargs(client)).result(timeout=60)
            print(f"ResourceRequirements(gpu_required=True) ran on {placed} (the worker advertising GPU=1)")

            section("a requirement no machine can meet")
            try:
                ResourceRequirements(gpus=4).submit_kwargs(client)
            except UnsatisfiableRequirement as exc:
                print(f"refused at once: {exc}")

            section("the GPU box leaves")
            os.killpg(gpu_box.pid, 9)
            gpu_box.wait()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(m["ip_address"] == "127.0.0.2" and m["status"] == "offline" for m in machines(client)):
                    break
                time.sleep(0.2)
            section("cluster events (caelum events --topic caelum.machines)")
            for _, message in client.get_events("caelum.machines"):
                print(json.dumps(message))

            run_code_health(client)

            section("dashboard")
            print(f"Dask dashboard: {client.dashboard_link}")
            print(f"caelum pages:   {pages_url(client.dashboard_link)}")
            print("(the cluster stops when this demo ends; run `caelum scheduler` for a lasting one)")
        finally:
            if gpu_box.poll() is None:
                os.killpg(gpu_box.pid, 9)
                gpu_box.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adaptive host groups: ``adaptive:`` in the cluster file, and the scheduler-side controller.

The schema tests are pure. The scaling test deploys onto 127.0.0.1 through a real OpenSSH server
(tests/deploy_fixtures.py), as tests/test_deploy.py does: ``caelum up`` starts the group's
``minimum`` worker, a burst of queued work makes the controller on the scheduler start more
workers over SSH (up to ``maximum``), and once the work is done and they have been idle for
``idle_after`` (2 s here) it retires them again, never below ``minimum``; every decision is a
``caelum.scaling`` event, and ``caelum down`` stops the controller before any process.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from caelum_dask.dashboard.data.machines import scaling_source
from caelum_dask.deploy import load, validate
from caelum_dask.deploy.adaptive import plugin_for
from caelum_dask.deploy.launcher import down_async, worker_argv
from caelum_dask.deploy.schema import json_schema
from caelum_dask.errors import InvalidInput
from caelum_dask.events import SCALING
from caelum_dask.progress import ProgressEvent

from deploy_fixtures import SSHServer, cluster_file, processes_under
from harness import run_caelum, wait_for

BASE: dict[str, Any] = {"scheduler": {"host": "10.0.0.5"}, "workers": [
    {"host": "10.0.0.6", "name": "fixed"},
    {"host": "10.0.0.7", "name": "burst", "nthreads": 2,
     "adaptive": {"minimum": 1, "maximum": 3, "idle-after": "2s", "interval": "500ms"}}]}


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def test_adaptive_entry_is_slots_started_up_to_minimum() -> None:
    spec = validate(_copy(BASE))
    burst = spec.workers[1]
    assert burst.adaptive is not None and burst.adaptive.idle_after == 2.0 and burst.adaptive.interval == 0.5
    assert [p.name for p in burst.slots()] == ["burst-0", "burst-1", "burst-2"]
    assert [p.name for p in spec.initial_workers()] == ["fixed", "burst-0"]
    assert spec.expected_workers() == ["fixed", "burst-0"]
    argv = worker_argv(spec, burst.slot(2))
    assert argv[argv.index("--name") + 1] == "burst-2" and argv[argv.index("--nworkers") + 1] == "1"
    assert argv[argv.index("--nthreads") + 1] == "2"
    plugin = plugin_for(spec)  # the file's interval travels with the plugin; the rest is Dask's default
    assert plugin.interval == 0.5 and plugin.target_duration > 0
    defaults = validate({**BASE, "workers": [{"host": "h", "adaptive": {"maximum": 2}}]}).workers[0].adaptive
    assert defaults is not None
    schema = json_schema()["$defs"]["AdaptiveOptions"]["properties"]
    assert schema["minimum"]["default"] == defaults.minimum == 0
    assert schema["idle_after"]["default"] == defaults.idle_after
    assert defaults.interval is None and defaults.target_duration is None
    assert "maximum" in json_schema()["$defs"]["AdaptiveOptions"]["required"]


@pytest.mark.parametrize(("adaptive", "extra", "message"), [
    ({"minimum": 4, "maximum": 3}, {}, "workers[1].adaptive: minimum (4) is above maximum (3)"),
    ({"minimum": 1}, {}, "workers[1].adaptive.maximum: missing (required)"),
    ({"maximum": 2, "idle_after": "soon"}, {}, "workers[1].adaptive.idle_after: 'soon' is not a duration"),
    ({"maximum": 2, "idle_after": 0}, {}, "workers[1].adaptive.idle_after: must be more than 0"),
    ({"maximum": 2, "step": 1}, {}, "workers[1].adaptive.step: unknown key (known keys: idle_after, interval, "
                                    "maximum, minimum, target_duration)"),
    ({"maximum": 2}, {"nworkers": 2}, "workers[1].nworkers: an adaptive entry runs one worker process per slot"),
    ({"maximum": 2}, {"worker_port": 9000}, "workers[1].worker_port: the 2 slots of an adaptive entry cannot share"),
    ({"maximum": 2}, {"name": "fixed"}, "workers[1].name: 'fixed' is already used by workers[0]"),
])
def test_bad_adaptive_keys_are_named(adaptive: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    data = _copy(BASE)
    data["workers"][1] = {"host": "10.0.0.7", "name": "burst", **extra, "adaptive": adaptive}
    with pytest.raises(InvalidInput) as info:
        validate(data, source="c.yaml")
    assert f"c.yaml: {message}" in str(info.value), str(info.value)


def test_slot_names_may_not_clash_with_fixed_workers() -> None:
    data = _copy(BASE)
    data["workers"][0]["name"] = "burst-2"
    with pytest.raises(InvalidInput, match=r"workers\[1\]\.name: its adaptive slot 'burst-2' is already used by "
                                           r"workers\[0\]"):
        validate(data)


def test_scaling_rows_newest_first() -> None:
    messages = [{"event": "scale-up", "time": "2026-01-01T10:00:00.000+00:00", "workers": ["b-1", "b-2"],
                 "hosts": ["h", "h"], "target": 3},
                {"event": "retired", "time": "2026-01-01T10:00:09.500+00:00", "worker": "b-2", "host": "h"}]
    rows = scaling_source(messages)
    assert rows["event"] == ["retired", "scale-up"] and rows["time"] == ["10:00:09.500", "10:00:00.000"]
    assert rows["workers"] == ["b-2", "b-1, b-2"] and rows["hosts"] == ["h", "h"]
    assert rows["detail"] == ["", "target=3"]


# -- over a real sshd ---------------------------------------------------------------------------

def _names(client: Client) -> set[str]:
    return {str(w["name"]) for w in client.scheduler_info(n_workers=-1)["workers"].values()}


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.timeout(480)
def test_adaptive_scale_up_and_down_over_ssh(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, workers=[
        {"host": "127.0.0.1", "name": "burst", "nthreads": 1,
         "adaptive": {"minimum": 1, "maximum": 3, "idle_after": "2s", "interval": "500ms",
                      "target_duration": "1s"}}])
    up = run_caelum("up", str(path), "--json", timeout=240)
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert sorted(report["started"]) == ["burst-0", "scheduler"] and report["workers"] == ["burst-0"]
    assert "adaptive: controller started on the scheduler for burst" in up.stderr

    with Client(report["scheduler"], timeout="30s") as client:
        assert _names(client) == {"burst-0"}
        # a burst of queued work: 40 tasks of 0.5 s on one 1-thread worker
        futures = client.map(time.sleep, [0.5] * 40, pure=False)  # a library function: no test code to ship
        grown = wait_for(lambda: _names(client) - {"burst-0"}, timeout=180, interval=0.2,
                         what="a second worker started over SSH")
        assert grown <= {"burst-1", "burst-2"}
        assert client.gather(futures) == [None] * 40
        del futures
        # idle for idle_after: the extra workers are retired, burst-0 (the minimum) stays
        wait_for(lambda: _names(client) == {"burst-0"}, timeout=180, interval=0.2, what="back at the minimum")
        pids = {p.stem for p in run_dir.glob("*.pid")}
        wait_for(lambda: {p.stem for p in run_dir.glob("*.pid")} == {"scheduler", "burst-0"}, timeout=180,
                 interval=0.2, what="the retired workers' processes stopped")
        scaling = [message for _, message in client.get_events(SCALING)]

    kinds = [m["event"] for m in scaling]
    assert kinds[0] == "controller-started" and "scale-up" in kinds and "started" in kinds
    up_event = next(m for m in scaling if m["event"] == "scale-up")
    assert set(up_event["workers"]) <= {"burst-1", "burst-2"} and up_event["hosts"][0] == "127.0.0.1"
    assert up_event["queued"] > 0 and up_event["target"] >= 2
    started = {m["worker"] for m in scaling if m["event"] == "started"}
    retired = {m["worker"] for m in scaling if m["event"] == "retired"}
    down_workers = {w for m in scaling if m["event"] == "scale-down" for w in m["workers"]}
    assert grown <= started and retired == started == down_workers and "burst-0" not in retired
    assert all(seconds >= 2 for m in scaling if m["event"] == "scale-down" for seconds in m["idle_seconds"].values())
    assert pids >= {"scheduler", "burst-0"}
    rows = scaling_source(scaling)  # what the machines page shows
    assert rows["event"][0] == kinds[-1] and "scale-up" in rows["event"]

    # `caelum down` stops the controller before it stops any process
    notes: list[ProgressEvent] = []
    result = asyncio.run(down_async(load(path), progress=notes.append))
    assert result["processes"] == {"burst-0": "stopped", "scheduler": "stopped"}
    first_counted = next(i for i, e in enumerate(notes) if e.counted)
    assert any(e.message == "adaptive: controller stopped" for e in notes[:first_counted]), [e.message for e in notes]
    assert processes_under(run_dir) == [] and not list(run_dir.glob("*.pid"))


def test_machines_page_shows_the_scaling_events() -> None:
    """The dashboard's Machines page reads caelum.scaling from the scheduler's event log."""
    from distributed import LocalCluster

    from caelum_dask import events
    from caelum_dask.dashboard.pages import build

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None, scheduler_port=0) as cluster:
        page = build("machines", cluster.scheduler, "", {})
        assert page.scaling_source.data["event"] == []
        events.emit(SCALING, "scale-up", sink=cluster.scheduler, target=2, workers=["burst-1"], hosts=["h"])
        events.emit(SCALING, "started", sink=cluster.scheduler, worker="burst-1", host="h", seconds=3.2)
        page.update()
        assert page.scaling_source.data["event"] == ["started", "scale-up"]
        assert page.scaling_source.data["workers"] == ["burst-1", "burst-1"]
        assert page.scaling_source.data["detail"] == ["seconds=3.2", "target=2"]

"""Owner-aware desktop workers (caelum_dask/desktop.py): real processes only.

"The owner" is a real CPU-burning process started (and killed) by the test. The desktop worker
counts only processes whose command line carries the test's own marker (``--owner-match``), so
whatever else this shared machine runs never looks like the owner.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import get_worker

from caelum_dask import machines
from caelum_dask.desktop import OwnerSampler, OwnerWatch, options_from_cli
from caelum_dask.errors import InvalidInput

from harness import run_caelum, wait_for

pytestmark = pytest.mark.timeout(600)


def _owner_argv(marker: str) -> list[str]:
    return [sys.executable, "-c", f"while True: pass  # {marker}"]


@pytest.fixture
def owner_marker() -> str:
    return f"caelum-test-owner-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def owner(owner_marker: str) -> Iterator[dict[str, subprocess.Popen[bytes] | None]]:
    """Start the owner's CPU burner with ``start()``; it never outlives the test."""
    held: dict[str, subprocess.Popen[bytes] | None] = {"proc": None}
    try:
        yield held
    finally:
        proc = held["proc"]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _start_owner(held: dict[str, subprocess.Popen[bytes] | None], marker: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(_owner_argv(marker))
    held["proc"] = proc
    return proc


def _stop_owner(held: dict[str, subprocess.Popen[bytes] | None]) -> None:
    proc = held["proc"]
    assert proc is not None
    proc.kill()
    proc.wait(timeout=30)
    held["proc"] = None


# -- the pieces ---------------------------------------------------------------------------------
def test_owner_watch_is_active_after_a_busy_streak_and_away_after_a_quiet_one() -> None:
    watch = OwnerWatch(owner_cpu=0.5, active_after=2.0, away_after=5.0)
    assert not watch.update(0.0, 0.9)  # busy, not yet for long
    assert not watch.update(1.0, 0.1)  # a dip breaks the streak
    assert not watch.update(2.0, 0.9)
    assert not watch.update(3.0, 0.9)
    assert watch.update(4.0, 0.9)  # busy for 2 s
    assert watch.update(5.0, 0.0)  # quiet, not long enough
    assert watch.update(9.0, 0.0)
    assert not watch.update(10.0, 0.0)  # quiet for 5 s: away
    # keyboard/mouse input within active-after makes the owner active at once, and keeps them
    assert watch.update(11.0, 0.0, input_idle=0.5)
    assert watch.update(17.0, 0.0, input_idle=4.0)  # CPU quiet long enough, input not
    assert not watch.update(18.0, 0.0, input_idle=6.0)


def test_options_come_from_config_and_flags_and_bad_values_get_one_line() -> None:
    options = options_from_cli()
    assert options.policy == "always" and options.active_after == 2.0 and options.away_after == 300.0
    given = options_from_cli(policy="desktop", active_after="1s", away_after="250ms", owner_cpu=0.1)
    assert (given.active_after, given.away_after, given.owner_cpu) == (1.0, 0.25, 0.1)
    for bad, words in [({"owner_cpu": 1.0}, "only with --policy desktop"),
                       ({"policy": "desktop", "owner_cpu": -1.0}, "--owner-cpu must be more than 0"),
                       ({"policy": "desktop", "grace": "soon"}, "--grace must be a duration"),
                       ({"policy": "desktop", "owner_match": "("}, "--owner-match is not a regular expression")]:
        with pytest.raises(InvalidInput, match=words):
            options_from_cli(**bad)


def test_cli_refuses_thresholds_without_the_desktop_policy() -> None:
    done = run_caelum("worker", "tcp://127.0.0.1:1", "--owner-cpu", "0.3", timeout=120)
    assert done.returncode != 0
    assert "--owner-cpu: only with --policy desktop" in done.stderr


def test_sampler_sees_the_owner_and_not_its_own_tree(owner, owner_marker: str) -> None:
    # "the worker" is another process here, so the burner this test starts is the owner's
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        sampler = OwnerSampler(match=owner_marker, root=worker.pid, marker="")
        assert sampler.sample() == 0.0  # the baseline
        _start_owner(owner, owner_marker)
        assert wait_for(lambda: sampler.sample() > 0.05, timeout=60, interval=0.5, what="owner CPU seen")
        _stop_owner(owner)
        sampler.sample()
        assert sampler.sample() == 0.0
    finally:
        worker.kill()
        worker.wait(timeout=30)
    # the same burner inside the sampler's own tree (a child of this process) is not the owner
    mine = OwnerSampler(match=owner_marker, marker="")
    mine.sample()
    _start_owner(owner, owner_marker)  # a child of this process: excluded
    time.sleep(1.0)  # let it burn a measurable while (this is no assertion about time)
    assert mine.sample() == 0.0


# -- the whole story, with real processes --------------------------------------------------------
def record(name: str, log: str, seconds: float = 0.0) -> str:
    """A task that leaves a line per computation (nothing may be computed twice)."""
    address = get_worker().address
    with open(log, "a") as out:
        out.write(f"start {name} {address}\n")
    if seconds:
        time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {name} {address}\n")
    return f"{name}:{address}"


def _lines(log: Path, kind: str) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(name, address) for what, name, address in rows if what == kind]


def _node(client, host: str) -> dict | None:
    return next((n for n in machines(client) if n["ip_address"] == host), None)


def _desk_workers(client) -> list[str]:
    return [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "desk"]


def _events(client, name: str) -> list[dict]:
    return [msg for _, msg in client.get_events("caelum.machines") if msg["event"] == name]


def _start_keeper_and_desk(cluster, owner_marker: str, *, grace: str) -> None:
    # another machine (another loopback address) that stays and receives the results
    cluster._spawn("worker-keeper", [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address,
                                     "--name", "keeper", "--host", "127.0.0.2", "--nthreads", "2", "--no-nanny",
                                     "--dashboard-address", "127.0.0.2:0", "--preload", "caelum_dask.worker"])
    cluster._spawn("worker-desk", [sys.executable, "-m", "caelum_dask", "worker", cluster.address, "--name", "desk",
                                   "--nthreads", "2", "--policy", "desktop", "--owner-cpu", "0.05",
                                   "--active-after", "1s", "--away-after", "2s", "--grace", grace,
                                   "--sample-interval", "250ms", "--owner-match", owner_marker,
                                   "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"])


def _check_closed_to_new_tasks(client, cluster, log: Path) -> None:
    """Owner-active everywhere it is shown, and new work goes elsewhere though it has a free thread."""
    wait_for(lambda: (_node(client, "127.0.0.1") or {}).get("status") == "owner-active", timeout=120,
             what="the machine to show owner-active")
    later = [client.submit(record, f"later{i}", str(log), key=f"later{i}") for i in range(4)]
    assert [result.split(":")[0] for result in client.gather(later)] == [f"later{i}" for i in range(4)]
    ran_on = {address for name, address in _lines(log, "end") if name.startswith("later")}
    assert len(ran_on) == 1 and "127.0.0.2" in ran_on.pop()
    shown = run_caelum("status", "--scheduler", cluster.address, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "OWNER-ACTIVE" in shown.stdout


def _check_retired_with_results_moved(client, log: Path, desk: str, held: list, long) -> None:
    """The running task finished there (grace); the worker left; every result is elsewhere, once."""
    assert long.result(timeout=120) == f"long:{desk}"
    wait_for(lambda: desk not in client.scheduler_info(n_workers=-1)["workers"], timeout=120,
             what="the desktop worker to retire")
    assert client.gather(held) == [f"held{i}:{desk}" for i in range(4)]
    for future in [*held, long]:
        holders = client.who_has(future)[future.key]
        assert holders and desk not in holders
    started = [name for name, _ in _lines(log, "start")]
    assert len(started) == len(set(started)), f"computed twice: {started}"
    assert _node(client, "127.0.0.1")["status"] == "owner-active"  # still, while the owner works
    assert _events(client, "machine-owner-active")
    (retired,) = _events(client, "owner-retired")
    assert list(retired["retired"]) == [desk] and not retired["held"] and retired["moved"] == 5


@pytest.mark.slow
def test_desktop_worker_retires_for_the_owner_and_rejoins(process_cluster, owner, owner_marker: str,
                                                          tmp_path: Path) -> None:
    cluster = process_cluster
    cluster.start_scheduler()
    _start_keeper_and_desk(cluster, owner_marker, grace="120s")
    log = tmp_path / "computed.log"
    client = cluster.wait_for_workers(2)
    try:
        (desk,) = wait_for(lambda: _desk_workers(client), timeout=60, what="the desktop worker")
        held = [client.submit(record, f"held{i}", str(log), key=f"held{i}", workers=[desk]) for i in range(4)]
        client.gather(held)
        assert all(set(client.who_has(f)[f.key]) == {desk} for f in held)
        # a long task is running on the desktop worker when the owner comes back
        long = client.submit(record, "long", str(log), 6.0, key="long", workers=[desk])
        wait_for(lambda: ("long", desk) in _lines(log, "start"), timeout=60, what="the long task to start")

        _start_owner(owner, owner_marker)
        _check_closed_to_new_tasks(client, cluster, log)
        _check_retired_with_results_moved(client, log, desk, held, long)

        # the owner leaves: the machine joins again by itself and takes work
        _stop_owner(owner)
        (again,) = wait_for(lambda: _desk_workers(client), timeout=180, what="the desktop worker to rejoin")
        assert again != desk
        wait_for(lambda: (_node(client, "127.0.0.1") or {}).get("status") in ("online", "busy"), timeout=60,
                 what="the machine back online")
        back = client.submit(record, "back", str(log), key="back", workers=[again])
        assert back.result(timeout=120) == f"back:{again}"
        assert _events(client, "owner-away")
        assert client.gather(held) == [f"held{i}:{desk}" for i in range(4)]  # still intact
    finally:
        client.close()


@pytest.mark.slow
def test_a_desktop_worker_with_nowhere_to_move_its_results_keeps_them_closed(process_cluster, owner,
                                                                             owner_marker: str, tmp_path: Path) -> None:
    """The only worker: Dask cannot retire it without losing results, so it stays, closed, then reopens."""
    cluster = process_cluster
    cluster.start_scheduler()
    cluster._spawn("worker-desk", [sys.executable, "-m", "caelum_dask", "worker", cluster.address, "--name", "desk",
                                   "--nthreads", "1", "--policy", "desktop", "--owner-cpu", "0.05",
                                   "--active-after", "1s", "--away-after", "2s", "--grace", "0s",
                                   "--sample-interval", "250ms", "--owner-match", owner_marker,
                                   "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"])
    log = tmp_path / "computed.log"
    client = cluster.wait_for_workers(1)
    try:
        (desk,) = wait_for(lambda: _desk_workers(client), timeout=60, what="the desktop worker")
        held = [client.submit(record, f"held{i}", str(log), key=f"held{i}") for i in range(3)]
        client.gather(held)

        _start_owner(owner, owner_marker)
        blocked = wait_for(lambda: next((m for _, m in client.get_events("caelum.machines")
                                         if m["event"] == "owner-retire-blocked"), None),
                           timeout=120, what="the retirement to be refused")
        assert list(blocked["held"]) == [desk] and not blocked["retired"]
        info = client.scheduler_info(n_workers=-1)["workers"]
        assert info[desk]["status"] == "closing_gracefully"  # there, but takes no task
        assert _node(client, "127.0.0.1")["status"] == "owner-active"
        waiting = client.submit(record, "waiting", str(log), key="waiting")

        _stop_owner(owner)
        assert waiting.result(timeout=180) == f"waiting:{desk}"  # the same worker, open again
        assert client.gather(held) == [f"held{i}:{desk}" for i in range(3)]
        assert sorted(name for name, _ in _lines(log, "start")) == ["held0", "held1", "held2", "waiting"]
        events = [m["event"] for _, m in client.get_events("caelum.machines")]
        assert events.count("owner-retire-blocked") == 1 and "owner-away" in events
        assert _desk_workers(client) == [desk]
    finally:
        client.close()

"""The shared contract every engine uses: options from config, progress events, results as JSON."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import dask.config
import pytest

from caelum_dask.cli.progress import ProgressDisplay
from caelum_dask.options import ConfiguredOptions
from caelum_dask.progress import ProgressEvent, reporter, status
from caelum_dask.results import Result, jsonable


@dataclass
class _Opts(ConfiguredOptions):
    CONFIG: ClassVar[dict[str, str]] = {"retries": "llm.retries", "batch": "analysis.batch-bytes"}
    retries: int | None = None
    batch: int | None = None
    name: str = "x"


def test_options_take_what_was_given_and_the_callers_config_for_the_rest() -> None:
    assert _Opts.from_config(retries=7, batch=None) == _Opts(retries=7, batch=64000)
    with dask.config.set({"caelum.llm.retries": 5}):
        assert _Opts.from_config().retries == 5
    with pytest.raises(TypeError, match="no option bogus"):
        _Opts.from_config(bogus=1)


def test_progress_event_text_and_json() -> None:
    event = ProgressEvent(job="test", done=3, total=10, failed=1, running=2, eta=4.4)
    assert event.text() == "3/10 tests, 1 failed, 2 running, ETA 4s"
    assert json.loads(json.dumps(event.to_dict()))["total"] == 10
    assert status("analyze", "cache: 3 hits").text() == "cache: 3 hits"
    assert not status("analyze", "x").counted and ProgressEvent(job="workflow").counted
    said: list[ProgressEvent] = []
    reporter("deploy", said.append)("host a: up")
    assert said == [ProgressEvent(job="deploy", message="host a: up")]
    reporter("deploy", None)("nobody hears this")  # no callback: a no-op


def test_one_display_renders_every_engines_events() -> None:
    out = io.StringIO()
    clock = iter(range(0, 1000, 10)).__next__
    with ProgressDisplay("caelum analyze", noun="files", stream=out, live=False, interval=5, clock=clock) as show:
        show(status("analyze", "cache: 2 hits"))
        show(ProgressEvent(job="analyze", done=2, total=4))
        show(ProgressEvent(job="analyze", done=4, total=4, failed=1))
    lines = out.getvalue().splitlines()
    assert lines[0] == "caelum analyze: cache: 2 hits"
    assert "2/4 files, 0 failed" in lines[1]
    assert lines[-1].startswith("caelum analyze: 4/4 files, 1 failed in ")


@dataclass
class _Inner(Result):
    where: Path
    tags: set[str]


@dataclass
class _Outer(Result):
    inner: _Inner
    rows: list[_Inner] = field(default_factory=list)
    live: Any = field(default=None, metadata={"json": False})


def test_results_become_plain_json() -> None:
    inner = _Inner(Path("/a/b"), {"z", "a"})
    got = _Outer(inner, [inner], live=object()).to_dict()
    assert got == {"inner": {"where": "/a/b", "tags": ["a", "z"]}, "rows": [{"where": "/a/b", "tags": ["a", "z"]}]}
    assert json.loads(json.dumps(got)) == got
    assert jsonable({1: (Path("x"),)}) == {"1": ["x"]}


def test_topic_router_listens_again_and_drops_late_events_quietly(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from distributed import Client, LocalCluster

    from caelum_dask import events
    from harness import wait_for

    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        got: list[object] = []
        events.listen(client, "caelum.test-topic", "a", lambda e: got.append(e[1]))
        # the subscription travels on the batched stream, log_event on its own RPC: send until heard
        wait_for(lambda: client.log_event("caelum.test-topic", {"n": 1}) or got, timeout=30, interval=0.2)
        events.unlisten(client, "caelum.test-topic", "a")
        with caplog.at_level(logging.ERROR, logger="distributed.client"):
            client.log_event("caelum.test-topic", {"n": 2})  # may still reach this client: dropped
            client.run_on_scheduler(lambda: None)  # a round trip after it
        assert "No event handler known" not in caplog.text and {"n": 2} not in got
        events.listen(client, "caelum.test-topic", "b", lambda e: got.append(e[1]))
        wait_for(lambda: client.log_event("caelum.test-topic", {"n": 3}) or got[-1] == {"n": 3}, timeout=30,
                 interval=0.2)


def test_keys_put_the_step_in_dasks_prefix_and_the_run_in_the_token() -> None:
    from dask.utils import key_split

    from caelum_dask.keys import step_name, task_key

    assert [step_name(n) for n in ("analyse[3]", "inc-2", "load-data", "2fast", "ünï")] == \
        ["analyse", "inc", "load_data", "step_2fast", "n"]
    for run in ("20261201-101010-abcdef", "abcdefabcdef", "r1"):
        assert key_split(task_key("analyse[3]", run, 3)) == "analyse"
    assert task_key("x", "r", 1) != task_key("x", "r", 2) != task_key("x", "s", 1)

"""The cluster file as one pydantic declaration, and deploy progress as ProgressEvents.

No sshd is needed here: the schema tests are pure, and the progress tests point the cluster
file at a closed port on 127.0.0.1, so every SSH connection is really refused and every host
entry is counted as failed (tests/test_deploy.py covers the started / already-running lines
against a real sshd).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from harness import REPO, run_caelum

from caelum_dask.deploy import LaunchFailed, load, validate
from caelum_dask.deploy.launcher import UpResult, down_async
from caelum_dask.deploy.schema import json_schema
from caelum_dask.errors import InvalidInput
from caelum_dask.progress import ProgressEvent

BASE: dict[str, Any] = {"scheduler": {"host": "10.0.0.5"}, "workers": [{"host": "10.0.0.6"}, {"host": "10.0.0.7"}]}


def _copy(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def test_json_schema_comes_from_the_models_and_agrees_with_validation() -> None:
    schema = json_schema()
    checker = jsonschema.Draft202012Validator(schema)
    example = yaml.safe_load((REPO / "examples" / "cluster.yaml").read_text())
    assert list(checker.iter_errors(example)) == []
    load(REPO / "examples" / "cluster.yaml")  # and the models accept it too

    # the defaults the schema publishes are the ones a validated file gets
    spec = validate(_copy(BASE))
    top, defs = schema["properties"], schema["$defs"]
    assert top["name"]["default"] == spec.name == "caelum"
    assert top["join_timeout"]["default"] == spec.join_timeout
    assert top["python"]["default"] == spec.scheduler.python == spec.workers[0].python
    scheduler = defs["SchedulerEntry"]["properties"]
    assert scheduler["port"]["default"] == spec.scheduler.port == 8786
    assert scheduler["protocol"]["default"] == spec.scheduler.protocol
    assert scheduler["dashboard_address"]["default"] == spec.scheduler.dashboard_address
    assert defs["WorkerEntry"]["properties"]["nworkers"]["default"] == spec.workers[0].nworkers
    assert defs["SSHOptions"]["properties"]["port"]["default"] == spec.workers[0].ssh.port

    # what the models refuse, the schema refuses (for what a schema can say)
    for change in (lambda d: d["workers"][1].update(nthreads="two"),
                   lambda d: d["workers"][0].update(nthread=2),
                   lambda d: d["scheduler"].update(protocol="udp"),
                   lambda d: d["workers"][0].update(worker_port="9000-9010"),
                   lambda d: d["workers"][0].update(env={"1BAD": "x"}),
                   lambda d: d.update(ssh={"port": "22"}),
                   lambda d: d.update(workers=[])):
        data = _copy(BASE)
        change(data)
        assert list(checker.iter_errors(data)), data
        with pytest.raises(InvalidInput):
            validate(data)


def test_every_problem_is_one_line_naming_its_key(tmp_path: Path) -> None:
    data = _copy(BASE)
    data["ssh"] = {"port": 70000}
    data["workers"][0].update(nthreads=0, memory_limit="lots")
    data["workers"][1].update(resources={"GPU": "one"}, colour="blue")
    with pytest.raises(InvalidInput) as info:
        validate(data, source="c.yaml")
    lines = str(info.value).splitlines()
    assert lines == [
        "c.yaml: ssh.port: must be at most 65535, got 70000",
        "c.yaml: workers[0].nthreads: must be at least 1, got 0",
        "c.yaml: workers[0].memory_limit: 'lots' is not a size (e.g. 8GiB, 4000MB, 0.5 for half the memory, or auto)",
        "c.yaml: workers[1].resources.GPU: expected a number, got 'one'",
        "c.yaml: workers[1].colour: unknown key (known keys: adaptive, env, host, listen, memory_limit, name, nthreads, "
        "nworkers, python, resources, ssh, tls_dir, tls_name, worker_port)",
    ]
    # consistency problems are all reported too
    clash = _copy(BASE)
    for worker in clash["workers"]:
        worker["name"] = "scheduler"
    clash["scheduler"]["protocol"] = "wss"
    with pytest.raises(InvalidInput) as info:
        validate(clash, source="c.yaml")
    assert str(info.value).splitlines() == [
        "c.yaml: workers[0].name: 'scheduler' is already used by the scheduler; names must be unique",
        "c.yaml: workers[1].name: 'scheduler' is already used by the scheduler; names must be unique",
        "c.yaml: scheduler.protocol: wss needs tls_dir (a `caelum certs` folder)",
    ]
    # the CLI prints them all, without a traceback
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = run_caelum("up", str(path), "--check")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"caelum: error: {path}: ssh.port: must be at most 65535")
    assert f"{path}: workers[1].colour: unknown key" in proc.stderr


def test_inherited_values_and_explicit_nulls() -> None:
    spec = validate({**_copy(BASE), "tls_dir": "/tls", "python": "/py", "env": {"A": 1, "B": True},
                     "ssh": {"username": "me", "port": 2200},
                     "scheduler": {"host": "s", "protocol": "wss", "env": {"A": "x"}},
                     "workers": [{"host": "w", "python": "/other", "ssh": {"port": 23},
                                  "memory_limit": 1000, "worker_port": 9000}]})
    assert spec.scheduler_address == "wss://s:8786"
    assert spec.scheduler.env == {"A": "x", "B": "True"} and spec.workers[0].env == {"A": "1", "B": "True"}
    assert spec.workers[0].python == "/other" and spec.scheduler.python == "/py"
    assert spec.workers[0].ssh.connect_options() == {"port": 23, "connect_timeout": 10.0, "username": "me"}
    assert spec.workers[0].tls_dir == "/tls" and spec.run_dir == "~/.caelum/deploy/caelum"
    assert spec.workers[0].memory_limit == 1000 and spec.workers[0].worker_port == 9000
    with pytest.raises(InvalidInput, match=r"workers\[0\]\.tls_dir: TLS must be on for every host or none"):
        validate({**_copy(BASE), "tls_dir": "/tls", "scheduler": {"host": "s", "protocol": "tls"},
                  "workers": [{"host": "w", "tls_dir": None}]})


def _unreachable_file(tmp_path: Path) -> Path:
    """Three host entries on 127.0.0.1 whose SSH port refuses connections (nothing listens)."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({
        "name": "nowhere", "run_dir": str(tmp_path / "run"),
        "ssh": {"port": port, "known_hosts": None, "connect_timeout": 10},
        "scheduler": {"host": "127.0.0.1"},
        "workers": [{"host": "127.0.0.1", "name": "a"}, {"host": "127.0.0.1", "name": "b"}]}))
    return path


def test_down_counts_host_entries_as_progress_events(tmp_path: Path) -> None:
    spec = load(_unreachable_file(tmp_path))
    events: list[ProgressEvent] = []
    with pytest.raises(LaunchFailed, match="could not stop everything"):
        asyncio.run(down_async(spec, progress=events.append))
    counted = [e for e in events if e.counted]
    assert {e.job for e in events} == {"deploy"}
    assert [(e.done, e.total, e.failed) for e in counted] == [(1, 3, 1), (2, 3, 2), (3, 3, 3)]

    proc = run_caelum("down", str(tmp_path / "cluster.yaml"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "caelum: 3/3 hosts, 3 failed" in proc.stderr  # ProgressDisplay's final line
    assert "caelum: error: could not stop everything" in proc.stderr


def test_up_result_is_a_result_with_the_published_shape() -> None:
    result = UpResult(scheduler="tcp://h:8786", started=["scheduler"], preflight={"ok": True})
    assert result.to_dict() == {"scheduler": "tcp://h:8786", "dashboard": None, "started": ["scheduler"],
                                "already_running": [], "workers": [], "machines": [], "preflight": {"ok": True}}

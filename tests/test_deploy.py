"""`caelum up` / `caelum down` against a real OpenSSH server on 127.0.0.1 (tests/deploy_fixtures.py).

The remote side is this machine reached over real SSH, so the "remote" Python is this test's
interpreter (``python: sys.executable`` in the cluster file) and the worktree is found through
``PYTHONPATH`` in the cluster file's ``env`` — exactly how a user points caelum at a venv.

The version-mismatch case gives one worker entry a ``PYTHONPATH`` whose first folder holds
another (tiny) ``caelum_dask`` package with ``__version__ = "0.0.9"``: to the preflight, that
host genuinely has caelum-dask 0.0.9 installed, which is the situation the check exists for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from distributed import Client

import caelum_dask
from caelum_dask.deploy import load, validate
from caelum_dask.deploy.launcher import scheduler_argv, worker_argv
from caelum_dask.errors import InvalidInput

from deploy_fixtures import SSHServer, cluster_file, free_port, processes_under
from harness import REPO, run_caelum

BASE = {"scheduler": {"host": "10.0.0.5"}, "workers": [{"host": "10.0.0.6"}, {"host": "10.0.0.7"}]}


# -- cluster file -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["workers"][1].update(nthreads="two"), "workers[1].nthreads: expected an integer, got 'two'"),
        (lambda d: d["workers"][0].update(nthread=2), "workers[0].nthread: unknown key (known keys: adaptive, env, host"),
        (lambda d: d.pop("scheduler"), "scheduler: missing (required)"),
        (lambda d: d["workers"][0].pop("host"), "workers[0].host: missing (required)"),
        (lambda d: d["scheduler"].update(protocol="udp"), "scheduler.protocol: expected one of tcp, tls, ws, wss"),
        (lambda d: d["workers"][1].update(resources={"GPU": "one"}), "workers[1].resources.GPU: expected a number"),
        (lambda d: d["workers"][0].update(nworkers=0), "workers[0].nworkers: must be at least 1, got 0"),
        (lambda d: d["workers"][0].update(env={"1BAD": "x"}), "workers[0].env: invalid key '1BAD'"),
        (lambda d: d.update(ssh={"port": "22"}), "ssh.port: expected an integer, got '22'"),
        (lambda d: d.update(workers=[]), "workers: needs at least 1 entry"),
        (lambda d: [w.update(name="box") for w in d["workers"]], "workers[1].name: 'box' is already used by workers[0]"),
        (lambda d: d["workers"][0].update(tls_dir="/tls"), "workers[0].tls_dir: TLS must be on for every host or none"),
        (lambda d: d["scheduler"].update(protocol="tls"), "scheduler.protocol: tls needs tls_dir"),
        (lambda d: d["workers"][0].update(memory_limit="lots"), "workers[0].memory_limit: 'lots' is not a size"),
    ],
)
def test_schema_names_the_bad_key(change, message: str) -> None:
    data = json.loads(json.dumps(BASE))
    change(data)
    with pytest.raises(InvalidInput) as info:
        validate(data, source="cluster.yaml")
    assert str(info.value).startswith(f"cluster.yaml: {message}"), str(info.value)


def test_defaults_and_commands() -> None:
    spec = validate({**BASE, "tls_dir": "~/tls", "workers": [
        {"host": "10.0.0.6", "nworkers": 2, "nthreads": 4, "resources": {"GPU": 1}, "tls_name": "gpubox",
         "memory_limit": "8GiB", "worker_port": "9000:9010"},
        {"host": "10.0.0.7", "python": "/opt/py/bin/python", "env": {"A": 1}}]})
    assert spec.scheduler_address == "tls://10.0.0.5:8786"  # TLS on: tcp becomes tls
    assert spec.expected_workers() == ["10.0.0.6-0-0", "10.0.0.6-0-1", "10.0.0.7-1"]
    assert spec.workers[1].python == "/opt/py/bin/python" and spec.workers[1].env == {"A": "1"}
    argv = worker_argv(spec, spec.workers[0])
    assert argv[:5] == ["-m", "caelum_dask", "worker", "tls://10.0.0.5:8786", "--nworkers"]
    joined = " ".join(argv)
    assert "--resources GPU=1" in joined and "--tls ~/tls --tls-name gpubox" in joined
    assert "--memory-limit 8GiB" in joined and "--worker-port 9000:9010" in joined
    assert "--nthreads 4" in joined and "--host 10.0.0.6" in joined
    assert "known_hosts" not in spec.scheduler.ssh.connect_options()  # asyncssh's default checking
    off = validate({**BASE, "ssh": {"known_hosts": None, "port": 2200}})
    assert off.workers[0].ssh.connect_options() == {"port": 2200, "connect_timeout": 10.0, "known_hosts": None}
    sched = scheduler_argv(spec)
    assert sched[:3] == ["-m", "caelum_dask", "scheduler"] and sched[-2:] == ["--tls", "~/tls"]


def test_example_cluster_file_is_valid() -> None:
    spec = load(REPO / "examples" / "cluster.yaml")
    assert [w.name for w in spec.workers] == ["workstation", "gpubox", "homeserver"]
    assert spec.workers[1].resources == {"GPU": 1} and spec.workers[2].ssh.port == 2222


def test_malformed_cluster_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "workers": [{"host": "a"}, {"host": "b", "nthreads": "two"}]}))
    broken = tmp_path / "broken.yaml"
    broken.write_text("scheduler:\n  host: [a\nworkers: 1\n")
    for path, message in ((bad, "workers[1].nthreads: expected an integer"),
                          (broken, "not valid YAML at line"),
                          (tmp_path / "missing.yaml", "does not exist")):
        result = run_caelum("up", str(path), "--check")
        assert result.returncode != 0
        assert result.stderr.startswith("caelum: error: ") and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# -- over a real sshd -----------------------------------------------------------------------------

def _pidfiles(run_dir: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in run_dir.glob("*.pid")}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.root
def test_up_status_idempotent_down(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    port = free_port()
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, scheduler_port=port, workers=[
        {"host": "127.0.0.1", "name": "cpu", "nthreads": 1},
        {"host": "127.0.0.1", "name": "gpu", "nthreads": 1, "resources": {"GPU": 1}},
    ])
    check = run_caelum("up", str(path), "--check")
    assert check.returncode == 0, check.stderr
    assert "preflight OK" in check.stdout and not _pidfiles(run_dir)

    first = run_caelum("up", str(path), "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["scheduler"] == f"tcp://127.0.0.1:{port}"
    assert sorted(report["started"]) == ["cpu", "gpu", "scheduler"] and report["already_running"] == []
    assert report["workers"] == ["cpu", "gpu"]
    pids = _pidfiles(run_dir)
    assert set(pids) == {"scheduler", "cpu", "gpu"} and all(psutil.pid_exists(p) for p in pids.values())

    # the cluster outlives `caelum up`; `caelum status` sees the declared workers and resources
    status = run_caelum("status", "--scheduler", report["scheduler"], "--json")
    assert status.returncode == 0, status.stderr
    workers = {w["name"]: w for m in json.loads(status.stdout)["machines"] for w in m["workers"]}
    assert set(workers) == {"cpu", "gpu"}
    assert workers["gpu"]["resources"]["GPU"] == 1 and "GPU" not in workers["cpu"]["resources"]
    assert workers["cpu"]["nthreads"] == 1 and workers["cpu"]["resources"]["CPU"] > 0

    again = run_caelum("up", str(path))  # idempotent: everything is left alone
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already running") == 3 and "started (pid" not in again.stderr
    assert _pidfiles(run_dir) == pids
    assert "worker tcp://127.0.0.1" in again.stdout and "GPU=1" in again.stdout  # the status view

    # a host whose worker died gets it back; the others are left alone
    os.killpg(pids["cpu"], signal.SIGKILL)
    psutil.wait_procs([psutil.Process(pids["cpu"])], timeout=30)
    healed = run_caelum("up", str(path), "--json")
    assert healed.returncode == 0, healed.stderr
    healed_report = json.loads(healed.stdout)
    assert healed_report["started"] == ["cpu"] and sorted(healed_report["already_running"]) == ["gpu", "scheduler"]
    assert healed_report["workers"] == ["cpu", "gpu"]
    pids = _pidfiles(run_dir)

    # the port registry: a port another service registered on this machine is refused for a new worker
    reserved = free_port()
    with Client(report["scheduler"]) as client:
        machine = caelum_dask.machines(client)[0]["id"]
        caelum_dask.register_service(client, machine, "ollama", reserved)
    data = yaml.safe_load(path.read_text())
    data["workers"].append({"host": "127.0.0.1", "name": "extra", "worker_port": reserved})
    grown = tmp_path / "grown.yaml"
    grown.write_text(yaml.safe_dump(data))
    refused = run_caelum("up", str(grown), "--check")
    assert refused.returncode != 0
    assert (f"caelum: preflight: 127.0.0.1 (worker extra): port {reserved} is registered to 'ollama' in the "
            "cluster's port registry; choose another worker_port") in refused.stderr, refused.stderr

    gone = run_caelum("down", str(path), "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["processes"] == {"cpu": "stopped", "gpu": "stopped", "scheduler": "stopped"}
    assert processes_under(run_dir) == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids.values())
    assert not _pidfiles(run_dir) and not _listening(port)
    twice = run_caelum("down", str(path), "--json")
    assert set(json.loads(twice.stdout)["processes"].values()) == {"not-running"}


@pytest.mark.root
def test_version_mismatch_is_refused_before_anything_starts(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    old = tmp_path / "old-install"
    (old / "caelum_dask").mkdir(parents=True)
    (old / "caelum_dask" / "__init__.py").write_text('__version__ = "0.0.9"\n')
    port = free_port()
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, scheduler_port=port, workers=[
        {"host": "127.0.0.1", "name": "fresh"},
        {"host": "127.0.0.1", "name": "stale", "env": {"PYTHONPATH": str(old)}},
    ])
    result = run_caelum("up", str(path), "--json")
    assert result.returncode != 0
    assert json.loads(result.stdout) == {"ok": False, "problems": [line.removeprefix("caelum: preflight: ") for line
                                         in result.stderr.splitlines() if line.startswith("caelum: preflight: 127")]}
    problems = [line for line in result.stderr.splitlines() if line.startswith("caelum: preflight: 127.0.0.1")]
    mine = caelum_dask.__version__
    assert problems == [f"caelum: preflight: 127.0.0.1 (worker stale): caelum-dask 0.0.9 installed, but this "
                        f"client has {mine}; install caelum-dask=={mine} there"], result.stderr
    assert "caelum: error: preflight found 1 problem on 1 host; nothing was started" in result.stderr
    assert processes_under(run_dir) == [] and not _pidfiles(run_dir) and not _listening(port)


@pytest.mark.root
def test_taken_port_unreachable_host_and_missing_certs_each_one_line(
        sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    nobody = free_port()  # no SSH server there
    try:
        path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, scheduler_port=taken, workers=[
            {"host": "127.0.0.1", "name": "ok"},
            {"host": "127.0.0.1", "name": "offline", "ssh": {"port": nobody}},
        ])
        result = run_caelum("up", str(path), "--check")
        assert result.returncode != 0
        lines = sorted(line for line in result.stderr.splitlines() if line.startswith("caelum: preflight: 127"))
        assert len(lines) == 2, result.stderr
        assert lines[0].startswith(f"caelum: preflight: 127.0.0.1 (scheduler scheduler): scheduler port {taken} "
                                   "(held by ") and lines[0].endswith("is in use; free it or choose another port "
                                                                      "in the cluster file")
        if shutil.which("ss"):  # ss -ltnp names the holder: this test process
            assert f"(held by {psutil.Process().name()} pid {os.getpid()})" in lines[0], lines[0]
        assert lines[1].startswith(f"caelum: preflight: 127.0.0.1 (worker offline): cannot connect over SSH to "
                                   f"127.0.0.1:{nobody}")
        assert "nothing was started" in result.stderr  # `up` without --check refuses the same way (test above)
        assert processes_under(run_dir) == [] and not _pidfiles(run_dir)
    finally:
        holder.close()

    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "ca.pem").write_text("not checked here, only present\n")
    path = cluster_file(tmp_path / "tls.yaml", sshd, run_dir, tls_dir=str(tls), tls_name="laptop",
                        workers=[{"host": "127.0.0.1", "name": "w", "tls_name": "box"}])
    result = run_caelum("up", str(path), "--check")
    lines = [line for line in result.stderr.splitlines() if "TLS file" in line]
    assert result.returncode != 0
    assert f"caelum: preflight: 127.0.0.1 (worker w): TLS file {tls}/box.pem is missing" in result.stderr
    assert f"{tls}/box-key.pem is missing" in result.stderr and f"{tls}/laptop.pem is missing" in result.stderr
    assert not any("ca.pem" in line for line in lines)
    assert processes_under(run_dir) == []


@pytest.mark.slow
@pytest.mark.root
def test_example_deploy_local(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, workers=[
        {"host": "127.0.0.1", "name": "plain", "nthreads": 1},
        {"host": "127.0.0.1", "name": "gpubox", "nworkers": 2, "nthreads": 1, "resources": {"GPU": 1}},
    ])
    result = subprocess.run([sys.executable, str(REPO / "examples" / "deploy_local.py"), str(path)],
                            capture_output=True, text=True, timeout=240,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["workers"] == ["gpubox-0", "gpubox-1", "plain"]
    assert report["gpu_task_ran_on"] in ("gpubox-0", "gpubox-1")
    assert report["hostname"] == socket.gethostname()
    assert set(report["down"].values()) == {"stopped"}
    assert processes_under(run_dir) == []


@pytest.mark.slow
@pytest.mark.root
def test_up_with_tls_certificates(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    """With tls_dir the scheduler and workers get --tls DIR --tls-name NAME and speak tls://."""
    pytest.importorskip("caelum_dask.certs", reason="needs `caelum certs` (the TLS capability)")
    tls = tmp_path / "tls"
    assert run_caelum("certs", "init", str(tls)).returncode == 0
    for name in ("sched", "box", "laptop"):
        issued = run_caelum("certs", "issue", name, "--dir", str(tls), "--host", "127.0.0.1")
        assert issued.returncode == 0, issued.stderr
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, tls_dir=str(tls), tls_name="laptop",
                        workers=[{"host": "127.0.0.1", "name": "box", "tls_name": "box", "nthreads": 1}])
    data = yaml.safe_load(path.read_text())
    data["scheduler"]["tls_name"] = "sched"
    path.write_text(yaml.safe_dump(data))
    result = run_caelum("up", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["scheduler"].startswith("tls://127.0.0.1:") and report["workers"] == ["box"]
    assert report["machines"][0]["workers"][0]["address"].startswith("tls://")
    plain = run_caelum("status", "--scheduler", report["scheduler"].replace("tls://", "tcp://"))
    assert plain.returncode != 0  # no certificate, no entry
    assert run_caelum("down", str(path)).returncode == 0
    assert processes_under(run_dir) == []


@pytest.mark.slow
@pytest.mark.root
def test_failed_start_stops_what_this_run_started(sshd: SSHServer, tmp_path: Path, run_dir: Path) -> None:
    """A worker that cannot start: one error naming it and its log; the scheduler is stopped again."""
    path = cluster_file(tmp_path / "cluster.yaml", sshd, run_dir, workers=[
        {"host": "127.0.0.1", "name": "broken", "listen": "10.255.255.1"}])  # not an address of this host
    result = run_caelum("up", str(path))
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if line.startswith("caelum: error: ")]
    assert len(error) == 1 and "worker broken on 127.0.0.1 did not start" in error[0], result.stderr
    assert f"(log: {run_dir}/broken.log on 127.0.0.1)" in error[0]
    assert "scheduler scheduler on 127.0.0.1: started" in result.stderr
    assert processes_under(run_dir) == [] and not _pidfiles(run_dir)

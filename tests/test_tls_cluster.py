"""Mutual TLS on real processes: `caelum scheduler/worker --tls` with certificates from `caelum certs`.

One TLS scheduler and one worker are shared by the module; each test then tries a peer:
the cluster's own client runs a task, a certificate from another CA and an expired one are
refused by the scheduler, a plain-tcp client gets one clear line.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import caelum_dask
from caelum_dask import certs
from harness import ProcessCluster, run_caelum, wait_for
from security_fixtures import caelum_argv, make_cluster_certs, running_tls_cluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, Path]]:
    with running_tls_cluster(tmp_path_factory.mktemp("tls"), ["sched", "w1", "laptop"]) as running:
        yield running


def _handshake_failures(cluster: ProcessCluster) -> list[str]:
    return [line for line in cluster.log("scheduler").splitlines() if "TLS handshake failed" in line]


def test_tls_client_runs_a_task_and_sees_the_worker(tls_cluster: tuple[ProcessCluster, Path]) -> None:
    cluster, tls = tls_cluster
    assert cluster.address.startswith("tls://")
    with caelum_dask.connect(cluster.address, tls=tls, tls_name="laptop") as client:
        assert client.submit(lambda x: x * 7, 6).result(timeout=60) == 42
        (node,) = caelum_dask.machines(client)
        assert [w["address"] for w in node["workers"]][0].startswith("tls://")
    # the CLI with --tls and a bare host:port (tls:// is implied)
    status = run_caelum("status", "--scheduler", cluster.address.removeprefix("tls://"), "--tls", str(tls),
                        "--tls-name", "laptop", "--json")
    assert status.returncode == 0, status.stderr
    assert "tls://" in status.stdout and '"status": "online"' in status.stdout


def test_plain_tcp_client_to_tls_scheduler_fails_with_one_clear_line(tls_cluster: tuple[ProcessCluster, Path]) -> None:
    cluster, _ = tls_cluster
    plain = "tcp://" + cluster.address.removeprefix("tls://")
    result = run_caelum("status", "--scheduler", plain, timeout=60)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("caelum: error: the scheduler at tcp://") and "requires TLS" in lines[0]
    # a tls:// address without certificates: one line too
    bare = run_caelum("status", "--scheduler", cluster.address, timeout=60)
    assert bare.returncode != 0 and len(bare.stderr.strip().splitlines()) == 1
    assert "--tls DIR" in bare.stderr and "Traceback" not in bare.stderr


def _rogue_folder(tmp_path: Path, tls: Path, name: str, **issue_kwargs: object) -> Path:
    """A folder trusting the cluster CA but holding a certificate the cluster CA did not sign."""
    rogue = tmp_path / "rogue"
    certs.init_ca(rogue)
    certs.issue(name, rogue, **issue_kwargs)  # type: ignore[arg-type]
    shutil.copy(tls / "ca.pem", rogue / "ca.pem")  # the public CA cert is no secret
    return rogue


def _expired_in_cluster_folder(tmp_path: Path, tls: Path, name: str) -> Path:
    """A copy of the cluster folder with an expired certificate signed by the real CA."""
    folder = tmp_path / "expired"
    shutil.copytree(tls, folder)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    certs.issue(name, folder, not_valid_before=past - dt.timedelta(days=10), not_valid_after=past)
    return folder


@pytest.mark.parametrize("kind", ["other-ca", "expired"])
def test_scheduler_refuses_a_bad_worker_certificate(
    tls_cluster: tuple[ProcessCluster, Path], tmp_path: Path, kind: str
) -> None:
    cluster, tls = tls_cluster
    name = f"bad-{kind}"
    folder = _rogue_folder(tmp_path, tls, name) if kind == "other-ca" else _expired_in_cluster_folder(tmp_path, tls, name)
    before = len(_handshake_failures(cluster))

    # `caelum worker` probes the scheduler first: refused, one line, non-zero exit
    refused = run_caelum("worker", cluster.address, "--tls", str(folder), "--tls-name", name, "--", "--no-nanny",
                         timeout=60)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr
    assert refused.stderr.startswith("caelum: error: the TLS scheduler at tls://")

    # plain `dask worker` with the same files keeps knocking: the scheduler refuses every handshake
    files = ["--tls-ca-file", str(folder / "ca.pem"), "--tls-cert", str(folder / f"{name}.pem"),
             "--tls-key", str(folder / f"{name}-key.pem")]
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address, "--name", name, "--no-nanny",
            "--host", "127.0.0.1", "--nthreads", "1", "--dashboard-address", "127.0.0.1:0", *files]
    proc = cluster._spawn(f"worker-{name}", argv)
    try:
        reason = "certificate has expired" if kind == "expired" else "certificate verify failed"
        wait_for(lambda: any(reason in line for line in _handshake_failures(cluster)[before:]),
                 timeout=60, what=f"the scheduler to refuse the {kind} certificate")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with caelum_dask.connect(cluster.address, tls=tls, tls_name="laptop") as client:
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
    assert names == {"w1"}


def test_client_with_a_certificate_from_another_ca_is_refused(
    tls_cluster: tuple[ProcessCluster, Path], tmp_path: Path
) -> None:
    cluster, tls = tls_cluster
    rogue = _rogue_folder(tmp_path, tls, "intruder")
    with pytest.raises(caelum_dask.SchedulerUnreachable, match="cannot reach the scheduler"):
        caelum_dask.connect(cluster.address, tls=rogue, tls_name="intruder", timeout=5)


def test_example_secure_cluster_runs(tmp_path: Path) -> None:
    """examples/secure_cluster.py: certificates, a TLS scheduler and worker, a task, teardown."""
    example = Path(__file__).resolve().parent.parent / "examples" / "secure_cluster.py"
    result = subprocess.run(caelum_argv()[:1] + [str(example), str(tmp_path / "certs")], capture_output=True,
                            text=True, timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sum of squares over mutual TLS: 328350" in result.stdout
    assert "plain tcp refused:" in result.stdout


def test_config_keys_turn_tls_on_for_connect(tls_cluster: tuple[ProcessCluster, Path]) -> None:
    """caelum.tls.dir + caelum.tls.name: connect() needs no argument but the address."""
    import dask.config

    cluster, tls = tls_cluster
    with dask.config.set({"caelum.tls.dir": str(tls), "caelum.tls.name": "laptop"}):
        with caelum_dask.connect(cluster.address.removeprefix("tls://")) as client:
            assert client.scheduler.address.startswith("tls://")
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        with pytest.raises(caelum_dask.InvalidInput, match="is tcp://; use tls://"):
            caelum_dask.connect("tcp://" + cluster.address.removeprefix("tls://"))


def test_embedded_cluster_uses_tls_when_configured(tmp_path: Path) -> None:
    """With caelum.tls.dir set and no scheduler, even the embedded cluster speaks mutual TLS."""
    import dask.config

    tls = make_cluster_certs(tmp_path / "tls", ["laptop"])
    with dask.config.set({"caelum.embedded.n-workers": 1}):
        with caelum_dask.connect(tls=tls, tls_name="laptop") as client:
            assert client.scheduler.address.startswith("tls://127.0.0.1:")
            assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
            assert client.submit(pow, 2, 10).result(timeout=60) == 1024

"""Issue #16 items 4 and 5: the HTTPS dashboard of a TLS cluster, and certificate revocation.

Fast tests: `caelum certs revoke` writes a CRL signed by the cluster CA, `caelum certs show`
lists the revoked names, a foreign list is refused with one line, and the TLS contexts caelum
builds refuse a revoked peer in a real handshake. Slow tests share one `caelum scheduler --tls`
process (and one worker) whose folder revokes the certificate "bad": its dashboard answers
HTTPS to a client trusting the cluster CA only, `caelum status` says so, a revoked worker is
refused (one line from `caelum worker`, "certificate revoked" in the scheduler's log) while a
valid one joins; a plain cluster keeps its plain-HTTP dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from harness import ProcessCluster, run_caelum, wait_for
from security_fixtures import caelum_argv, make_cluster_certs, running_tls_cluster

import caelum_dask
from caelum_dask import certs
from caelum_dask.errors import InvalidInput
from caelum_dask.security import security_from_dir


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_revoke_writes_a_crl_signed_by_the_ca_and_show_lists_revoked_names(tmp_path: Path) -> None:
    folder = make_cluster_certs(tmp_path / "tls", ["good", "bad"])
    first = run_caelum("certs", "revoke", "bad", "--dir", str(folder), "--json")
    assert first.returncode == 0, first.stderr
    entry = json.loads(first.stdout)
    assert entry["name"] == "bad" and entry["new"] is True and entry["crl"] == str(folder / "crl.pem")
    assert int(entry["serial"], 16) == _serial(folder / "bad.pem")

    crl = x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(_serial(folder / "bad.pem")) is not None
    assert crl.get_revoked_certificate_by_serial_number(_serial(folder / "good.pem")) is None

    again = run_caelum("certs", "revoke", "bad", "--dir", str(folder))
    assert again.returncode == 0 and again.stdout.startswith("already revoked  bad"), again.stdout
    assert len(x509.load_pem_x509_crl((folder / "crl.pem").read_bytes())) == 1

    shown = run_caelum("certs", "show", str(folder), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert [e["name"] for e in info["revoked"]] == ["bad"]
    assert {c["name"]: c["revoked"] for c in info["certificates"]} == {"bad": True, "good": False}
    text = run_caelum("certs", "show", str(folder)).stdout
    assert re.search(r"^revoked\s+bad \(since ", text, re.M), text
    assert re.search(r"^certificate\s+bad, valid until .* REVOKED$", text, re.M), text
    single = run_caelum("certs", "show", str(folder / "bad.pem")).stdout
    assert re.search(r"^revoked\s+yes ", single, re.M), single
    assert "revoked" not in run_caelum("certs", "show", str(folder / "good.pem")).stdout
    # a single certificate's --json keeps its published shape
    assert set(json.loads(run_caelum("certs", "show", str(folder / "bad.pem"), "--json").stdout)) == {
        "path", "subject", "issuer", "not_valid_before", "not_valid_after", "dns_names", "ip_addresses"}


def test_revoke_errors_are_one_line(tmp_path: Path) -> None:
    folder = make_cluster_certs(tmp_path / "tls", ["good"])
    unknown = run_caelum("certs", "revoke", "nobody", "--dir", str(folder))
    assert unknown.returncode != 0 and "no certificate for 'nobody'" in _one_line(unknown.stderr)
    no_ca = run_caelum("certs", "revoke", "good", "--dir", str(tmp_path / "missing"))
    assert no_ca.returncode != 0 and "no cluster CA" in _one_line(no_ca.stderr)
    assert not (folder / "crl.pem").exists()


def test_a_crl_from_another_ca_is_refused_with_one_line(tmp_path: Path) -> None:
    """OpenSSL would refuse every peer with a foreign list: caelum stops before that, clearly."""
    folder = make_cluster_certs(tmp_path / "tls", ["sched"])
    other = make_cluster_certs(tmp_path / "other", ["x"])
    certs.revoke("x", other)
    shutil.copy(other / "crl.pem", folder / "crl.pem")
    with pytest.raises(InvalidInput, match="not signed by the cluster CA"):
        security_from_dir(folder, "sched")
    started = run_caelum("scheduler", "--tls", str(folder), "--tls-name", "sched", "--host", "127.0.0.1",
                         "--port", "0", timeout=60)
    assert started.returncode != 0
    assert "not signed by the cluster CA" in _one_line(started.stderr)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str, str]:
    """One real TLS handshake over a socket pair: (server outcome, client outcome)."""
    server_sock, client_sock = socket.socketpair()
    outcome: dict[str, str] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                tls.recv(1)
                tls.sendall(b"k")
                outcome["server"] = "ok"
        except (ssl.SSLError, OSError) as exc:
            outcome["server"] = str(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock) as tls:
            tls.sendall(b"x")
            outcome["client"] = "ok" if tls.recv(1) == b"k" else "closed"
    except (ssl.SSLError, OSError) as exc:
        outcome["client"] = str(exc)
    finally:
        thread.join(timeout=30)
    return outcome["server"], outcome["client"]


def test_security_contexts_refuse_a_revoked_peer_in_a_real_handshake(tmp_path: Path) -> None:
    folder = make_cluster_certs(tmp_path / "tls", ["sched", "good", "bad"])
    certs.revoke("bad", folder)
    listen = security_from_dir(folder, "sched").get_listen_args("scheduler")["ssl_context"]
    assert listen.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF

    def connect_as(name: str) -> ssl.SSLContext:
        return security_from_dir(folder, name).get_connection_args("worker")["ssl_context"]

    assert _handshake(listen, connect_as("good")) == ("ok", "ok")
    server, client = _handshake(listen, connect_as("bad"))
    # the server names the reason; the client (TLS 1.3: it has finished its side of the
    # handshake before the server checks its certificate) sees the alert or, when the server
    # closes first, an EOF — never a working connection
    assert "certificate revoked" in server and client != "ok"


# --- real processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def revoking_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcessCluster, Path]]:
    """`caelum scheduler --tls` whose folder revokes "bad"; worker w1 joined."""
    with running_tls_cluster(tmp_path_factory.mktemp("revoke"), ["sched", "w1", "laptop", "bad"],
                             revoked=["bad"]) as running:
        yield running


def _dashboard(cluster: ProcessCluster) -> str:
    match = re.search(r"dashboard at:\s+(\S+)", cluster.log("scheduler"))
    assert match, cluster.log("scheduler")
    return match.group(1)


@pytest.mark.slow
def test_dashboard_is_https_with_the_cluster_ca_and_refused_without(
    revoking_cluster: tuple[ProcessCluster, Path],
) -> None:
    cluster, tls = revoking_cluster
    link = _dashboard(cluster)
    assert link.startswith("https://127.0.0.1:"), link
    trusted = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    with httpx.Client(verify=trusted, timeout=30) as http:
        assert http.get(link).status_code == 200
        assert http.get(link.rsplit("/status", 1)[0] + "/caelum/").status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(link, timeout=30)  # the system's CAs do not know the cluster CA
    with pytest.raises(httpx.HTTPError):
        httpx.get(link.replace("https://", "http://"), timeout=30).raise_for_status()


@pytest.mark.slow
def test_status_says_the_dashboard_is_https(revoking_cluster: tuple[ProcessCluster, Path]) -> None:
    cluster, tls = revoking_cluster
    common = ("--scheduler", cluster.address, "--tls", str(tls), "--tls-name", "laptop")
    text = run_caelum("status", *common)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^dashboard  https://\S+  \(HTTPS, trust the cluster's ca.pem\)$", text.stdout, re.M), text.stdout
    report = json.loads(run_caelum("status", *common, "--json").stdout)
    assert report["dashboard"] == _dashboard(cluster)
    assert report["caelum_dashboard"].startswith("https://")


@pytest.mark.slow
def test_a_revoked_worker_is_refused_and_a_valid_one_joins(
    revoking_cluster: tuple[ProcessCluster, Path], tmp_path: Path
) -> None:
    cluster, tls = revoking_cluster
    # its own folder lists it as revoked: refused before connecting
    local = run_caelum("worker", cluster.address, "--tls", str(tls), "--tls-name", "bad", "--", "--no-nanny",
                       timeout=60)
    assert local.returncode != 0
    assert "this machine's certificate bad is revoked" in _one_line(local.stderr)

    # a machine that never received crl.pem: the scheduler refuses the handshake
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("ca.pem", "bad.pem", "bad-key.pem"):
        shutil.copy(tls / name, stale / name)
    refused = run_caelum("worker", cluster.address, "--tls", str(stale), "--tls-name", "bad", "--", "--no-nanny",
                         timeout=90)
    assert refused.returncode != 0
    assert _one_line(refused.stderr) == (
        "caelum: error: the scheduler refused this machine's certificate (revoked?): bad "
        "— ask the cluster owner to re-issue it"
    )
    log = cluster.log("scheduler")
    assert re.search(r"TLS handshake failed .*certificate revoked", log), log
    assert re.search(r"caelum: refused a revoked certificate from \S+ \(\S+crl.pem revokes: bad\)", log), log

    # plain `dask worker` with the revoked certificate keeps knocking and never joins
    files = ["--tls-ca-file", str(stale / "ca.pem"), "--tls-cert", str(stale / "bad.pem"),
             "--tls-key", str(stale / "bad-key.pem")]
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.address, "--name", "bad", "--no-nanny",
            "--host", "127.0.0.1", "--nthreads", "1", "--dashboard-address", "127.0.0.1:0", *files]
    before = cluster.log("scheduler").count("certificate revoked")
    proc = cluster._spawn("worker-bad", argv)
    try:
        wait_for(lambda: cluster.log("scheduler").count("certificate revoked") > before, timeout=60,
                 what="the scheduler to refuse the revoked worker")
    finally:
        proc.kill()
        proc.wait(timeout=30)

    # a valid certificate still joins; with a nanny, so the nanny's revocation preload runs too
    argv = caelum_argv("worker", cluster.address, "--tls", str(tls), "--tls-name", "laptop", "--name", "w2",
                       "--nthreads", "1", "--", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0")
    cluster.workers["w2"] = cluster._spawn("worker-w2", argv)
    with caelum_dask.connect(cluster.address, tls=tls, tls_name="laptop") as client:
        client.wait_for_workers(2, timeout=60)
        names = {w["name"] for w in client.scheduler_info()["workers"].values()}
        assert names == {"w1", "w2"}
        assert client.submit(lambda x: x + 1, 41, workers=["w2"]).result(timeout=60) == 42


@pytest.mark.slow
def test_plain_cluster_keeps_a_plain_http_dashboard(tmp_path: Path) -> None:
    cluster = ProcessCluster(logdir=tmp_path)
    try:
        address = cluster.start_scheduler()
        text = run_caelum("status", "--scheduler", address)
        assert text.returncode == 0, text.stderr
        assert re.search(r"^dashboard  http://\S+  \(plain HTTP\)$", text.stdout, re.M), text.stdout
        link = json.loads(run_caelum("status", "--scheduler", address, "--json").stdout)["dashboard"]
        assert link.startswith("http://") and httpx.get(link, timeout=30).status_code == 200
    finally:
        cluster.stop()

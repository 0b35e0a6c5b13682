"""`caelum certs`: the cluster CA and node certificates (files, SANs, modes, chain)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from caelum_dask import certs
from caelum_dask.errors import InvalidInput
from caelum_dask.security import security_from_dir
from harness import run_caelum


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_cli_init_and_issue_make_files_with_sans_modes_and_a_valid_chain(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    init = run_caelum("certs", "init", str(folder), "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout) == {"cert": str(folder / "ca.pem"), "key": str(folder / "ca-key.pem")}

    issued = run_caelum("certs", "issue", "gpubox", "--dir", str(folder), "--host", "gpubox.lan",
                        "--host", "10.1.2.3", "--host", "::1", "--json")
    assert issued.returncode == 0, issued.stderr
    info = json.loads(issued.stdout)
    assert info["cert"] == str(folder / "gpubox.pem") and info["key"] == str(folder / "gpubox-key.pem")
    assert info["dns_names"] == ["gpubox", "gpubox.lan"]
    assert info["ip_addresses"] == ["10.1.2.3", "::1"]

    assert sorted(p.name for p in folder.iterdir()) == ["ca-key.pem", "ca.pem", "gpubox-key.pem", "gpubox.pem"]
    for key in ("ca-key.pem", "gpubox-key.pem"):
        assert stat.S_IMODE((folder / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    ca, node = _load(folder / "ca.pem"), _load(folder / "gpubox.pem")
    node.verify_directly_issued_by(ca)  # raises when the signature or issuer does not match
    ca.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("::1")]
    now = dt.datetime.now(dt.timezone.utc)
    assert node.not_valid_before_utc < now < node.not_valid_after_utc

    show = run_caelum("certs", "show", str(folder / "gpubox.pem"), "--json")
    assert show.returncode == 0 and json.loads(show.stdout)["issuer"] == "CN=caelum cluster CA"


def test_chain_verifies_as_server_and_client_against_own_ca_only(tmp_path: Path) -> None:
    """Full path validation (signature, validity, key usage, SANs) with cryptography's verifier."""
    from cryptography.x509 import DNSName, IPAddress
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    certs.init_ca(tmp_path / "a")
    certs.init_ca(tmp_path / "b")
    certs.issue("node", tmp_path / "a", hosts=["node.lan", "10.9.8.7"])
    node = _load(tmp_path / "a" / "node.pem")
    own = PolicyBuilder().store(Store([_load(tmp_path / "a" / "ca.pem")]))
    other = PolicyBuilder().store(Store([_load(tmp_path / "b" / "ca.pem")]))

    chain = own.build_server_verifier(DNSName("node.lan")).verify(node, [])
    assert chain[-1] == _load(tmp_path / "a" / "ca.pem")
    own.build_server_verifier(IPAddress(ipaddress.ip_address("10.9.8.7"))).verify(node, [])
    assert own.build_client_verifier().verify(node, []).chain[0] == node
    with pytest.raises(VerificationError):
        own.build_server_verifier(DNSName("elsewhere.lan")).verify(node, [])
    with pytest.raises(VerificationError):
        other.build_client_verifier().verify(node, [])
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=certs.DEFAULT_NODE_DAYS + 1)
    with pytest.raises(VerificationError):
        own.time(later).build_client_verifier().verify(node, [])


def test_expired_certificate_can_be_issued_for_tests(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    certs.issue("old", tmp_path, not_valid_before=past - dt.timedelta(days=30), not_valid_after=past)
    assert _load(tmp_path / "old.pem").not_valid_after_utc < dt.datetime.now(dt.timezone.utc)


def test_security_from_dir_is_mutual_tls_with_encryption_required(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    certs.issue("node1", tmp_path)
    sec = security_from_dir(tmp_path, "node1")
    assert sec.require_encryption is True
    assert sec.tls_ca_file == str(tmp_path / "ca.pem")
    for role in ("client", "scheduler", "worker"):
        assert getattr(sec, f"tls_{role}_cert") == str(tmp_path / "node1.pem")
        assert getattr(sec, f"tls_{role}_key") == str(tmp_path / "node1-key.pem")
    ctx = sec.get_connection_args("client")["ssl_context"]
    import ssl

    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_security_from_dir_errors_name_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        security_from_dir(tmp_path / "nope", "x")
    certs.init_ca(tmp_path)
    certs.issue("node1", tmp_path)
    with pytest.raises(InvalidInput, match=r"no certificate for 'other'.*node1.*--tls-name"):
        security_from_dir(tmp_path, "other")
    (tmp_path / "node1-key.pem").write_text("not a key")
    with pytest.raises(InvalidInput, match="cannot be used"):
        security_from_dir(tmp_path, "node1")


def test_default_name_comes_from_config_then_hostname(tmp_path: Path) -> None:
    import socket

    import dask.config

    assert certs.default_name() == socket.gethostname().split(".")[0]
    with dask.config.set({"caelum.tls.name": "box7"}):
        assert certs.default_name() == "box7"


def test_init_refuses_to_overwrite_and_issue_refuses_bad_names(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    first = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(InvalidInput, match="already holds a cluster CA"):
        certs.init_ca(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == first
    for bad in ("ca", "../x", "a/b", "x-key", ""):
        with pytest.raises(InvalidInput):
            certs.issue(bad, tmp_path)
    with pytest.raises(InvalidInput, match="--host"):
        certs.issue("ok", tmp_path, hosts=["bad host!"])
    certs.issue("ok", tmp_path)
    with pytest.raises(InvalidInput, match="--force"):
        certs.issue("ok", tmp_path)

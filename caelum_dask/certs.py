"""The cluster's certificate authority and node certificates (``caelum certs``).

A caelum cluster beyond one machine uses mutual TLS: every scheduler, worker and client shows a
certificate signed by the cluster's own CA and refuses peers that do not. This module makes
that CA and those certificates with the ``cryptography`` library, so no ``openssl`` command
line is needed on any machine.

File layout of a certificate folder (what :func:`caelum_dask.security.security_from_dir`
reads)::

    DIR/ca.pem            the cluster CA certificate (public; copy it to every machine)
    DIR/ca-key.pem        the CA's private key (mode 0600; keep it on the admin machine only)
    DIR/NAME.pem          a node certificate for NAME, signed by the CA (public)
    DIR/NAME-key.pem      NAME's private key (mode 0600)

Node certificates carry both the serverAuth and clientAuth extended key usages (a Dask worker
both listens and connects) and subject alternative names for the DNS names and IP addresses
given with ``--host``. Dask does not check host names (it expects a dedicated cluster CA and
IP addresses), but the SANs keep the certificates valid for any other TLS client.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caelum_dask.errors import InvalidInput

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
DEFAULT_CA_DAYS = 3650
DEFAULT_NODE_DAYS = 825
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class IssuedFiles:
    """Paths of a certificate and its key."""

    cert: Path
    key: Path

    def to_dict(self) -> dict[str, str]:
        return {"cert": str(self.cert), "key": str(self.key)}


def cert_path(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}.pem"


def key_path(directory: str | os.PathLike[str], name: str) -> Path:
    return Path(directory) / f"{name}-key.pem"


def check_name(name: str) -> str:
    """A node name is a file stem: letters, digits, ``.``, ``_``, ``-`` (not ``ca``)."""
    if not _NAME_RE.match(name) or name in ("ca", "ca-key") or name.endswith("-key"):
        raise InvalidInput(
            f"bad certificate name {name!r}: use letters, digits, '.', '_' or '-' "
            "(not 'ca' and not ending in '-key'), e.g. the machine's host name"
        )
    return name


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename: a failure never leaves a half-written PEM.

    The temporary file is created with ``mode`` already (0600 for keys), so a key is never
    readable by others, not even for a moment.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _write_private(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_ca(
    directory: str | os.PathLike[str],
    *,
    common_name: str = "caelum cluster CA",
    days: int = DEFAULT_CA_DAYS,
    force: bool = False,
) -> IssuedFiles:
    """Create the cluster CA in ``directory`` (made 0700 if new); refuse to overwrite one."""
    folder = Path(directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidInput(f"{folder} exists and is not a folder; choose another certificate folder")
    files = IssuedFiles(folder / CA_CERT, folder / CA_KEY)
    if not force and (files.cert.exists() or files.key.exists()):
        raise InvalidInput(
            f"{folder} already holds a cluster CA ({CA_CERT}); reuse it, or pass --force to replace "
            "it (every certificate it signed stops working)"
        )
    if days < 1:
        raise InvalidInput(f"--days must be at least 1, not {days}")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise InvalidInput(f"cannot create the certificate folder {folder}: {exc.strerror}") from None
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def load_ca(directory: str | os.PathLike[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key of ``directory``, or a clear error saying how to make them."""
    folder = Path(directory).expanduser()
    cert_file, key_file = folder / CA_CERT, folder / CA_KEY
    if not cert_file.exists():
        raise InvalidInput(f"no cluster CA in {folder} ({CA_CERT} missing); run `caelum certs init {folder}` first")
    if not key_file.exists():
        raise InvalidInput(
            f"{folder} has the CA certificate but not its key ({CA_KEY}); issue certificates on the "
            "machine that ran `caelum certs init`"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except PermissionError:
        raise InvalidInput(f"cannot read the CA files in {folder}: permission denied") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"the CA files in {folder} are not valid PEM ({exc}); re-create them with `caelum certs init`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidInput(f"{key_file} is not a caelum CA key (expected an EC key)")
    return cert, key


def parse_hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """SAN entries: IP addresses as IPAddress, everything else as DNSName."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if not host:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$", host):
                raise InvalidInput(f"bad --host {host!r}: give a DNS name or an IP address") from None
            names.append(x509.DNSName(host))
    return names


def issue(
    name: str,
    directory: str | os.PathLike[str],
    *,
    hosts: Iterable[str] = (),
    days: int = DEFAULT_NODE_DAYS,
    not_valid_before: _dt.datetime | None = None,
    not_valid_after: _dt.datetime | None = None,
    force: bool = False,
) -> IssuedFiles:
    """Issue ``DIR/NAME.pem`` + ``DIR/NAME-key.pem`` signed by the CA in ``directory``.

    SANs always include ``NAME`` (as a DNS name or IP) plus every ``hosts`` entry.
    ``not_valid_before``/``not_valid_after`` override the validity window (tests use them to
    make expired certificates).
    """
    check_name(name)
    folder = Path(directory).expanduser()
    ca_cert, ca_key = load_ca(folder)
    files = IssuedFiles(cert_path(folder, name), key_path(folder, name))
    if not force and (files.cert.exists() or files.key.exists()):
        raise InvalidInput(f"{files.cert} already exists; pass --force to re-issue it")
    if days < 1 and not_valid_after is None:
        raise InvalidInput(f"--days must be at least 1, not {days}")
    sans = parse_hosts([name, *hosts])
    unique: list[x509.GeneralName] = []
    for san in sans:
        if san not in unique:
            unique.append(san)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_valid_before or (_now() - _dt.timedelta(minutes=5))
    end = not_valid_after or (_now() + _dt.timedelta(days=days))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(unique), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def default_name() -> str:
    """The certificate name a machine uses when none is given: ``caelum.tls.name`` or the host name."""
    from caelum_dask import config

    return str(config.get("tls.name") or socket.gethostname().split(".")[0])


def describe(path: str | os.PathLike[str]) -> dict[str, object]:
    """Subject, issuer, validity and SANs of a certificate file (for ``caelum certs show``)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    return {
        "path": str(path),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_valid_before": cert.not_valid_before_utc.isoformat(),
        "not_valid_after": cert.not_valid_after_utc.isoformat(),
        "dns_names": dns,
        "ip_addresses": ips,
    }

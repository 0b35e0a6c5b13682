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
    DIR/crl.pem           revoked serial numbers, signed by the CA (``caelum certs revoke``; public)
    DIR/revoked.json      the names of the revoked certificates (for ``caelum certs show``)

Node certificates carry both the serverAuth and clientAuth extended key usages (a Dask worker
both listens and connects) and subject alternative names for the DNS names and IP addresses
given with ``--host``. Dask does not check host names (it expects a dedicated cluster CA and
IP addresses), but the SANs keep the certificates valid for any other TLS client.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from caelum_dask.errors import InvalidInput
from caelum_dask.results import Result

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


# --- revocation -------------------------------------------------------------------------------
#
# A machine whose key leaked (or that left the cluster) is shut out without re-issuing every
# other certificate: ``caelum certs revoke NAME --dir DIR`` puts NAME's serial number in a
# certificate revocation list signed by the CA, ``DIR/crl.pem``. Schedulers, workers and
# clients load it next to ``ca.pem`` (see :mod:`caelum_dask.revocation`) and OpenSSL then
# refuses a revoked certificate during the handshake. A CRL holds only serial numbers, so the
# names go to ``DIR/revoked.json`` for ``caelum certs show``; only ``crl.pem`` is enforced.

CRL = "crl.pem"
REVOKED = "revoked.json"


@dataclass(frozen=True)
class Revoked(Result):
    """One revoked certificate: its name, serial number (hex) and when it was revoked (ISO 8601)."""

    name: str
    serial: str
    revoked_at: str


def crl_path(directory: str | os.PathLike[str]) -> Path:
    return Path(directory).expanduser() / CRL


def revoked(directory: str | os.PathLike[str]) -> list[Revoked]:
    """The revoked certificates recorded in ``DIR/revoked.json`` (empty when none were revoked).

    Without ``revoked.json`` (a machine that was sent only ``crl.pem``) the entries come from
    the CRL itself, named by serial number: the list a scheduler enforces is always shown.
    """
    folder = Path(directory).expanduser()
    names = folder / REVOKED
    if names.exists():
        try:
            entries = json.loads(names.read_text())["revoked"]
            return [Revoked(str(e["name"]), str(e["serial"]), str(e["revoked_at"])) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{names} is not a caelum revocation record ({exc}); remove it and revoke again") from None
    crl = load_crl(folder)
    if crl is None:
        return []
    return [
        Revoked(f"serial {entry.serial_number:x}", f"{entry.serial_number:x}", entry.revocation_date_utc.isoformat())
        for entry in crl
    ]


def load_crl(directory: str | os.PathLike[str]) -> x509.CertificateRevocationList | None:
    """``DIR/crl.pem`` checked against ``DIR/ca.pem``, or ``None`` when nothing was revoked.

    Why check here: OpenSSL refuses *every* peer when the loaded CRL does not belong to the CA
    (no CRL for the issuer), so a stale or foreign crl.pem must fail with one clear line at
    start-up instead of as a cluster where no machine can connect.
    """
    folder = Path(directory).expanduser()
    path = folder / CRL
    if not path.exists():
        return None
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        ca = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    except PermissionError:
        raise InvalidInput(f"cannot read {path} or its {CA_CERT}: permission denied") from None
    except FileNotFoundError:
        raise InvalidInput(f"{path} has no {CA_CERT} beside it; copy the cluster CA certificate there") from None
    except ValueError as exc:
        raise InvalidInput(f"{path} is not a PEM revocation list ({exc}); copy it again from the admin machine") from None
    public_key = ca.public_key()
    if crl.issuer != ca.subject or not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise InvalidInput(
            f"{path} was not signed by the cluster CA in {folder / CA_CERT}; copy the current crl.pem "
            "from the admin machine (or delete it if that CA never revoked anything)"
        )
    return crl


def revoke(name: str, directory: str | os.PathLike[str], *, when: _dt.datetime | None = None) -> tuple[Revoked, bool]:
    """Revoke ``DIR/NAME.pem``: add its serial to ``DIR/crl.pem`` (re-signed) and ``revoked.json``.

    Returns the entry and whether it is new (revoking twice is harmless). The certificate
    file must be there: its serial number is what the CRL lists, and only the machine that
    holds the CA key (the one that issued it) can sign the list.
    """
    check_name(name)
    folder = Path(directory).expanduser()
    ca_cert, ca_key = load_ca(folder)
    path = cert_path(folder, name)
    if not path.exists():
        raise InvalidInput(
            f"no certificate for {name!r} in {folder} ({path.name} missing); revoke it on the machine "
            "that issued it, in the folder that holds its certificate"
        )
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise InvalidInput(f"{path} is not a certificate of the cluster CA in {folder} ({exc or 'bad signature'})") from None
    serial = f"{cert.serial_number:x}"
    entries = revoked(folder)
    for entry in entries:
        if entry.serial == serial:
            return entry, False
    entry = Revoked(name, serial, (when or _now()).isoformat())
    entries.append(entry)
    _write_crl(folder, entries, ca_cert, ca_key)
    _write_public(folder / REVOKED, json.dumps({"revoked": [e.to_dict() for e in entries]}, indent=2).encode() + b"\n")
    return entry, True


def _write_crl(folder: Path, entries: list[Revoked], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
    """Sign and write ``crl.pem`` listing ``entries``.

    ``last_update`` is backdated like the certificates (a scheduler whose clock is a little
    behind would otherwise see a "not yet valid" CRL and refuse everybody), and the list stays
    valid as long as the CA, so an unrefreshed CRL never locks the whole cluster out.
    """
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - _dt.timedelta(minutes=5))
        .next_update(max(ca_cert.not_valid_after_utc, now + _dt.timedelta(days=1)))
        .add_extension(x509.CRLNumber(len(entries)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(entry.serial, 16))
            .revocation_date(_dt.datetime.fromisoformat(entry.revoked_at))
            .build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(folder / CRL, crl.public_bytes(serialization.Encoding.PEM))


def is_revoked(path: str | os.PathLike[str]) -> bool:
    """Whether the certificate at ``path`` is listed in the ``crl.pem`` of its own folder."""
    cert_file = Path(path)
    crl = load_crl(cert_file.parent)
    if crl is None:
        return False
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def describe_folder(directory: str | os.PathLike[str]) -> dict[str, object]:
    """A certificate folder for ``caelum certs show DIR``: the CA, each certificate, the revoked ones."""
    folder = Path(directory).expanduser()
    crl = load_crl(folder)
    certificates = []
    for path in sorted(folder.glob("*.pem")):
        if path.name in (CA_CERT, CA_KEY, CRL) or path.name.endswith("-key.pem"):
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (ValueError, OSError):
            continue
        listed = crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        certificates.append({
            "name": path.name[: -len(".pem")],
            "serial": f"{cert.serial_number:x}",
            "not_valid_after": cert.not_valid_after_utc.isoformat(),
            "revoked": listed,
        })
    return {
        "dir": str(folder),
        "ca": describe(folder / CA_CERT),
        "certificates": certificates,
        "revoked": [entry.to_dict() for entry in revoked(folder)],
    }

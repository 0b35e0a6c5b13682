"""Mutual TLS for a caelum cluster: a certificate folder becomes a Dask ``Security``.

Dask already speaks TLS (``tls://`` addresses, :class:`distributed.Security`); caelum only
decides where the files live (see :mod:`caelum_dask.certs` for the layout) and turns one
folder into the Security object every role uses. The same node certificate serves as the
scheduler, worker and client certificate of that machine, and ``require_encryption=True``
makes every comm refuse plain ``tcp://``.

Which folder: ``--tls DIR`` on the CLI, ``connect(tls=DIR)``, or the config key
``caelum.tls.dir``. Which certificate in it: ``--tls-name``/``name=``, the config key
``caelum.tls.name``, else this machine's short host name.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from distributed import Security

from caelum_dask import certs, config
from caelum_dask.errors import InvalidInput


def tls_dir(tls: str | os.PathLike[str] | None = None) -> Path | None:
    """The certificate folder in force: ``tls`` argument > config ``caelum.tls.dir`` > none."""
    chosen = tls if tls not in (None, "") else config.get("tls.dir")
    return Path(os.path.expanduser(str(chosen))) if chosen else None


def tls_files(directory: str | os.PathLike[str], name: str | None = None) -> dict[str, str]:
    """``{"ca_file", "cert", "key"}`` of ``name`` in ``directory``, checked to exist and be readable."""
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise InvalidInput(
            f"TLS certificate folder {folder} does not exist; create it with `caelum certs init {folder}`"
        )
    name = name or certs.default_name()
    files = {
        "ca_file": folder / certs.CA_CERT,
        "cert": certs.cert_path(folder, name),
        "key": certs.key_path(folder, name),
    }
    for role, path in files.items():
        if not path.exists():
            if role == "ca_file":
                raise InvalidInput(f"no cluster CA certificate in {folder} ({certs.CA_CERT}); copy it from the machine that ran `caelum certs init`")
            available = sorted(
                p.name[: -len(".pem")] for p in folder.glob("*.pem")
                if not p.name.endswith("-key.pem") and p.name != certs.CA_CERT
            )
            hint = f" (certificates there: {', '.join(available)}; choose one with --tls-name)" if available else ""
            raise InvalidInput(
                f"no certificate for {name!r} in {folder}: {path.name} missing{hint}; "
                f"issue one with `caelum certs issue {name} --dir {folder}`"
            )
        if not os.access(path, os.R_OK):
            raise InvalidInput(f"cannot read {path}: permission denied (run as its owner)")
    return {role: str(path) for role, path in files.items()}


def security_from_dir(directory: str | os.PathLike[str], name: str | None = None) -> Security:
    """A mutual-TLS :class:`distributed.Security` from a ``caelum certs`` folder.

    Every role (client, scheduler, worker) uses the node certificate ``NAME.pem`` and trusts
    only ``ca.pem``; ``require_encryption=True`` refuses any plain-tcp comm.
    """
    files = tls_files(directory, name)
    try:
        security = Security(
            require_encryption=True,
            tls_ca_file=files["ca_file"],
            tls_client_cert=files["cert"],
            tls_client_key=files["key"],
            tls_scheduler_cert=files["cert"],
            tls_scheduler_key=files["key"],
            tls_worker_cert=files["cert"],
            tls_worker_key=files["key"],
        )
        security.get_connection_args("client")  # load the files now: bad PEM fails here, clearly
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise InvalidInput(
            f"the TLS files for {name or certs.default_name()!r} in {directory} cannot be used ({exc}); "
            "re-issue them with `caelum certs issue`"
        ) from None
    return security


def resolve_security(tls: str | os.PathLike[str] | None = None, name: str | None = None) -> Security | None:
    """The Security for ``tls``/config ``caelum.tls.dir``, or ``None`` when TLS is not configured."""
    folder = tls_dir(tls)
    if folder is None:
        return None
    return security_from_dir(folder, name or config.get("tls.name") or None)


def dask_tls_config(security: Security) -> dict[str, object]:
    """The ``distributed.comm.tls.*`` config equivalent of ``security`` (for Dask's ``Security()`` defaults)."""
    config: dict[str, object] = {
        "distributed.comm.require-encryption": bool(security.require_encryption),
        "distributed.comm.tls.ca-file": security.tls_ca_file,
    }
    for role in ("client", "scheduler", "worker"):
        config[f"distributed.comm.tls.{role}.cert"] = getattr(security, f"tls_{role}_cert")
        config[f"distributed.comm.tls.{role}.key"] = getattr(security, f"tls_{role}_key")
    return config


def dask_cli_args(directory: str | os.PathLike[str], name: str | None = None) -> list[str]:
    """``--tls-ca-file/--tls-cert/--tls-key`` for ``dask scheduler``/``dask worker``."""
    files = tls_files(directory, name)
    return ["--tls-ca-file", files["ca_file"], "--tls-cert", files["cert"], "--tls-key", files["key"]]


def require_tls_address(address: str) -> str:
    """With TLS on, a scheduler address must be ``tls://`` (a bare host:port gets it added)."""
    if "://" not in address:
        return f"tls://{address}"
    scheme = address.split("://", 1)[0]
    if scheme not in ("tls", "wss"):
        raise InvalidInput(
            f"TLS is on (--tls or caelum.tls.dir) but the scheduler address {address} is {scheme}://; "
            f"use tls://{address.split('://', 1)[1]}"
        )
    return address


def speaks_tls(address: str, timeout: float = 3.0) -> bool:
    """Whether the listener at a ``tcp://host:port`` address answers a TLS handshake.

    Used only to explain a failed plain-tcp connection ("this scheduler requires TLS");
    certificates are not checked here, nothing is sent after the handshake.
    """
    import socket

    from distributed.comm.addressing import parse_host_port

    try:
        host, port = parse_host_port(address.split("://", 1)[-1])
    except ValueError:
        return False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=None):
                return True
    except ssl.SSLError as exc:
        # A TLS server that demands a client certificate still answered in TLS.
        return "CERTIFICATE_REQUIRED" in str(exc) or "alert" in str(exc).lower()
    except OSError:
        return False

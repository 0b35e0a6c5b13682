"""Mutual TLS for a caelum cluster: a certificate folder becomes a Dask ``Security``.

Dask already speaks TLS (``tls://`` addresses, :class:`distributed.Security`); caelum only
decides where the files live (see :mod:`caelum_dask.certs` for the layout) and turns one
folder into the Security object every role uses. The same node certificate serves as the
scheduler, worker and client certificate of that machine, and ``require_encryption=True``
makes every comm refuse plain ``tcp://``.

Which folder: ``--tls DIR`` on the CLI, ``connect(tls=DIR)``, or the config key
``caelum.tls.dir``. Which certificate in it: ``--tls-name``/``name=``, the config key
``caelum.tls.name``, else this machine's short host name.

Revocation: when the folder holds ``crl.pem`` (``caelum certs revoke``), every TLS context
caelum builds also loads that list and checks the peer's certificate against it
(:class:`CaelumSecurity`); servers started by Dask's CLI get the same through the preloads
(:mod:`caelum_dask.revocation`). The dashboard: :func:`dashboard_tls_config` serves the
scheduler's HTTP server over HTTPS with the node certificate.
"""

from __future__ import annotations

import os
import ssl
import weakref
from pathlib import Path
from typing import Any

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


class CaelumSecurity(Security):
    """A Dask :class:`~distributed.Security` whose TLS contexts also enforce the cluster's CRL.

    Why a subclass: Dask builds a fresh ``ssl.SSLContext`` for every connect and listen from
    file names only; overriding the two public methods that hand those contexts out is the one
    place where a revocation list can be added without touching Dask's internals. The CRL path
    lives in the instance ``__dict__`` (Dask's ``__slots__`` stay as they are), so the object
    pickles like its parent (a nanny sends it to its worker process).
    """

    def __init__(self, *, tls_crl_file: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.tls_crl_file = tls_crl_file

    def get_connection_args(self, role: str) -> dict[str, object]:
        """Dask's connection arguments, the SSL context checking the CRL when there is one."""
        args: dict[str, object] = super().get_connection_args(role)
        _with_crl(args.get("ssl_context"), self.tls_crl_file)
        return args

    def get_listen_args(self, role: str) -> dict[str, object]:
        """Dask's listen arguments, the SSL context checking the CRL when there is one."""
        args: dict[str, object] = super().get_listen_args(role)
        _with_crl(args.get("ssl_context"), self.tls_crl_file)
        return args


def _with_crl(context: object, crl_file: str | None) -> None:
    if crl_file and isinstance(context, ssl.SSLContext):
        add_revocation_list(context, crl_file)


def add_revocation_list(context: ssl.SSLContext, crl_file: str | os.PathLike[str]) -> None:
    """Make ``context`` refuse a peer whose certificate ``crl_file`` lists.

    ``VERIFY_CRL_CHECK_LEAF``: caelum revokes node certificates, which the CA signs directly,
    so only the peer's own certificate needs a CRL; checking the whole chain would also demand
    a CRL for the self-signed CA. A context that already has the list is left alone (OpenSSL
    keeps the first CRL it is given per issuer).
    """
    marker = str(crl_file)
    if _crl_loaded.get(context) == marker:
        return
    context.load_verify_locations(cafile=marker)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    _crl_loaded[context] = marker


_crl_loaded: "weakref.WeakKeyDictionary[ssl.SSLContext, str]" = weakref.WeakKeyDictionary()


def revocation_list(ca_file: str | os.PathLike[str] | None) -> str | None:
    """The checked ``crl.pem`` beside ``ca_file``, or ``None`` when nothing was revoked (or no CA file)."""
    if not ca_file or "\n" in str(ca_file):  # Dask also accepts the CA as PEM text: no folder then
        return None
    folder = Path(ca_file).parent
    return str(certs.crl_path(folder)) if certs.load_crl(folder) is not None else None


def security_from_dir(directory: str | os.PathLike[str], name: str | None = None) -> Security:
    """A mutual-TLS :class:`distributed.Security` from a ``caelum certs`` folder.

    Every role (client, scheduler, worker) uses the node certificate ``NAME.pem`` and trusts
    only ``ca.pem``; ``require_encryption=True`` refuses any plain-tcp comm. With a
    ``crl.pem`` in the folder, revoked peers are refused too.
    """
    files = tls_files(directory, name)
    crl_file = revocation_list(files["ca_file"])
    try:
        security = CaelumSecurity(
            tls_crl_file=crl_file,
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


def dashboard_tls_config(directory: str | os.PathLike[str], name: str | None = None) -> dict[str, str]:
    """Dask's ``distributed.scheduler.dashboard.tls.*`` config: the dashboard over HTTPS.

    The scheduler's HTTP server (Dask's dashboard and the caelum pages) then shows the node
    certificate; a browser or ``httpx`` trusting ``ca.pem`` accepts it. ``ca-file`` only makes
    the CA known to the server: Dask does not ask browsers for a client certificate.
    """
    files = tls_files(directory, name)
    return {
        "distributed.scheduler.dashboard.tls.cert": files["cert"],
        "distributed.scheduler.dashboard.tls.key": files["key"],
        "distributed.scheduler.dashboard.tls.ca-file": files["ca_file"],
    }


def dashboard_link(client: Any) -> str:
    """The scheduler's dashboard link with the scheme its HTTP server really speaks.

    Why ask the scheduler: Dask formats the link on the client from the *client's* config, so
    a client of an HTTPS dashboard would print ``http://``. The scheduler answers whether its
    HTTP server has TLS (``caelum status`` says which); a scheduler that cannot answer (an old
    or foreign one) keeps Dask's link.
    """
    link = str(client.dashboard_link)
    try:
        https = bool(client.run_on_scheduler(_dashboard_uses_tls))
    except Exception:  # noqa: BLE001 - any failure keeps Dask's own link
        return link
    if https and link.startswith("http://"):
        return "https://" + link[len("http://"):]
    if not https and link.startswith("https://"):
        return "http://" + link[len("https://"):]
    return link


def _dashboard_uses_tls(dask_scheduler: Any) -> bool:
    """On the scheduler: whether its HTTP server (Tornado) was given an SSL context."""
    server = getattr(dask_scheduler, "http_server", None)
    return getattr(server, "ssl_options", None) is not None


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

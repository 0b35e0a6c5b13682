"""Revoked certificates refused by every caelum server: the preload side of ``caelum certs revoke``.

``caelum scheduler``/``caelum worker`` hand over to Dask's CLI, which builds its TLS contexts
from file names alone, so the revocation list (``crl.pem`` beside the cluster's ``ca.pem``)
cannot travel in the Security object there. The scheduler and worker preloads (and, for a
nanny, ``--preload-nanny caelum_dask.revocation``) call :func:`install`, which adds the list
to the contexts the server listens and connects with: OpenSSL then refuses a revoked peer
during the handshake, and the scheduler's log says so in one line that names the list.

The list is read when the server starts: after ``caelum certs revoke``, copy ``crl.pem`` to
the scheduler's folder and restart the scheduler (docs/security.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from caelum_dask import certs, compat
from caelum_dask.security import add_revocation_list, revocation_list

logger = logging.getLogger(__name__)

HANDSHAKE_LOGGER = "distributed.comm.tcp"


def install(server: Any) -> str | None:
    """Make ``server`` refuse revoked certificates; returns the CRL used (``None``: none there).

    Without TLS, or without a ``crl.pem`` beside the CA file, nothing changes.
    """
    done = getattr(server, "_caelum_crl", None)
    if done is not None:  # both preloads (caelum_dask.worker and caelum_dask.revocation) ran
        return str(done)
    ca_file = getattr(getattr(server, "security", None), "tls_ca_file", None)
    crl_file = revocation_list(ca_file)
    if crl_file is None:
        return None
    server._caelum_crl = crl_file
    for context in compat.server_ssl_contexts(server):
        add_revocation_list(context, crl_file)
    names = [entry.name for entry in certs.revoked(Path(crl_file).parent)]
    _explain_refusals(crl_file, names)
    logger.info("caelum: revocation list %s loaded (%d revoked: %s)", crl_file, len(names), ", ".join(names))
    return crl_file


class _RevokedRefusal(logging.Filter):
    """Adds one caelum line after Dask's "TLS handshake failed … certificate revoked" warning.

    Why a filter: the handshake fails inside Tornado before any caelum code sees the peer, and
    OpenSSL does not hand the refused certificate to Python; the line therefore names the peer
    address and the certificates the list revokes.
    """

    def __init__(self, crl_file: str, names: list[str]) -> None:
        super().__init__()
        self.crl_file = crl_file
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "TLS handshake failed" in message and "revoked" in message:
            peer = record.args[1] if isinstance(record.args, tuple) and len(record.args) > 1 else "a peer"
            logger.warning(
                "caelum: refused a revoked certificate from %s (%s revokes: %s)",
                peer, self.crl_file, ", ".join(self.names) or "-",
            )
        return True


def _explain_refusals(crl_file: str, names: list[str]) -> None:
    """Install (once per process) the filter that explains refused revoked certificates."""
    target = logging.getLogger(HANDSHAKE_LOGGER)
    for existing in target.filters:
        if isinstance(existing, _RevokedRefusal):
            existing.crl_file, existing.names = crl_file, names
            return
    target.addFilter(_RevokedRefusal(crl_file, names))


def dask_setup(server: Any) -> None:
    """Preload entry point (``--preload-nanny caelum_dask.revocation`` for a worker's nanny)."""
    install(server)

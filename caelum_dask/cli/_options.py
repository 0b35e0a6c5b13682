"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # importing distributed costs ~0.6 s: only commands that connect pay for it
    from distributed import Client

F = TypeVar("F", bound=Callable[..., Any])


def scheduler_option(func: F) -> F:
    """``--scheduler ADDRESS`` (or CAELUM_SCHEDULER); absent: the embedded cluster."""
    return click.option(
        "--scheduler",
        "scheduler",
        envvar="CAELUM_SCHEDULER",
        default=None,
        metavar="ADDRESS",
        help="Scheduler address, e.g. tcp://10.0.0.5:8786 "
        "(default: CAELUM_SCHEDULER, the config key caelum.scheduler-address, else an "
        "embedded cluster on this machine).",
    )(func)


def tls_option(func: F) -> F:
    """``--tls DIR`` and ``--tls-name NAME``: mutual TLS with a ``caelum certs`` folder.

    The command receives ``tls`` and ``tls_name`` keyword arguments; pass them on to
    :func:`open_client` (or :func:`caelum_dask.connect`) unchanged.
    """
    func = click.option(
        "--tls-name",
        "tls_name",
        default=None,
        metavar="NAME",
        help="Which certificate of the TLS folder to use: NAME.pem/NAME-key.pem "
        "(default: the config key caelum.tls.name, else this machine's host name).",
    )(func)
    return click.option(
        "--tls",
        "tls",
        envvar="CAELUM_TLS",
        default=None,
        metavar="DIR",
        help="Mutual TLS with the certificates in DIR (made by `caelum certs`): ca.pem, NAME.pem, "
        "NAME-key.pem (default: CAELUM_TLS, the config key caelum.tls.dir, else no TLS).",
    )(func)


def json_option(func: F) -> F:
    """``--json``: machine-readable output on stdout (documented in the README)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


@contextlib.contextmanager
def open_client(scheduler: str | None, quiet: bool = False, **connect_kwargs: Any) -> Iterator[Client]:
    """Connect (or start the embedded cluster) for the duration of one command."""
    from caelum_dask.cluster import connect, resolve_address
    from caelum_dask.security import resolve_security

    tls, tls_name = connect_kwargs.pop("tls", None), connect_kwargs.pop("tls_name", None)
    if connect_kwargs.get("security") is None:  # bad certificate folders fail before anything starts
        connect_kwargs["security"] = resolve_security(tls, tls_name)
    if resolve_address(scheduler) is None and not quiet:
        click.echo("caelum: no scheduler given; starting an embedded cluster on this machine", err=True)
    client = connect(scheduler, **connect_kwargs)
    try:
        yield client
    finally:
        client.close()


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str, sort_keys=False)
    sys.stdout.write("\n")

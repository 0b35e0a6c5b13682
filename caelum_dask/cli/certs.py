"""``caelum certs``: the cluster CA and node certificates for mutual TLS (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import click

from caelum_dask import certs as _certs
from caelum_dask.cli._options import json_option, print_json
from caelum_dask.errors import InvalidInput


@click.group(name="certs")
def certs() -> None:
    """Make the cluster CA and the certificates of its machines (mutual TLS).

    \b
    admin$ caelum certs init ~/.caelum/tls              # ca.pem + ca-key.pem (keep the key here)
    admin$ caelum certs issue gpubox --dir ~/.caelum/tls --host gpubox.lan --host 10.0.0.7
    copy ca.pem, gpubox.pem, gpubox-key.pem to gpubox, then there:
    gpubox$ caelum worker tls://admin:8786 --tls ~/.caelum/tls --tls-name gpubox
    """


@certs.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", default=_certs.DEFAULT_CA_DAYS, show_default=True, type=int, help="Validity of the CA.")
@click.option("--common-name", default="caelum cluster CA", show_default=True, help="The CA's subject name.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every certificate it signed stops working).")
@json_option
def init_command(directory: Path, days: int, common_name: str, force: bool, as_json: bool) -> None:
    """Create the cluster CA in DIRECTORY: ca.pem (copy to every machine) and ca-key.pem (0600).

    --json prints {"cert": PATH, "key": PATH}.
    """
    files = _certs.init_ca(directory, common_name=common_name, days=days, force=force)
    if as_json:
        print_json(files.to_dict())
        return
    click.echo(f"CA certificate  {files.cert}  (copy to every machine)")
    click.echo(f"CA key          {files.key}  (keep private; only needed to issue certificates)")


@certs.command(name="issue")
@click.argument("name")
@click.option(
    "--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The folder holding the CA (made by `caelum certs init`); NAME.pem and NAME-key.pem go there.",
)
@click.option(
    "--host", "hosts", multiple=True, metavar="NAME_OR_IP",
    help="A DNS name or IP address of the machine, added to the certificate's SANs (repeatable).",
)
@click.option("--days", default=_certs.DEFAULT_NODE_DAYS, show_default=True, type=int, help="Validity of the certificate.")
@click.option("--force", is_flag=True, help="Re-issue NAME even if its files exist.")
@json_option
def issue_command(name: str, directory: Path, hosts: tuple[str, ...], days: int, force: bool, as_json: bool) -> None:
    """Issue NAME.pem + NAME-key.pem (0600) signed by the CA in --dir.

    NAME is the machine's certificate name (default name used by --tls: its short host name).
    --json prints {"cert", "key", "subject", "issuer", "not_valid_before", "not_valid_after",
    "dns_names", "ip_addresses"}.
    """
    files = _certs.issue(name, directory, hosts=hosts, days=days, force=force)
    info = _certs.describe(files.cert)
    if as_json:
        print_json({**files.to_dict(), **info})
        return
    click.echo(f"certificate  {files.cert}")
    click.echo(f"key          {files.key}  (mode 0600)")
    click.echo(f"valid until  {info['not_valid_after']}")
    sans = [*info["dns_names"], *info["ip_addresses"]]  # type: ignore[misc]
    click.echo(f"names        {', '.join(sans)}")


@certs.command(name="show")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
def show_command(path: Path, as_json: bool) -> None:
    """Show a certificate's subject, issuer, validity and names (PATH: a .pem file)."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a certificate file")
    try:
        info = _certs.describe(path)
    except PermissionError:
        raise InvalidInput(f"cannot read {path}: permission denied") from None
    except ValueError:
        raise InvalidInput(f"{path} is not a PEM certificate") from None
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        click.echo(f"{key:17} {value}")


COMMANDS = [certs]

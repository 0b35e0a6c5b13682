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
    admin$ caelum certs revoke gpubox --dir ~/.caelum/tls    # crl.pem: copy it beside ca.pem
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


@certs.command(name="revoke")
@click.argument("name")
@click.option(
    "--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="The folder holding the CA and NAME.pem; crl.pem (the revocation list) is written there.",
)
@json_option
def revoke_command(name: str, directory: Path, as_json: bool) -> None:
    """Revoke NAME's certificate: add it to DIR/crl.pem, which schedulers and workers load.

    Copy crl.pem beside ca.pem on the scheduler's machine (and the workers') and restart
    them: a machine showing the revoked certificate is then refused at connect. To let NAME
    back in, issue it a new certificate (`caelum certs issue NAME --dir DIR --force`).
    --json prints {"name", "serial", "revoked_at", "crl", "new"}.
    """
    entry, new = _certs.revoke(name, directory)
    crl = _certs.crl_path(directory)
    if as_json:
        print_json({**entry.to_dict(), "crl": str(crl), "new": new})
        return
    state = "revoked" if new else "already revoked"
    click.echo(f"{state}  {entry.name} (serial {entry.serial}, since {entry.revoked_at})")
    click.echo(f"list     {crl}  (copy beside ca.pem on the scheduler and workers, then restart them)")


@certs.command(name="show")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
def show_command(path: Path, as_json: bool) -> None:
    """Show a certificate's subject, issuer, validity and names (PATH: a .pem file).

    PATH may also be a certificate folder: its CA, certificates and the revoked ones.
    --json for a folder prints {"dir", "ca", "certificates": [{"name", "serial",
    "not_valid_after", "revoked"}], "revoked": [{"name", "serial", "revoked_at"}]}.
    """
    if path.is_dir() and (path / _certs.CA_CERT).is_file():
        _show_folder(path, as_json)
        return
    if not path.is_file():
        raise InvalidInput(f"{path} is not a certificate file (nor a certificate folder with {_certs.CA_CERT})")
    try:
        info = _certs.describe(path)
        revoked = _certs.is_revoked(path)
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
    if revoked:
        click.echo(f"{'revoked':17} yes ({_certs.crl_path(path.parent)})")


def _show_folder(path: Path, as_json: bool) -> None:
    """``caelum certs show DIR``: the CA, each certificate (revoked ones marked), the revoked names."""
    try:
        info = _certs.describe_folder(path)
    except PermissionError:
        raise InvalidInput(f"cannot read the certificates in {path}: permission denied") from None
    except ValueError:
        raise InvalidInput(f"{path / _certs.CA_CERT} is not a PEM certificate") from None
    if as_json:
        print_json(info)
        return
    ca = info["ca"]
    click.echo(f"{'folder':13} {info['dir']}")
    click.echo(f"{'ca':13} {ca['subject']}, valid until {ca['not_valid_after']}")  # type: ignore[index]
    for cert in info["certificates"]:  # type: ignore[attr-defined]
        mark = "  REVOKED" if cert["revoked"] else ""
        click.echo(f"{'certificate':13} {cert['name']}, valid until {cert['not_valid_after']}{mark}")
    revoked = info["revoked"]
    names = ", ".join(f"{e['name']} (since {e['revoked_at']})" for e in revoked) or "-"  # type: ignore[attr-defined]
    click.echo(f"{'revoked':13} {names}")


COMMANDS = [certs]

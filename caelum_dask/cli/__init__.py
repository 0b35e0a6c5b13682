"""The ``caelum`` command line (also ``dask caelum …`` through Dask's ``dask_cli`` entry point).

Each capability adds its commands in a module of this package that defines ``COMMANDS``, a
list of click commands or groups; they are picked up automatically, so capabilities never edit
one shared file. Errors a user can fix (:class:`~caelum_dask.errors.CaelumError`) are printed
as one line on stderr with a non-zero exit — never a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Any

import click

from caelum_dask import __version__
from caelum_dask.errors import CaelumError


class CaelumGroup(click.Group):
    """A click group that turns CaelumError into one clear line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from caelum_dask.proctree import job_scope

        try:
            with job_scope():  # nothing the command starts outlives it (Ctrl-C, SIGTERM, errors)
                return super().invoke(ctx)
        except CaelumError as exc:
            click.echo(f"caelum: error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(name="caelum", cls=CaelumGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="caelum")
def cli() -> None:
    """caelum: the machines on your network as one Dask cluster.

    With no scheduler given (--scheduler, CAELUM_SCHEDULER or the Dask config key
    caelum.scheduler-address) every command runs on an embedded cluster on this machine.
    """


def _load_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_load_commands()

"""The ``caelum`` command line (also ``dask caelum …`` through Dask's ``dask_cli`` entry point).

Each capability adds its commands in a module of this package that defines ``COMMANDS``, a
list of click commands or groups. The group below knows them by name from :data:`COMMANDS`
(module and one-line help, as pip's command table does) and imports a command's module only
when that command runs or shows its own help: ``caelum --help`` and argument errors never pay
for importing distributed, pandas or bokeh. ``tests/test_cli_startup.py`` checks that the table
and the modules agree. Errors a user can fix (:class:`~caelum_dask.errors.CaelumError`) are
printed as one line on stderr with a non-zero exit — never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from caelum_dask import __version__
from caelum_dask.errors import CaelumError


#: command name -> (module under caelum_dask.cli, one-line help shown by ``caelum --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("analyze", "Analyse the Python files under PATH across the cluster."),
    "bi": ("bi", "Business intelligence: git history, test results, code metrics and resource samples "
                 "collected on every machine (one pinned task per machine), aggregated into reports."),
    "certs": ("certs", "Make the cluster CA and the certificates of its machines (mutual TLS)."),
    "codemod": ("analyze", "Run a libcst codemod over PATH across the cluster."),
    "down": ("deploy", "Stop every process `caelum up CLUSTER_FILE` started (workers first, then the "
                       "scheduler)."),
    "events": ("cluster", 'Print cluster events as JSON lines: {"topic", "timestamp", "message"}.'),
    "llm": ("llm", "The LLM pool: every machine's Ollama as one GPU-aware endpoint."),
    "mcp": ("mcp", "Serve the cluster as an MCP server (tools: cluster_status, list_machines, and one set "
                   "per capability)."),
    "run": ("workflow", "Run the workflow defined in FILE (a Python file) on the cluster."),
    "runs": ("workflow", "Past workflow runs, from the run store (caelum.workflow.store, default ~/.caelum)."),
    "scheduler": ("cluster", "Start the cluster's scheduler with the machine registry (and dashboard pages)."),
    "status": ("cluster", "Machines of the cluster: resources, GPUs, services, status and heartbeats."),
    "test": ("test", "Run the pytest suite in PATH over the cluster's machines."),
    "up": ("deploy", "Start the cluster described by CLUSTER_FILE over SSH and print its status."),
    "worker": ("cluster", "Join this machine to the cluster at ADDRESS, advertising its resources."),
}


def load_command(name: str) -> click.Command:
    """Import the module that defines command ``name`` and return the command."""
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    for command in getattr(module, "COMMANDS", ()):
        if command.name == name:
            return command
    raise LookupError(f"caelum_dask.cli.{COMMANDS[name][0]} defines no command {name!r}")


class CaelumGroup(click.Group):
    """The ``caelum`` group: commands loaded on first use; CaelumError as one clear line.

    ``list_commands``/``get_command`` are click's hooks for lazy subcommands; the help listing
    is made from the table alone (``format_commands``), so it imports nothing.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        return load_command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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

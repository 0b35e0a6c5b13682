"""The instant CLI: `caelum --help` imports no command module; the command table is true; a warm
`caelum analyze` imports no dask."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client

import caelum_dask.cli as cli_pkg
from caelum_dask.analysis import analyze
from caelum_dask.cli import COMMANDS, load_command

HEAVY = ("dask", "distributed", "pandas", "bokeh", "libcst", "networkx", "cryptography")


def test_table_names_every_command_with_its_own_help() -> None:
    defined = {}
    for info in pkgutil.iter_modules(cli_pkg.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"caelum_dask.cli.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            defined[command.name] = info.name
    assert {name: module for name, (module, _) in COMMANDS.items()} == defined
    for name, (_, text) in COMMANDS.items():
        first = " ".join((load_command(name).help or "").strip().split("\n\n")[0].split())
        assert text == first, f"{name}: the table's help differs from the command's first paragraph"


def _imports_after(*argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    code = ("import sys\nfrom caelum_dask.cli import cli\n"
            "try:\n    cli(args=sys.argv[1:], prog_name='caelum', standalone_mode=True)\n"
            "except SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted(sys.modules)), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    line = next(l for l in result.stderr.splitlines() if l.startswith("MODULES "))
    return result, set(line.split()[1:])


def test_help_and_usage_errors_import_nothing_heavy() -> None:
    for argv in (["--help"], ["--version"], ["no-such-command"]):
        result, modules = _imports_after(*argv)
        assert not [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY], (argv, sorted(modules))
    result, _ = _imports_after("--help")
    for name in COMMANDS:
        assert name in result.stdout
    result, _ = _imports_after("no-such-command")
    assert "No such command 'no-such-command'" in result.stderr


@pytest.mark.parametrize("command", ["test", "run", "runs", "llm", "mcp", "analyze", "codemod", "bi", "up", "down",
                                     "status", "scheduler", "worker", "events"])
def test_command_help_imports_nothing_heavy(command: str) -> None:
    result, modules = _imports_after(command, "--help")
    assert "Usage: caelum" in result.stdout, result.stderr
    assert not [m for m in modules if m.split(".")[0] in HEAVY], (command, sorted(m for m in modules
                                                                          if m.split(".")[0] in HEAVY)[:10])


def test_warm_analyze_imports_neither_dask_nor_distributed(thread_client: Client, tmp_path: Path) -> None:
    """An unchanged tree's re-run answers from the cache: no cluster, so no dask at all (#17).

    The first run fills the cache under this test's caelum home (``DASK_CAELUM__HOME``, which
    the subprocess inherits); the second, through the CLI, must print the same summary.
    """
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "a.py").write_text("import os\n\n\ndef f(x):\n    if x:\n        return os.sep\n    return x\n")
    (root / "pkg" / "broken.py").write_text("def (:\n")
    cold = analyze(root, client=thread_client).to_dict()
    result, modules = _imports_after("analyze", str(root), "--json")
    assert result.returncode == 0, result.stderr
    assert not [m for m in modules if m.split(".")[0] in HEAVY], sorted(m for m in modules
                                                                       if m.split(".")[0] in HEAVY)[:10]
    # a tree outside any git work tree: no git run, so no process started, so the command ends
    # without psutil's search for processes it left behind (proctree.never_started_a_process)
    assert "psutil" not in modules
    warm = json.loads(result.stdout)
    assert (warm["cached"], warm["analysed"], warm["tasks"]) == (3, 0, 0)
    same = [k for k in cold if k not in ("run_id", "seconds", "cached", "analysed", "tasks")]
    assert {k: warm[k] for k in same} == {k: cold[k] for k in same}

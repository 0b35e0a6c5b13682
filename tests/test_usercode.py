"""One loader for user code (caelum_dask.usercode): workflow files, BI definitions, analyzer plugins.

Each kind is loaded from a real file outside any importable package and run on real worker
processes of a LocalCluster that cannot import it (shipping by value works); each kind's bad
files give the one ``FILE[:LINE]: PROBLEM — WHAT TO DO`` line; the same file loaded twice is
the same module; and the real CLI fails with that one line before any cluster starts.
"""

from __future__ import annotations

import importlib.util
import operator
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Client

from caelum_dask import usercode
from caelum_dask.analysis.engine import analyze
from caelum_dask.analysis.loader import load_plugin_module, make_spec, read_plugins
from caelum_dask.bi.definition import load as load_report
from caelum_dask.errors import InvalidInput
from caelum_dask.workflow import run
from caelum_dask.workflow.loader import load_module, load_workflow

HELPER = "def triple(x):\n    return 3 * x\n"

WORKFLOW_TASKS = """\
from _uc_helper import triple

from caelum_dask.workflow import Workflow, task


@task(cache=False)
def tripled(x: int) -> int:
    return triple(x)


with Workflow("uc-tasks", params={"x": 4}) as wf:
    tripled(wf.param("x"))
"""

# plain functions in a networkx graph: the worker gets the function itself, nested in the
# task, not a module attribute wrapped by @task (the case plain pickle gets wrong)
WORKFLOW_GRAPH = """\
import networkx as nx

from caelum_dask.workflow import Workflow


def source(n):
    return list(range(n))


def total(source):
    return sum(source)


G = nx.DiGraph()
G.add_node("source", func=source, cache=False)
G.add_node("total", func=total, cache=False)
G.add_edge("source", "total")
wf = Workflow.from_graph(G, name="uc-graph", params={"n": 5})
"""

REPORT = """\
from _uc_helper import triple

TITLE = "usercode"
SOURCES = ["git"]
TABLES = ["activity"]


def tables(data, built):
    return {"tripled": triple(built["n"])}
"""

PLUGIN = """\
from caelum_dask.analysis.plugin import SourceAnalyzer


class LineCount(SourceAnalyzer):
    name = "uc-lines"
    tables = ("findings",)

    def analyze(self, source):
        self.row("findings", analyzer=self.name, code="UC1", message=f"{len(source.splitlines())} lines",
                 severity="info", line=1, col=0)
"""


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A folder of user files (with a helper module next to them) that no worker can import."""
    folder = tmp_path / "userfiles"
    folder.mkdir()
    (folder / "_uc_helper.py").write_text(HELPER)
    (folder / "wf_tasks.py").write_text(WORKFLOW_TASKS)
    (folder / "wf_graph.py").write_text(WORKFLOW_GRAPH)
    (folder / "report.py").write_text(REPORT)
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "line_count.py").write_text(PLUGIN)
    return folder


@pytest.fixture(autouse=True)
def _forget_helper() -> Iterator[None]:
    """Each test imports its own folder's ``_uc_helper`` (helpers live in sys.modules by name)."""
    sys.modules.pop("_uc_helper", None)
    yield
    sys.modules.pop("_uc_helper", None)


def _importable_on_worker(client: Client, name: str) -> bool:
    return bool(client.submit(lambda n: importlib.util.find_spec(n) is not None, name, pure=False).result())


# -- each kind runs on worker processes that cannot import it ------------------------------------

def test_workflows_ship_by_value(client: Client, user_dir: Path) -> None:
    tasks = load_workflow(user_dir / "wf_tasks.py")
    result = run(tasks, client=client, cache=False)
    assert result.ok and list(result.results.values()) == [12]
    graph = load_workflow(user_dir / "wf_graph.py")
    result = run(graph, client=client, cache=False)
    assert result.ok and result.results == {"total": 10}
    module = load_module(user_dir / "wf_graph.py")
    assert module.__name__ == usercode.module_name(user_dir / "wf_graph.py", usercode.WORKFLOW)
    assert not _importable_on_worker(client, module.__name__)
    # a user function nested inside the task (not the task's own function) still arrives
    assert client.submit(operator.call, module.total, [1, 2, 3], pure=False).result() == 6


def test_report_definitions_ship_by_value(client: Client, user_dir: Path) -> None:
    definition = load_report(user_dir / "report.py")
    assert definition.title == "usercode" and definition.tables == ["activity"]
    assert not _importable_on_worker(client, definition.module.__name__)
    # the definition's own function, nested in the task as the report's aggregation ships it;
    # its helper module (imported from the file's folder) travels by value too
    shipped = client.submit(operator.call, definition.module.tables, None, {"n": 2}, pure=False).result()
    assert shipped == {"tripled": 6}


def test_analyzer_plugins_ship_by_value(client: Client, user_dir: Path) -> None:
    src = user_dir / "src"
    src.mkdir()
    (src / "three.py").write_text("a = 1\nb = 2\nc = 3\n")
    result = analyze(src, client=client, analyzers=["raw"], plugins=[str(user_dir / "plugins")], use_cache=False)
    findings = result.tables["findings"]
    assert list(findings[findings["analyzer"] == "uc-lines"]["message"]) == ["3 lines"]
    spec = make_spec(["raw"], [str(user_dir / "plugins" / "line_count.py")])
    assert sorted(c.name for c in spec.classes()) == ["raw", "uc-lines"]
    module = load_plugin_module(spec.plugins[0])
    assert not _importable_on_worker(client, module.__name__)


# -- the same file gives the same module; a changed file is run again ----------------------------

def test_same_file_same_module(user_dir: Path) -> None:
    first = load_module(user_dir / "wf_tasks.py")
    assert load_module(user_dir / "wf_tasks.py") is first
    assert load_module(str(user_dir / "wf_tasks.py")) is first
    assert load_report(user_dir / "report.py").module is load_report(user_dir / "report.py").module
    plugin = read_plugins([str(user_dir / "plugins")])[0]
    assert load_plugin_module(plugin) is load_plugin_module(read_plugins([str(user_dir / "plugins")])[0])
    name = first.__name__
    assert name.startswith("caelum_workflow_wf_tasks_") and name not in sys.modules
    (user_dir / "wf_tasks.py").write_text(WORKFLOW_TASKS.replace("uc-tasks", "uc-edited"))
    edited = load_module(user_dir / "wf_tasks.py")
    assert edited is not first and edited.__name__ == name and load_workflow(user_dir / "wf_tasks.py").name == "uc-edited"


# -- bad files: one format for every kind ---------------------------------------------------------

def _workflow(path: Path) -> object:
    return load_workflow(path)


def _report(path: Path) -> object:
    return load_report(path)


def _plugin(path: Path) -> object:
    return read_plugins([str(path)])


KINDS = {"workflow": _workflow, "report": _report, "plugin": _plugin}
MISSING = {
    "workflow": "defines no workflow (expected `with Workflow(\"name\") as wf:`",
    "report": "defines no report (expected at least one of TITLE, SINCE, SOURCES, TABLES",
    "plugin": "defines no analyzer (expected a CSTAnalyzer/ASTAnalyzer/SourceAnalyzer subclass",
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_bad_files_one_format(kind: str, tmp_path: Path) -> None:
    load = KINDS[kind]
    bad = tmp_path / "bad.py"

    def message(text: str) -> str:
        bad.write_text(text)
        with pytest.raises(InvalidInput) as err:
            load(bad)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert message("x = 1\ndef broken(:\n    pass\n") == f"{bad}:2: SyntaxError: invalid syntax — fix the file and run again"
    assert message("import os\n\nimport caelum_no_such_module\n") == (
        f"{bad}:3: ModuleNotFoundError: No module named 'caelum_no_such_module' — install the missing module "
        "where caelum runs, or fix the import, and run again")
    assert message("x = 1\n\n\nraise RuntimeError('boom')\n") == f"{bad}:4: RuntimeError: boom — fix the file and run again"
    assert message("VALUE = 1\n").startswith(f"{bad}: {MISSING[kind]}")
    for path, problem in [(tmp_path / "nope.py", "does not exist"), (tmp_path / "notes.txt", "is not a .py file")]:
        path.write_text("x = 1\n") if path.suffix == ".txt" else None
        with pytest.raises(InvalidInput, match=f"^{path}: {problem} — give the path of the"):
            load(path)
    if kind != "plugin":  # a folder of plugins is fine; for the others it is not a file
        with pytest.raises(InvalidInput, match=f"^{tmp_path}: is a folder, not a file — give the path of the"):
            load(tmp_path)


def test_failed_load_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "half.py"
    bad.write_text("import json\nVALUE = 1\nraise ValueError('no')\n")
    before = set(sys.modules)
    with pytest.raises(InvalidInput, match=r":3: ValueError: no — "):
        load_module(bad)
    assert set(sys.modules) - before <= {"json"} and str(tmp_path) not in sys.path


# -- the CLI: exit code 1 and one line on stderr, before any cluster starts -------------------------

def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["run", "bi", "analyze"])
def test_cli_one_line(kind: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ndef broken(:\n")
    # a scheduler that does not answer: were a cluster contacted first, the error would say so
    scheduler = ["--scheduler", _closed_port()]
    argv = {"run": ["run", str(bad)], "bi": ["bi", "report", str(bad)],
            "analyze": ["analyze", str(tmp_path), "--plugins", str(bad), "--no-cache"]}[kind]
    proc = subprocess.run([str(Path(sys.executable).parent / "caelum"), *argv, *scheduler], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert lines == [f"caelum: error: {bad}:2: SyntaxError: invalid syntax — fix the file and run again"], proc.stderr

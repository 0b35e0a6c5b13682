"""Bad-input sweep over every CLI command: one clear line, non-zero exit, no traceback.

A table: each :class:`Row` is one bad invocation of the ``caelum`` CLI. Every row runs in
process through click's CliRunner (fast; an exception that escapes the CLI group fails the
row), and rows marked ``subprocess=True`` also run as the real ``python -m caelum_dask`` to prove
the entry point prints no traceback. Owners of other commands add their rows to ``ROWS`` (and,
if they need files, an entry to the ``workspace`` fixture's placeholders). ``{name}`` in argv
is replaced by a workspace path:

    missing     a path that does not exist
    file        a plain text file          dir        an empty folder
    certs       a CA + a certificate "node" (made by caelum certs)
    badcerts    a folder whose ca.pem and node.pem are not PEM
    dircert     a folder whose node.pem is a folder (unreadable as a file)
    garbage     a text file that is not a certificate
    unreadable  a certificate file with mode 000 (rows using it are skipped as root)
    closed      tcp://127.0.0.1:PORT with nothing listening (a refused, unreachable scheduler)
    closedurl   http://127.0.0.1:PORT, the same port as an HTTP URL (an Ollama that is down)
    busyport    a port on 127.0.0.1 that is already taken
    src         a folder with one small Python module
    badplugins  a folder whose analyzer plugin file has a syntax error
    notcodemod  a Python file with no Codemod class in it
    badyaml     a cluster file that is not valid YAML
    unknownkey  a cluster file with a key the schema does not know
    outdir      a folder path that does not exist yet   outempty   an existing empty folder
    junitout    a file path that does not exist yet
    binary      a binary (not UTF-8) file named binary.py

A row's ``no_output`` names placeholders that must still be absent or empty folders after every
row ran: bad input leaves no partial output files behind.

The subprocess rows run concurrently (4 at a time) once per module; each parametrised test
checks one row.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from caelum_dask import certs
from harness import REPO, run_caelum


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]
    expect: str  # a substring of the one error line
    usage: bool = False  # a click usage error ("Error: …", exit 2) rather than "caelum: error: …"
    needs_non_root: bool = False
    subprocess: bool = False  # also run the real CLI as a subprocess
    no_output: tuple[str, ...] = ()  # placeholders that must stay absent / empty folders


ROWS: list[Row] = [
    # caelum status
    Row("status-unreachable", ("status", "--scheduler", "{closed}"), "cannot reach the scheduler", subprocess=True),
    Row("status-bad-scheme", ("status", "--scheduler", "foo://x:1"), "bad scheduler address", subprocess=True),
    Row("status-bad-port", ("status", "--scheduler", "tcp://127.0.0.1:notaport"), "bad scheduler address"),
    Row("status-bad-address", ("status", "--scheduler", ":::"), "bad scheduler address"),
    Row("status-tls-missing-dir", ("status", "--scheduler", "{closed}", "--tls", "{missing}"), "does not exist"),
    Row("status-tls-unknown-name", ("status", "--scheduler", "{closed}", "--tls", "{certs}", "--tls-name", "nobody"),
        "no certificate for 'nobody'"),
    Row("status-tls-no-ca", ("status", "--scheduler", "{closed}", "--tls", "{dir}", "--tls-name", "node"),
        "no cluster CA certificate"),
    Row("status-tls-corrupt", ("status", "--scheduler", "{closed}", "--tls", "{badcerts}", "--tls-name", "node"),
        "cannot be used", subprocess=True),
    Row("status-tls-cert-is-dir", ("status", "--scheduler", "{closed}", "--tls", "{dircert}", "--tls-name", "node"),
        "cannot be used"),
    Row("status-tls-unreadable", ("status", "--scheduler", "{closed}", "--tls", "{unreadable}", "--tls-name", "node"),
        "permission denied", needs_non_root=True),
    Row("status-tls-with-tcp-address", ("status", "--scheduler", "{closed}", "--tls", "{certs}", "--tls-name", "node"),
        "is tcp://; use tls://"),
    Row("status-tls-address-no-certs", ("status", "--scheduler", "tls://127.0.0.1:1"), "no certificates were given"),
    Row("status-unknown-option", ("status", "--bogus"), "No such option", usage=True),
    # caelum events
    Row("events-unreachable", ("events", "--scheduler", "{closed}"), "cannot reach the scheduler", subprocess=True),
    Row("events-bad-count", ("events", "--count", "many"), "'many' is not a valid integer", usage=True),
    Row("events-count-without-follow", ("events", "--scheduler", "{closed}", "--count", "3"),
        "--count only applies with --follow"),
    Row("events-count-zero", ("events", "--scheduler", "{closed}", "--follow", "--count", "0"),
        "--count must be at least 1"),
    Row("events-tls-missing-dir", ("events", "--scheduler", "{closed}", "--tls", "{missing}"), "does not exist"),
    # caelum worker
    Row("worker-no-address", ("worker",), "needs the scheduler's address"),
    Row("worker-unreachable", ("worker", "{closed}"), "cannot reach the scheduler"),
    Row("worker-bad-address", ("worker", "foo://x:1"), "bad scheduler address", subprocess=True),
    Row("worker-zero-processes", ("worker", "{closed}", "--nworkers", "0"), "--nworkers must be at least 1"),
    Row("worker-tls-address-no-certs", ("worker", "tls://127.0.0.1:1"), "uses TLS: add --tls DIR"),
    Row("worker-tls-missing-dir", ("worker", "{closed}", "--tls", "{missing}"), "does not exist"),
    Row("worker-tls-refused", ("worker", "tls://127.0.0.1:1", "--tls", "{certs}", "--tls-name", "node"),
        "refused this machine or is unreachable", subprocess=True),
    # caelum scheduler
    Row("scheduler-port-taken", ("scheduler", "--host", "127.0.0.1", "--port", "{busyport}"), "Address already in use", subprocess=True),
    Row("scheduler-port-range", ("scheduler", "--host", "127.0.0.1", "--port", "99999"), "99999 is not in the range",
        usage=True),
    Row("scheduler-tls-protocol-no-certs", ("scheduler", "--host", "127.0.0.1", "--protocol", "tls"),
        "needs certificates: add --tls DIR"),
    Row("scheduler-tls-missing-dir", ("scheduler", "--host", "127.0.0.1", "--tls", "{missing}"), "does not exist"),
    Row("scheduler-bad-protocol", ("scheduler", "--protocol", "udp"), "'udp' is not one of", usage=True),
    # caelum certs
    Row("certs-init-on-a-file", ("certs", "init", "{file}"), "is a file", usage=True),
    Row("certs-init-twice", ("certs", "init", "{certs}"), "already holds a cluster CA"),
    Row("certs-init-zero-days", ("certs", "init", "{missing}", "--days", "0"), "--days must be at least 1"),
    Row("certs-issue-no-ca", ("certs", "issue", "node2", "--dir", "{missing}"), "no cluster CA", subprocess=True),
    Row("certs-issue-corrupt-ca", ("certs", "issue", "node2", "--dir", "{badcerts}"), "not valid PEM"),
    Row("certs-issue-bad-name", ("certs", "issue", "../etc", "--dir", "{certs}"), "bad certificate name"),
    Row("certs-issue-reserved-name", ("certs", "issue", "ca", "--dir", "{certs}"), "bad certificate name"),
    Row("certs-issue-bad-host", ("certs", "issue", "node2", "--dir", "{certs}", "--host", "bad host!"), "bad --host"),
    Row("certs-issue-exists", ("certs", "issue", "node", "--dir", "{certs}"), "already exists; pass --force"),
    Row("certs-issue-no-dir", ("certs", "issue", "node2"), "Missing option '--dir'", usage=True),
    Row("certs-show-missing", ("certs", "show", "{missing}"), "is not a certificate file"),
    Row("certs-show-garbage", ("certs", "show", "{garbage}"), "is not a PEM certificate", subprocess=True),
    Row("certs-show-folder", ("certs", "show", "{dir}"), "is not a certificate file"),
    Row("unknown-command", ("frobnicate",), "No such command 'frobnicate'", usage=True, subprocess=True),
    # caelum analyze
    Row("analyze-missing", ("analyze", "{missing}"), "no such file or directory"),
    Row("analyze-missing-out", ("analyze", "{missing}", "--out", "{outdir}"), "no such file or directory",
        no_output=("outdir",)),
    Row("analyze-missing-json", ("analyze", "{missing}", "--json"), "no such file or directory"),
    Row("analyze-not-python", ("analyze", "{file}"), "is not a Python file"),
    Row("analyze-bad-plugin", ("analyze", "{src}", "--plugins", "{badplugins}", "--out", "{outempty}"),
        "broken.py:1: SyntaxError: invalid syntax — fix the file and run again", subprocess=True,
        no_output=("outempty",)),
    Row("analyze-bad-plugin-json", ("analyze", "{src}", "--plugins", "{badplugins}", "--json"),
        "SyntaxError"),
    Row("analyze-plugin-missing", ("analyze", "{src}", "--plugins", "{missing}"), "does-not-exist: does not exist — "),
    Row("analyze-plugin-binary", ("analyze", "{src}", "--plugins", "{binary}"), "is not UTF-8 Python source"),
    Row("analyze-plugin-folder-empty", ("analyze", "{src}", "--plugins", "{dir}"), "holds no analyzer plugin"),
    Row("analyze-unknown-analyzer", ("analyze", "{src}", "--analyzer", "nosuch"), "unknown analyzer(s) nosuch"),
    Row("analyze-out-is-file", ("analyze", "{src}", "--out", "{file}"), "is a file", usage=True),
    Row("analyze-out-under-file", ("analyze", "{src}", "--out", "{file}/sub"), "is a file, not a folder"),
    Row("analyze-time-limit-zero", ("analyze", "{src}", "--time-limit", "0", "--out", "{outdir}"),
        "--time-limit must be a positive", no_output=("outdir",)),
    Row("analyze-time-limit-text", ("analyze", "{src}", "--time-limit", "soon"), "'soon' is not a valid float",
        usage=True),
    Row("analyze-unreachable", ("analyze", "{src}", "--scheduler", "{closed}", "--out", "{outdir}", "--json"),
        "cannot reach the scheduler", no_output=("outdir",)),
    Row("analyze-bad-scheduler", ("analyze", "{src}", "--scheduler", "foo://x:1"), "bad scheduler address"),
    # caelum codemod
    Row("codemod-no-such-module", ("codemod", "{src}", "--transform", "nosuch:Class"),
        "cannot import transform module 'nosuch'", subprocess=True),
    Row("codemod-bad-format", ("codemod", "{src}", "--transform", "badformat"), "must look like module:Class"),
    Row("codemod-transform-file-missing", ("codemod", "{src}", "--transform", "{missing}.py:Class"),
        "transform file not found"),
    Row("codemod-transform-binary", ("codemod", "{src}", "--transform", "{binary}:Class"),
        "is not UTF-8 Python source"),
    Row("codemod-not-a-codemod", ("codemod", "{src}", "--transform", "{notcodemod}:Nope"),
        "is not a libcst Codemod class"),
    Row("codemod-abstract", ("codemod", "{src}", "--transform", "libcst.codemod:Codemod"),
        "abstract Codemod base class"),
    Row("codemod-missing-path", ("codemod", "{missing}", "--transform", "nosuch:Class", "--json"),
        "no such file or directory"),
    Row("codemod-no-transform", ("codemod", "{src}"), "Missing option '--transform'", usage=True),
    Row("codemod-unreachable", ("codemod", "{src}", "--apply", "--scheduler", "{closed}", "--transform",
                                "libcst.codemod.commands.noop:NOOPCommand"), "cannot reach the scheduler"),
    Row("codemod-bad-scheduler", ("codemod", "{src}", "--transform", "libcst.codemod.commands.noop:NOOPCommand",
                                  "--scheduler", "foo://x:1", "--json"), "bad scheduler address"),
    # caelum test
    Row("test-missing", ("test", "{missing}", "--junit", "{junitout}"), "no such project folder",
        no_output=("junitout",)),
    Row("test-on-a-file", ("test", "{file}"), "is a file", usage=True),
    Row("test-shards-zero", ("test", "{dir}", "--shards", "0"), "--shards must be 'auto' or a positive number",
        subprocess=True),
    Row("test-shards-text", ("test", "{dir}", "--shards", "many", "--json"), "--shards must be 'auto'"),
    Row("test-bad-dist", ("test", "{dir}", "--dist", "bogus"), "'bogus' is not one of", usage=True),
    Row("test-negative-retry", ("test", "{dir}", "--retry-failed", "-1"), "--retry-failed must be 0 or more"),
    Row("test-timeout-zero", ("test", "{dir}", "--timeout", "0"), "--timeout must be positive"),
    Row("test-bad-env", ("test", "{dir}", "--env", "NOEQUALS"), "expected KEY=VALUE"),
    Row("test-unreachable", ("test", "{dir}", "--scheduler", "{closed}", "--json", "--junit", "{junitout}"),
        "cannot reach the scheduler", no_output=("junitout",)),
    Row("test-bad-scheduler", ("test", "{dir}", "--scheduler", "foo://x:1"), "bad scheduler address"),
    # caelum llm
    Row("llm-status-not-a-url", ("llm", "status", "--backend", "notaurl"), "host 'notaurl' is not known",
        subprocess=True),
    Row("llm-status-not-a-url-json", ("llm", "status", "--backend", "notaurl", "--json"), "is not known"),
    Row("llm-status-bad-scheme", ("llm", "status", "--backend", "ftp://x:1"), "is not an Ollama URL"),
    Row("llm-status-bad-port", ("llm", "status", "--backend", "http://127.0.0.1:99999"), "is not an Ollama URL"),
    Row("llm-status-unreachable", ("llm", "status", "--scheduler", "{closed}"), "cannot reach the scheduler"),
    Row("llm-status-bad-scheduler", ("llm", "status", "--scheduler", "foo://x:1", "--json"), "bad scheduler address"),
    Row("llm-pull-no-such-machine", ("llm", "pull", "m", "--backend", "{closedurl}", "--machines", "nosuch"),
        "no Ollama backend on machine 'nosuch'"),
    Row("llm-pull-no-such-machine-json", ("llm", "pull", "m", "--backend", "{closedurl}", "--machines", "nosuch",
                                          "--json"), "no Ollama backend on machine 'nosuch'"),
    Row("llm-pull-all-down", ("llm", "pull", "m", "--backend", "{closedurl}"), "no Ollama backend is up"),
    Row("llm-pull-no-model", ("llm", "pull"), "Missing argument 'MODEL'", usage=True),
    Row("llm-pull-unreachable", ("llm", "pull", "m", "--scheduler", "{closed}"), "cannot reach the scheduler"),
    Row("llm-serve-not-a-url", ("llm", "serve", "--backend", "notaurl", "--port", "0"), "is not known"),
    Row("llm-serve-port-range", ("llm", "serve", "--port", "99999"), "99999 is not in the range", usage=True),
    Row("llm-serve-port-taken", ("llm", "serve", "--host", "127.0.0.1", "--port", "{busyport}", "--backend",
                                 "{closedurl}"), "is already in use"),
    Row("llm-serve-bad-scheduler", ("llm", "serve", "--scheduler", "foo://x:1", "--port", "0"),
        "bad scheduler address"),
    Row("llm-unknown-subcommand", ("llm", "bogus"), "No such command 'bogus'", usage=True),
    # caelum up / down
    Row("up-missing", ("up", "{missing}"), "does not exist"),
    Row("up-on-a-folder", ("up", "{dir}"), "is a directory", usage=True),
    Row("up-malformed-yaml", ("up", "{badyaml}"), "not valid YAML at line 2", subprocess=True),
    Row("up-malformed-yaml-json", ("up", "{badyaml}", "--json"), "not valid YAML"),
    Row("up-unknown-key", ("up", "{unknownkey}", "--check"), "bogus_key: unknown key"),
    Row("up-binary-file", ("up", "{binary}"), "not a text (UTF-8) YAML file"),
    Row("up-not-a-mapping", ("up", "{file}"), "expected a mapping with scheduler: and workers:"),
    Row("down-missing", ("down", "{missing}", "--json"), "does not exist"),
    Row("down-malformed-yaml", ("down", "{badyaml}"), "not valid YAML"),
    Row("down-unknown-key", ("down", "{unknownkey}"), "bogus_key: unknown key"),
    # caelum mcp
    Row("mcp-http-public-no-token", ("mcp", "--transport", "http", "--host", "0.0.0.0"),
        "refusing to serve MCP on 0.0.0.0 without a token", subprocess=True),
    Row("mcp-bad-scheduler", ("mcp", "--scheduler", "foo://x:1"), "bad scheduler address"),
    Row("mcp-tls-missing-dir", ("mcp", "--tls", "{missing}"), "does not exist"),
    Row("mcp-bad-transport", ("mcp", "--transport", "bogus"), "'bogus' is not one of", usage=True),
    Row("mcp-port-range", ("mcp", "--transport", "http", "--port", "99999"), "99999 is not in the range", usage=True),
    # caelum run / caelum runs (workflows)
    Row("run-missing-file", ("run", "{missing}"), "does not exist", subprocess=True),
    Row("run-syntax-error", ("run", "{wfsyntax}"), "wf_syntax.py:1: SyntaxError: invalid syntax — fix the file"),
    Row("run-no-workflow", ("run", "{wfnone}"), "defines no workflow"),
    Row("run-cycle", ("run", "{wfcycle}"), "has a cycle: a -> b -> a"),
    Row("run-impossible-resources", ("run", "{wfgpu8}"), "no machine can meet the requirement (gpus=8)"),
    Row("run-unknown-parameter", ("run", "{fanout}", "-p", "bogus=1"), "unknown parameter(s) 'bogus'"),
    Row("run-parameter-not-name-value", ("run", "{fanout}", "-p", "novalue"), "is not NAME=VALUE"),
    Row("run-parameter-wrong-type", ("run", "{fanout}", "-p", "n=abc", "--json"), "must be of type int"),
    Row("run-unreachable", ("run", "{fanout}", "--scheduler", "{closed}"), "cannot reach the scheduler"),
    Row("runs-show-unknown", ("runs", "show", "nosuch", "--json"), "no run 'nosuch'"),
    # caelum bi
    Row("bi-missing-definition", ("bi", "report", "{missing}"), "does not exist", subprocess=True),
    Row("bi-definition-syntax-error", ("bi", "report", "{wfsyntax}", "--out", "{outdir}"), "wf_syntax.py:1: SyntaxError",
        no_output=("outdir",)),
    Row("bi-bad-since", ("bi", "report", "{weekly}", "--since", "banana", "--json"), "--since 'banana' is not understood"),
    Row("bi-out-is-a-file", ("bi", "report", "{weekly}", "--out", "{file}"), "is a file", usage=True),
    Row("bi-unreachable", ("bi", "report", "{weekly}", "--scheduler", "{closed}", "--out", "{outdir}"),
        "cannot reach the scheduler", no_output=("outdir",)),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("bad-input")
    (root / "file.txt").write_text("just text\n")
    (root / "empty").mkdir()
    certs.init_ca(root / "certs")
    certs.issue("node", root / "certs")
    bad = root / "badcerts"
    bad.mkdir()
    for name in ("ca.pem", "ca-key.pem", "node.pem", "node-key.pem"):
        (bad / name).write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    dircert = root / "dircert"
    dircert.mkdir()
    (dircert / "ca.pem").write_bytes((root / "certs" / "ca.pem").read_bytes())
    (dircert / "node.pem").mkdir()
    (dircert / "node-key.pem").write_bytes((root / "certs" / "node-key.pem").read_bytes())
    unreadable = root / "unreadable"
    unreadable.mkdir()
    for name in ("ca.pem", "node.pem", "node-key.pem"):
        (unreadable / name).write_bytes((root / "certs" / name).read_bytes())
        (unreadable / name).chmod(0)
    (root / "garbage.pem").write_text("hello\n")
    (root / "src").mkdir()
    (root / "src" / "mod.py").write_text("def f(x):\n    return x + 1\n")
    (root / "badplugins").mkdir()
    (root / "badplugins" / "broken.py").write_text("def analyzer(:\n")
    (root / "notcodemod.py").write_text("VALUE = 1\n")
    (root / "bad.yaml").write_text("scheduler: {host: [\nworkers: :\n")
    (root / "unknown.yaml").write_text("scheduler: {host: 127.0.0.1}\nworkers:\n  - {host: 127.0.0.1}\nbogus_key: 1\n")
    (root / "outempty").mkdir()
    (root / "binary.py").write_bytes(b"\xff\xfe\x00\x80\x81 not text\n")
    (root / "wf_syntax.py").write_text("def broken(:\n")
    (root / "wf_none.py").write_text("VALUE = 1\n")
    (root / "wf_gpu8.py").write_text(
        "from caelum_dask.workflow import Workflow, task\n\n@task(resources={'gpus': 8})\ndef big():\n    return 1\n\n"
        "with Workflow('gpu8') as wf:\n    big()\n")
    (root / "wf_cycle.py").write_text(
        "import networkx as nx\nfrom caelum_dask.workflow import Workflow\n\ndef f(*args):\n    return 1\n\n"
        "G = nx.DiGraph()\nG.add_node('a', func=f)\nG.add_node('b', func=f)\nG.add_edge('a', 'b')\n"
        "G.add_edge('b', 'a')\nwf = Workflow.from_graph(G, name='cyc')\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        yield {
            "missing": str(root / "does-not-exist"), "file": str(root / "file.txt"), "dir": str(root / "empty"),
            "certs": str(root / "certs"), "badcerts": str(bad), "dircert": str(dircert),
            "garbage": str(root / "garbage.pem"), "unreadable": str(unreadable),
            "closed": f"tcp://127.0.0.1:{closed.getsockname()[1]}", "busyport": str(busy.getsockname()[1]),
            "closedurl": f"http://127.0.0.1:{closed.getsockname()[1]}",
            "src": str(root / "src"), "badplugins": str(root / "badplugins"),
            "notcodemod": str(root / "notcodemod.py"), "badyaml": str(root / "bad.yaml"),
            "unknownkey": str(root / "unknown.yaml"), "outdir": str(root / "out-not-yet"),
            "outempty": str(root / "outempty"), "junitout": str(root / "junit-not-yet.xml"),
            "home": str(root / "caelum-home"), "binary": str(root / "binary.py"),
            "wfsyntax": str(root / "wf_syntax.py"), "wfnone": str(root / "wf_none.py"),
            "wfgpu8": str(root / "wf_gpu8.py"), "wfcycle": str(root / "wf_cycle.py"),
            "fanout": str(REPO / "workflows" / "fanout.py"), "weekly": str(REPO / "bi" / "weekly_team.py"),
        }
    finally:
        closed.close()
        busy.close()
        for name in ("ca.pem", "node.pem", "node-key.pem"):
            (unreadable / name).chmod(stat.S_IRUSR | stat.S_IWUSR)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    escaped: BaseException | None = None  # an exception that got past the CLI group


def _in_process(argv: list[str], home: str) -> Outcome:
    import dask.config
    from click.testing import CliRunner

    from caelum_dask.cli import cli

    with dask.config.set({"caelum.connect-timeout": 1, "caelum.home": home}):
        result = CliRunner().invoke(cli, argv, prog_name="caelum", env={"CAELUM_SCHEDULER": None, "CAELUM_TLS": None, "CAELUM_MCP_TOKEN": None})
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return Outcome(result.exit_code, result.stdout, result.stderr, escaped)


@pytest.fixture(scope="module")
def results(workspace: dict[str, str]) -> dict[tuple[str, str], Outcome]:
    # This module-scoped fixture runs before the per-test caelum home exists: give the rows their
    # own, so no cache or state from ~/.caelum (e.g. an analysis cache hit) changes their outcome.
    home = workspace["home"]
    env = {"DASK_CAELUM__CONNECT_TIMEOUT": "1", "CAELUM_SCHEDULER": "", "CAELUM_TLS": "", "CAELUM_MCP_TOKEN": "",
           "DASK_CAELUM__HOME": home}
    runnable = [r for r in ROWS if not (r.needs_non_root and os.geteuid() == 0)]

    def argv(row: Row) -> list[str]:
        return [arg.format(**workspace) for arg in row.argv]

    def run(row: Row) -> tuple[tuple[str, str], Outcome]:
        done = run_caelum(*argv(row), env=env, timeout=90)
        return (row.id, "subprocess"), Outcome(done.returncode, done.stdout, done.stderr)

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = dict(pool.map(run, [r for r in runnable if r.subprocess]))
    for row in runnable:
        outcomes[(row.id, "in-process")] = _in_process(argv(row), home)
    return outcomes


def test_rows_have_unique_ids() -> None:
    assert len({r.id for r in ROWS}) == len(ROWS)


CASES = [(row, mode) for row in ROWS for mode in ("in-process", "subprocess") if mode == "in-process" or row.subprocess]


@pytest.mark.parametrize(("row", "mode"), CASES, ids=[f"{r.id}-{m}" for r, m in CASES])
def test_bad_input_gives_one_clear_line(row: Row, mode: str, results: dict[tuple[str, str], Outcome],
                                        workspace: dict[str, str]) -> None:
    if row.needs_non_root and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    result = results[(row.id, mode)]
    assert result.escaped is None, f"{type(result.escaped).__name__}: {result.escaped}"
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    # the embedded-cluster notice is information, not part of the error
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and not line.startswith("caelum: no scheduler given;")]
    if row.usage:
        assert result.returncode == 2
        assert lines[-1].startswith("Error: ") and row.expect in lines[-1], result.stderr
    else:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("caelum: error: ") and row.expect in lines[0], result.stderr
        assert len(lines[0]) < 400
    for name in row.no_output:
        left = Path(workspace[name])
        assert not left.exists() or (left.is_dir() and not any(left.iterdir())), f"{left} was left behind"


def test_failed_export_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    """analyze --out writes each file through a temp file: a write that dies half-way leaves the
    previous complete file (or none), and no temp file."""
    from caelum_dask.analysis.report import _atomic

    target = tmp_path / "summary.json"
    target.write_text('{"complete": true}\n')

    def dies_half_way(tmp: Path) -> None:
        tmp.write_text('{"compl')
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        _atomic(target, dies_half_way)
    assert target.read_text() == '{"complete": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    _atomic(tmp_path / "new.json", lambda tmp: tmp.write_text("{}\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.json", "summary.json"]

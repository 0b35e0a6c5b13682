"""Distributed analysis on real Dask clusters: tables vs radon, bad files, cache, plugins,
time limit, one vs two workers, a worker killed mid-run, the workflow step and events."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import dask.config
import pandas as pd
import pytest
from dask.utils import key_split
from distributed import Client
from radon.complexity import add_inner_blocks, cc_visit
from radon.metrics import mi_visit
from radon.raw import analyze as radon_raw

from caelum_dask import events
from caelum_dask.analysis import analyze
from caelum_dask.analysis.steps import analyze_step
from caelum_dask.errors import InvalidInput, SchedulerUnreachable

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "analysis_corpus"
PLUGINS = REPO / "analyzers"
VOLATILE = ["seconds", "cached"]


@pytest.fixture(scope="module")
def cluster_client() -> Client:
    """One embedded 2-worker caelum cluster shared by this module's tests."""
    with dask.config.set({"caelum.embedded.n-workers": 2}):
        from caelum_dask import connect

        client = connect()
    yield client
    client.close()


def stable(result) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    return {name: frame.drop(columns=[c for c in VOLATILE if c in frame.columns]).reset_index(drop=True)
            for name, frame in result.tables.items()}


def test_tables_match_radon_file_by_file(cluster_client: Client) -> None:
    result = analyze(CORPUS, client=cluster_client, batch_bytes=2_000)
    assert result.stats["tasks"] > 1  # batched, several tasks
    files = result.files.set_index("path")
    for path in sorted(CORPUS.glob("*.py")):
        src = path.read_text()
        row = files.loc[path.name]
        assert {k: int(row[k]) for k in radon_raw(src)._fields} == radon_raw(src)._asdict()
        assert abs(row["mi"] - mi_visit(src, True)) <= 0.01
        expected = sorted((f"{b.classname}.{b.name}" if getattr(b, "is_method", False) else b.name,
                           b.lineno, b.complexity) for b in add_inner_blocks(cc_visit(src)))
        got = result.functions[result.functions["path"] == path.name]
        assert sorted(zip(got["fullname"], got["lineno"], got["complexity"])) == expected
    assert set(result.functions["rank"]) <= set("ABCDEF")
    assert result.summary["errors"] == 0
    assert result.summary["files"] == len(list(CORPUS.glob("*.py")))


def test_bad_files_are_error_rows_and_the_run_goes_on(cluster_client: Client, tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("def f(x):\n    return x or 1\n")
    (tmp_path / "broken.py").write_text("def f(:\n    pass\n")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "latin1_no_cookie.py").write_bytes("s = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "latin1_cookie.py").write_bytes("# -*- coding: latin-1 -*-\ns = 'caf\xe9'\n".encode("latin-1"))
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    (tmp_path / "huge.py").write_text("x = 1\n" * 50_000)
    with dask.config.set({"caelum.analysis.max-file-bytes": 100_000}):
        result = analyze(tmp_path, client=cluster_client)
    status = dict(zip(result.files["path"], result.files["status"]))
    assert status == {"good.py": "ok", "broken.py": "error", "empty.py": "ok", "latin1_no_cookie.py": "error",
                      "latin1_cookie.py": "ok", "nul.py": "error"}
    errors = result.errors.set_index("path")
    assert errors.loc["broken.py", "stage"] == "parse" and "line 1" in errors.loc["broken.py", "message"]
    assert errors.loc["latin1_no_cookie.py", "stage"] == "decode"
    assert result.summary["errors"] == 3
    assert {e["path"] for e in result.summary["error_files"]} == {"broken.py", "latin1_no_cookie.py", "nul.py"}
    assert result.skipped.to_dict("records") == [{"path": "huge.py", "reason": "huge (> 100000 bytes)"}]
    assert int(result.files.set_index("path").loc["empty.py", "loc"]) == 0
    with dask.config.set({"caelum.analysis.max-file-bytes": 100_000}):
        everything = analyze(tmp_path, client=cluster_client, include_all=True, use_cache=False)
    huge = everything.files.set_index("path").loc["huge.py"]
    assert huge["status"] == "ok" and int(huge["loc"]) == 50_000


def test_cache_hits_misses_and_nothing_sent_when_unchanged(cluster_client: Client, tmp_path: Path) -> None:
    shutil.copytree(CORPUS, tmp_path / "src")
    first = analyze(tmp_path / "src", client=cluster_client)
    n = first.stats["files"]
    assert (first.stats["cached"], first.stats["analysed"]) == (0, n)
    # Unchanged tree: no client is needed at all (an unreachable scheduler is never contacted).
    warm = analyze(tmp_path / "src", scheduler="tcp://127.0.0.1:9")
    assert (warm.stats["cached"], warm.stats["analysed"], warm.stats["tasks"]) == (n, 0, 0)
    assert warm.files["cached"].all()
    pd.testing.assert_frame_equal(stable(warm)["functions"], stable(first)["functions"])
    pd.testing.assert_frame_equal(stable(warm)["files"], stable(first)["files"])
    # One file changed: only it misses.
    target = tmp_path / "src" / "boolean_ops.py"
    target.write_text(target.read_text() + "\n\ndef added(a):\n    return a if a else 0\n")
    again = analyze(tmp_path / "src", client=cluster_client)
    assert (again.stats["cached"], again.stats["analysed"]) == (n - 1, 1)
    assert "added" in set(again.functions["name"])
    # A different analyzer set is a different cache key.
    plugged = analyze(tmp_path / "src", client=cluster_client, plugins=[str(PLUGINS)])
    assert plugged.stats["cached"] == 0
    with pytest.raises(SchedulerUnreachable):
        target.write_text(target.read_text() + "\nz = 1\n")
        analyze(tmp_path / "src", scheduler="tcp://127.0.0.1:9")


def test_plugins_find_todo_print_and_deprecated_calls(cluster_client: Client, tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "lib" / "mod.py").write_text(
        "import datetime as dt\nfrom datetime import datetime\nimport os\n"
        "# TODO: drop this\n"
        "def now():\n    print('x')  # FIXME noisy\n    return dt.datetime.utcnow(), datetime.utcnow()\n"
        "def pipe():\n    return os.popen('ls')\n"
        "def shadow(print):\n    print('not builtins')\n"
        "if __name__ == '__main__':\n    print(now())\n"
    )
    (tmp_path / "tests" / "test_mod.py").write_text("print('tests may print')\n")
    result = analyze(tmp_path, client=cluster_client, plugins=[str(PLUGINS)])
    found = sorted(zip(result.findings["path"], result.findings["code"], result.findings["line"]))
    assert found == [
        ("lib/mod.py", "DEPRECATED", 7), ("lib/mod.py", "DEPRECATED", 7), ("lib/mod.py", "DEPRECATED", 9),
        ("lib/mod.py", "FIXME", 6), ("lib/mod.py", "PRINT", 6), ("lib/mod.py", "TODO", 4),
    ]
    assert list(result.tables["debt"]["kind"]) == ["TODO", "FIXME"]
    # The deprecated list is configurable per run.
    custom = analyze(tmp_path, client=cluster_client, plugins=[str(PLUGINS / "deprecated_calls.py")],
                     options={"deprecated-calls": {"apis": {"os.popen": "use subprocess"}}})
    assert custom.findings["message"].tolist() == ["os.popen() is deprecated: use subprocess"]


def test_plugin_errors_are_clear(tmp_path: Path) -> None:
    (tmp_path / "bad_plugin.py").write_text("def broken(:\n")
    with pytest.raises(InvalidInput, match="bad_plugin.py:1: SyntaxError: invalid syntax — fix the file"):
        analyze(CORPUS, plugins=[str(tmp_path / "bad_plugin.py")], scheduler="tcp://127.0.0.1:9")
    (tmp_path / "none.py").write_text("X = 1\n")
    with pytest.raises(InvalidInput, match="defines no analyzer"):
        analyze(CORPUS, plugins=[str(tmp_path / "none.py")], scheduler="tcp://127.0.0.1:9")
    with pytest.raises(InvalidInput, match="unknown analyzer"):
        analyze(CORPUS, analyzers=["nope"], scheduler="tcp://127.0.0.1:9")


def test_only_needed_parsers_run_and_time_limit_stops_a_pathological_file(
        cluster_client: Client, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "stuck.py").write_text("y = 2\n")
    plugin = tmp_path / "plugins" / "stuck.py"
    plugin.parent.mkdir()
    plugin.write_text(
        "from caelum_dask.analysis.plugin import SourceAnalyzer\n"
        "class Spin(SourceAnalyzer):\n"
        "    name = 'spin'\n    tables = ('files',)\n"
        "    def analyze(self, source):\n"
        "        while self.ctx.path == 'stuck.py':\n            pass\n"
    )
    result = analyze(src, client=cluster_client, plugins=[str(plugin)], analyzers=["raw"], time_limit=1.0)
    status = dict(zip(result.files["path"], result.files["status"]))
    assert status == {"a.py": "ok", "stuck.py": "error"}
    err = result.errors.iloc[0]
    assert (err["path"], err["stage"]) == ("stuck.py", "timeout")
    assert int(result.files.set_index("path").loc["a.py", "loc"]) == 1
    # Timed-out files are not cached: the next run tries them again.
    again = analyze(src, client=cluster_client, plugins=[str(plugin)], analyzers=["raw"], time_limit=1.0)
    assert again.stats["cached"] == 1


def test_parsers_are_chosen_by_the_enabled_analyzers(monkeypatch: pytest.MonkeyPatch) -> None:
    import libcst

    from caelum_dask.analysis.builtins import BUILTINS
    from caelum_dask.analysis.pipeline import analyze_file

    calls: list[str] = []
    real = libcst.parse_module
    monkeypatch.setattr(libcst, "parse_module", lambda *a, **k: calls.append("cst") or real(*a, **k))
    data = (CORPUS / "decorators.py").read_bytes()
    out = analyze_file("decorators.py", "decorators", False, data, list(BUILTINS.values()), {})
    assert calls == [] and out["file"]["status"] == "ok"
    from caelum_dask.analysis.loader import make_spec

    from libcst.metadata import MetadataWrapper, PositionProvider, QualifiedNameProvider

    resolved: list[object] = []
    real_resolve = MetadataWrapper.resolve_many
    monkeypatch.setattr(MetadataWrapper, "resolve_many",
                        lambda self, providers: resolved.extend(providers) or real_resolve(self, providers))
    spec = make_spec([], [str(PLUGINS / "todo_comments.py")])
    out = analyze_file("decorators.py", "decorators", False, data, spec.classes(), {})
    assert calls == ["cst"] and out["file"]["status"] == "ok"
    assert PositionProvider in resolved and QualifiedNameProvider not in resolved  # only what is declared
    spec = make_spec([], [str(PLUGINS)])
    out = analyze_file("decorators.py", "decorators", False, data, spec.classes(), {})
    assert calls == ["cst", "cst"]  # three CST plugins, one parse
    assert QualifiedNameProvider in resolved


def test_one_worker_gives_the_same_results_as_two(cluster_client: Client) -> None:
    two = analyze(CORPUS, client=cluster_client, plugins=[str(PLUGINS)], use_cache=False, batch_bytes=1_500)
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as one_client:
        one = analyze(CORPUS, client=one_client, plugins=[str(PLUGINS)], use_cache=False, batch_bytes=1_500)
    a, b = stable(one), stable(two)
    assert set(a) == set(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_workflow_step_inside_a_task_and_events(cluster_client: Client, tmp_path: Path) -> None:
    summary = cluster_client.submit(analyze_step, str(CORPUS), out=str(tmp_path / "out"), use_cache=False,
                                    pure=False).result()
    assert summary["files"] == len(list(CORPUS.glob("*.py")))
    assert summary["analysed"] == summary["files"] and summary["errors"] == 0
    assert Path(summary["outputs"]["report"]).read_text().count("Bokeh") > 0
    assert (tmp_path / "out" / "functions.parquet").exists()
    run_id = summary["run_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        msgs = [m for _, m in cluster_client.get_events(events.ANALYSIS) if m.get("run_id") == run_id]
        kinds = [m["event"] for m in msgs]
        if "run-finished" in kinds:
            break
        time.sleep(0.1)
    assert kinds[0] == "run-started" and kinds[-1] == "run-finished"
    batches = [m for m in msgs if m["event"] == "batch-finished"]
    assert sum(m["files"] for m in batches) == summary["files"]
    assert all(m["worker"].startswith("tcp://") and "@" in m["machine"] for m in batches)
    started = msgs[0]
    assert started["tasks"] == len(batches) and started["files"] == summary["files"]


def test_dask_keys_are_prefixed(cluster_client: Client, tmp_path: Path) -> None:
    from distributed import get_task_stream

    shutil.copytree(CORPUS, tmp_path / "src")
    with get_task_stream(client=cluster_client) as stream:
        result = analyze(tmp_path / "src", client=cluster_client, run_id="keyprobe", batch_bytes=3_000)
    keys = {str(t["key"]) for t in stream.data}
    assert len(keys) == result.stats["tasks"] >= 2
    assert {key_split(k) for k in keys} == {"analyze_batch"}  # Dask's prefix is the step
    assert all("-keyprobe." in k for k in keys)  # the run id is in the token


@pytest.mark.slow
def test_killing_a_worker_mid_run_gives_the_clean_results(process_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    for i in range(6):
        shutil.copytree(CORPUS, src / f"copy{i}")
    plugin = tmp_path / "slow.py"
    plugin.write_text(  # real work per file, so the run lasts long enough to lose a worker in it
        "from caelum_dask.analysis.plugin import SourceAnalyzer\n"
        "class Work(SourceAnalyzer):\n    name = 'work'\n    tables = ('files',)\n"
        "    def analyze(self, source):\n"
        "        n = 0\n        for _ in range(400_000):\n            n += 1\n"
        "        self.row('files', work=n)\n"
    )
    process_cluster.start_scheduler()
    process_cluster.start_worker("w1")
    process_cluster.start_worker("w2")
    client = process_cluster.wait_for_workers(2)
    try:
        holder: dict[str, object] = {}

        def run() -> None:
            try:
                holder["result"] = analyze(src, client=client, plugins=[str(plugin)], use_cache=False,
                                           batch_bytes=2_000, run_id="killrun")
            except BaseException as exc:  # surfaced below
                holder["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            finished = [m for _, m in client.get_events(events.ANALYSIS)
                        if m.get("run_id") == "killrun" and m["event"] == "batch-finished"]
            if finished:
                break
            time.sleep(0.05)
        assert finished, "no batch finished"
        victim = client.scheduler_info(n_workers=-1)["workers"][finished[0]["worker"]]["name"]
        assert thread.is_alive()  # the run is still going when its worker dies
        process_cluster.kill_worker(victim)
        thread.join(timeout=240)
        assert not thread.is_alive()
        assert "error" not in holder, holder.get("error")
        killed = holder["result"]
        with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as clean_client:
            clean = analyze(src, client=clean_client, plugins=[str(plugin)], use_cache=False, batch_bytes=2_000)
        a, b = stable(killed), stable(clean)
        for name in a:
            pd.testing.assert_frame_equal(a[name], b[name], obj=name)
        assert killed.summary["errors"] == 0 and killed.summary["files"] == 6 * len(list(CORPUS.glob("*.py")))
        workers = {m["worker"] for _, m in client.get_events(events.ANALYSIS)
                   if m.get("run_id") == "killrun" and m["event"] == "batch-finished"}
        assert len(workers) == 2  # the killed worker had finished a batch; the survivor did the rest
    finally:
        client.close()

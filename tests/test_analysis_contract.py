"""Analysis and codemods on the shared contract: options from the caller's config (caelum.yaml
defaults, values that reach the workers with the tasks), ProgressEvents from real runs, and
the published ``--json`` shapes of ``caelum analyze`` / ``caelum codemod``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dask.config
import pytest
import yaml
from distributed import Client, LocalCluster

from caelum_dask.analysis import AnalysisOptions, CodemodOptions, analyze
from caelum_dask.analysis.codemod import run_codemod
from caelum_dask.progress import ProgressEvent

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "analysis_corpus"
CODEMODS = Path(__file__).parent / "analysis_codemods"
YAML = yaml.safe_load((REPO / "caelum_dask" / "caelum.yaml").read_text())["caelum"]["analysis"]

#: the keys `caelum analyze --json` has always printed (plus "outputs" with --out)
SUMMARY_KEYS = {"run_id", "root", "files", "analysed", "cached", "tasks", "skipped", "errors", "error_files",
                "lines", "sloc", "functions", "mean_complexity", "ranks", "mean_mi", "worst_functions",
                "largest_files", "findings", "imports", "seconds"}
IMPORTS_KEYS = {"modules", "edges", "cycles", "cycle_groups", "most_central", "max_fan_in", "max_fan_out"}
OUTPUT_KEYS = {"files", "functions", "imports", "findings", "errors", "skipped", "modules", "summary", "report"}
CODEMOD_KEYS = {"files", "changed", "skipped", "failed", "written"}

SPIN_PLUGIN = (
    "from caelum_dask.analysis.plugin import SourceAnalyzer\n"
    "class Spin(SourceAnalyzer):\n"
    "    name = 'spin'\n    tables = ('files',)\n"
    "    def analyze(self, source):\n"
    "        while self.ctx.path == 'stuck.py':\n            pass\n"
)


def _caelum(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, on a one-worker embedded cluster."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASK_CAELUM__EMBEDDED__N_WORKERS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(CODEMODS)])}
    return subprocess.run([sys.executable, "-m", "caelum_dask", *args], capture_output=True, text=True,
                          timeout=180, env=env, cwd=cwd)


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.py").write_text("def f(x):\n    if x:\n        return 1\n    return 2\n")
    (root / "b.py").write_text("import a\n\n\nclass B:\n    def g(self):\n        return a.f(3)\n")
    (root / "broken.py").write_text("def (:\n")
    return root


def test_from_config_takes_caelum_yaml_defaults_and_what_was_given() -> None:
    options = AnalysisOptions.from_config()
    assert (options.batch_bytes, options.time_limit, options.max_file_bytes, options.plugin_defaults) == (
        YAML["batch-bytes"], YAML["file-time-limit"], YAML["max-file-bytes"], YAML["plugin-options"])
    assert (options.include_all, options.use_cache, options.out, options.analyzers) == (False, True, None, None)
    given = AnalysisOptions.from_config(time_limit=2.5, batch_bytes=None, include_all=True)
    assert (given.time_limit, given.batch_bytes, given.include_all) == (2.5, YAML["batch-bytes"], True)
    with dask.config.set({"caelum.analysis.plugin-options": {"x": {"a": 1, "b": 2}}}):
        merged = AnalysisOptions.from_config(plugin_options={"x": {"a": 3}, "y": {"c": 4}})
    assert merged.merged_plugin_options() == {"x": {"a": 3}, "y": {"c": 4}}  # per analyzer, as before
    codemod = CodemodOptions.from_config(transform="m:C")
    assert (codemod.context_lines, codemod.batch_bytes, codemod.apply) == (
        YAML["codemod-diff-context"], YAML["batch-bytes"], False)
    with pytest.raises(TypeError, match="no option"):
        AnalysisOptions.from_config(batch_size=1)


def test_progress_events_arrive_from_a_real_run(thread_client: Client, tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    events: list[ProgressEvent] = []
    result = analyze(root, AnalysisOptions.from_config(batch_bytes=20), client=thread_client,
                     progress=events.append)
    assert {e.job for e in events} == {"analyze"} and {e.run_id for e in events} == {result.run_id}
    counts = [e for e in events if e.total is not None]
    statuses = [e.message for e in events if e.total is None]
    assert any("3 files" in m and "0 from the cache" in m for m in statuses)
    assert any("batches" in m for m in statuses)
    assert [e.done for e in counts] == sorted(e.done for e in counts) and counts[-1].done == counts[-1].total == 3
    assert counts[-1].failed == 1 == result.summary["errors"]  # broken.py
    assert counts[-1].detail["batches_done"] == counts[-1].detail["batches"] == result.stats["tasks"]
    # From the cache: every file is done at once, no batch is sent.
    again: list[ProgressEvent] = []
    cached = analyze(root, client=thread_client, batch_bytes=20, progress=again.append)
    assert cached.stats["tasks"] == 0
    assert [(e.done, e.total, e.failed) for e in again if e.total is not None] == [(3, 3, 1)]
    assert not any("batches" in (e.message or "") for e in again)


def test_codemod_progress_and_result_dict(thread_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(CODEMODS))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    return old_api(1)\n")
    (tmp_path / "pkg" / "b.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "broken.py").write_text("def (:\n")
    monkeypatch.chdir(tmp_path)
    events: list[ProgressEvent] = []
    result = run_codemod("pkg", options=CodemodOptions.from_config(transform="rename_old_api:RenameOldApi"),
                         client=thread_client, progress=events.append)
    counts = [e for e in events if e.total is not None]
    assert {e.job for e in events} == {"codemod"} and counts[-1].done == counts[-1].total == 3
    assert counts[-1].failed == 1
    shape = result.to_dict()
    assert set(shape) == CODEMOD_KEYS and shape["files"] == 3
    assert shape["changed"] == [str(tmp_path / "pkg" / "a.py")] and list(shape["failed"]) == [
        str(tmp_path / "pkg" / "broken.py")]
    assert "@@" in result.diffs[str(tmp_path / "pkg" / "a.py")]


def test_callers_config_reaches_the_workers_that_do_not_have_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "stuck.py").write_text("y = 2\n")
    (src / "big.py").write_text("z = 3\n" * 40)
    plugin = tmp_path / "spin.py"
    plugin.write_text(SPIN_PLUGIN)

    def worker_limit() -> object:  # nested: pickled by value, runs in the worker process
        from caelum_dask import config

        return config.get("analysis.file-time-limit")

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        with dask.config.set({"caelum.analysis.file-time-limit": 1, "caelum.analysis.max-file-bytes": 100}):
            on_worker = client.run(worker_limit)
            assert list(on_worker.values()) == [YAML["file-time-limit"]]  # the worker never saw the caller's 1
            result = analyze(src, client=client, plugins=[str(plugin)], analyzers=["raw"], use_cache=False)
    status = dict(zip(result.files["path"], result.files["status"]))
    assert status == {"a.py": "ok", "stuck.py": "error"}
    assert result.errors[["path", "stage"]].values.tolist() == [["stuck.py", "timeout"]]
    assert result.tables["skipped"].values.tolist() == [["big.py", "huge (> 100 bytes)"]]


@pytest.mark.slow
def test_cli_json_shapes_are_unchanged(tmp_path: Path) -> None:
    proc = _caelum("analyze", str(CORPUS), "--json", "--no-cache", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == SUMMARY_KEYS | {"outputs"}
    assert set(summary["imports"]) == IMPORTS_KEYS and set(summary["outputs"]) == OUTPUT_KEYS
    n = len(list(CORPUS.glob("*.py")))
    assert f"caelum analyze: {n}/{n} files, 0 failed" in proc.stderr  # the one display's final line
    assert set(json.loads((tmp_path / "out" / "summary.json").read_text())) == SUMMARY_KEYS
    plain = _caelum("analyze", str(CORPUS), "--json")
    assert set(json.loads(plain.stdout)) == SUMMARY_KEYS  # no "outputs" without --out
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("value = old_api(1)\n")
    codemod = _caelum("codemod", "pkg", "--transform", "rename_old_api:RenameOldApi", "--json", cwd=tmp_path)
    assert codemod.returncode == 0, codemod.stderr
    report = json.loads(codemod.stdout)
    assert set(report) == CODEMOD_KEYS
    assert report["files"] == 1 and report["changed"] == [str(tmp_path / "pkg" / "a.py")] and report["written"] == []

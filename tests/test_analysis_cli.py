"""The real `caelum analyze` / `caelum codemod` CLI (subprocesses), libcst.tool parity for
codemods, and the example script."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness import run_caelum

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "analysis_corpus"
CODEMODS = Path(__file__).parent / "analysis_codemods"
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO), str(CODEMODS)]), "DASK_CAELUM__EMBEDDED__N_WORKERS": "2"}

OLD_API_FILES = {
    "pkg/__init__.py": "",
    "pkg/a.py": "import os\n\n\ndef f():\n    return old_api(1) + old_api(2)\n\n\nx = 1\n",
    "pkg/b.py": "def g():\n    return 3\n",
    "pkg/sub/c.py": "from newlib import other\n\nvalue = old_api(other)\n",
    "pkg/gen.py": "# @" "generated\nold_api()\n",
    "pkg/broken.py": "def (:\n",
}


def _tree(root: Path) -> None:
    for rel, text in OLD_API_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_missing_path_is_one_clear_line() -> None:
    proc = run_caelum("analyze", "/no/such/path", env=ENV)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["caelum: error: no such file or directory: /no/such/path"]
    assert "Traceback" not in proc.stderr
    proc = run_caelum("codemod", "/no/such/path", "--transform", "rename_old_api:RenameOldApi", env=ENV)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == ["caelum: error: no such file or directory: /no/such/path"]


def test_bad_transform_is_one_clear_line() -> None:
    proc = run_caelum("codemod", str(CORPUS), "--transform", "no_such_module:Thing", env=ENV)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("caelum: error: cannot import transform module")
    proc = run_caelum("codemod", str(CORPUS), "--transform", "json:JSONDecoder", env=ENV)
    assert proc.stderr.strip().splitlines() == [
        "caelum: error: json:JSONDecoder is not a libcst Codemod class (e.g. a VisitorBasedCodemodCommand)"]


@pytest.mark.slow
def test_analyze_json_and_out(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = run_caelum("analyze", str(CORPUS), "--json", "--out", str(out), "--plugins", str(REPO / "analyzers"),
                      env=ENV)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    n = len(list(CORPUS.glob("*.py")))
    assert summary["files"] == n and summary["errors"] == 0 and summary["analysed"] == n
    assert "analyze: " in proc.stderr and f"{n}/{n} files" in proc.stderr  # progress on stderr
    for table in ("files", "functions", "imports", "findings", "errors", "modules", "skipped"):
        assert (out / f"{table}.csv").exists()
        frame = pd.read_parquet(out / f"{table}.parquet")
        assert len(frame) == len(pd.read_csv(out / f"{table}.csv"))
    assert len(pd.read_parquet(out / "functions.parquet")) == summary["functions"]
    assert json.loads((out / "summary.json").read_text())["files"] == n
    html = (out / "report.html").read_text()
    assert "Bokeh" in html and "https://cdn.bokeh.org" not in html  # self-contained (inline BokehJS)
    assert summary["findings"].get("PRINT", 0) >= 1  # decorators.py prints in library code
    # Second run: all from the cache, nothing analysed.
    proc = run_caelum("analyze", str(CORPUS), "--json", "--plugins", str(REPO / "analyzers"), env=ENV)
    again = json.loads(proc.stdout)
    assert (again["cached"], again["analysed"], again["tasks"]) == (n, 0, 0)


def _libcst_tool(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "libcst.tool", "codemod", "-x", "rename_old_api.RenameOldApi", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **ENV},
    )


def _diffs(stdout: str, root: Path) -> list[str]:
    """The per-file diff blocks of a codemod's stdout, with the tree's root made neutral."""
    text = stdout.replace(str(root), "ROOT")
    return sorted("--- " + block for block in re.split(r"(?m)^--- ", text) if block)


@pytest.mark.slow
def test_codemod_diff_and_apply_equal_libcst_tool(tmp_path: Path) -> None:
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    _tree(ours_dir)
    _tree(theirs_dir)
    expected = _libcst_tool(theirs_dir, "pkg", "-u", "5", "--no-format", "-j", "1", "--hide-progress")
    assert "+from newlib import new_api" in expected.stdout
    proc = run_caelum("codemod", "pkg", "--transform", "rename_old_api:RenameOldApi", env=ENV, cwd=ours_dir)
    # libcst.tool prints each file's diff in completion order (arbitrary); ours is sorted.
    assert _diffs(proc.stdout, ours_dir) == _diffs(expected.stdout, theirs_dir)
    assert len(_diffs(proc.stdout, ours_dir)) == 2
    assert proc.returncode == expected.returncode == 1  # broken.py fails in both
    assert f"Failed to codemod {ours_dir / 'pkg/broken.py'}" in proc.stderr
    assert f"Skipped codemodding {ours_dir / 'pkg/gen.py'}: Generated file." in proc.stderr
    # --apply writes exactly what libcst.tool writes in place.
    _libcst_tool(theirs_dir, "pkg", "--no-format", "-j", "1", "--hide-progress")
    proc = run_caelum("codemod", "pkg", "--transform", "rename_old_api:RenameOldApi", "--apply", "--json",
                      env=ENV, cwd=ours_dir)
    report = json.loads(proc.stdout)
    assert report["written"] == [str(ours_dir / "pkg/a.py"), str(ours_dir / "pkg/sub/c.py")]
    for rel in OLD_API_FILES:
        assert (ours_dir / rel).read_bytes() == (theirs_dir / rel).read_bytes(), rel


@pytest.mark.slow
def test_example_runs(tmp_path: Path) -> None:
    src = tmp_path / "project"
    shutil.copytree(CORPUS, src)
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "analyze_codebase.py"), str(src),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **ENV, "DASK_CAELUM__HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert "most complex:" in proc.stdout and "report:" in proc.stdout
    assert (tmp_path / "out" / "report.html").exists()
    assert (tmp_path / "out" / "findings.parquet").exists()

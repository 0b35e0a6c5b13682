"""Unchanged re-runs: no cluster contacted, nothing recomputed or re-exported, one cache
transaction per run, and the same tables cold, warm and in a single process."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client

from caelum_dask.analysis import analyze
from caelum_dask.analysis.cache import ResultCache
from caelum_dask.analysis.discovery import discover
from caelum_dask.analysis.engine import _Rows, _tables
from caelum_dask.analysis.loader import make_spec
from caelum_dask.analysis.tasks import analyze_batch

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "distributed", "networkx", "libcst", "bokeh")


def _tree(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("from pkg import a\n")
    (root / "pkg" / "a.py").write_text("import os\nfrom pkg.sub import c\n\n\ndef f(x):\n    if x:\n"
                                       "        return 1\n    return c.g(x)\n")
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "c.py").write_text("from pkg import a\n\n\nclass C:\n    def g(self, y):\n"
                                               "        return [i for i in y if i and a.f(i)]\n\n\ndef g(x):\n"
                                               "    return x or 2\n")
    (root / "pkg" / "broken.py").write_text("def (:\n")
    return root


def _closed_address() -> str:
    """A scheduler address nothing listens on (a port just freed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def _same_tables(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert set(a) == set(b)
    for name in a:
        left, right = (t[name].drop(columns=["cached", "seconds"], errors="ignore") for t in (a, b))
        pd.testing.assert_frame_equal(left.reset_index(drop=True), right.reset_index(drop=True),
                                      check_dtype=False, obj=name)


def _run_fields(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("run_id", "seconds", "cached", "analysed", "tasks")}


def test_warm_run_contacts_no_cluster_and_matches_cold_and_single_process(thread_client: Client,
                                                                           tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache.sqlite"
    cold = analyze(root, client=thread_client, cache_path=cache, batch_bytes=60)
    assert cold.stats["analysed"] == 5 and cold.stats["tasks"] > 1

    # Nothing listens at this address: the warm run must not try it.
    warm = analyze(root, scheduler=_closed_address(), cache_path=cache)
    assert (warm.stats["cached"], warm.stats["analysed"], warm.stats["tasks"]) == (5, 0, 0)
    assert warm.summary["cached"] == 5 and warm.summary["run_id"] != cold.summary["run_id"]
    assert _run_fields(warm.to_dict()) == _run_fields(cold.to_dict())
    assert warm.files["cached"].all() and not cold.files["cached"].any()
    _same_tables(warm.tables, cold.tables)
    assert sorted(warm.graph.edges) == sorted(cold.graph.edges) and len(warm.graph.edges) >= 2

    # The same rows computed in this process, no cluster, no cache.
    files, skipped = discover(root)
    spec = make_spec()
    items = [(f.rel, f.module, f.is_package, Path(f.abspath).read_bytes()) for f in files]
    rows = _Rows(files, {rel: data for rel, _, _, data in items})
    rows.add(reversed(analyze_batch("local", items, spec, None)), cached=False)  # any arrival order
    local, graph = _tables(files, skipped, rows)
    _same_tables(local, cold.tables)
    assert sorted(graph.edges) == sorted(cold.graph.edges)


def test_a_changed_file_is_analysed_again_and_the_tables_follow(thread_client: Client, tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache.sqlite"
    analyze(root, client=thread_client, cache_path=cache)
    (root / "pkg" / "b.py").write_text("import pkg.a\n\n\ndef h(x):\n    return x if x else 0\n")
    again = analyze(root, client=thread_client, cache_path=cache)
    assert (again.stats["cached"], again.stats["analysed"]) == (5, 1)
    assert "pkg.b" in set(again.files["module"]) and ("pkg.b", "pkg.a") in again.graph.edges
    warm = analyze(root, scheduler=_closed_address(), cache_path=cache)
    assert warm.stats["analysed"] == 0 and "pkg.b" in set(warm.files["module"])
    _same_tables(warm.tables, again.tables)


def _outputs_identity(outputs: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Each written file's inode and mtime (an export writes through a renamed temporary file)."""
    folder = Path(outputs["summary"]).parent
    found = {}
    for path in sorted(folder.iterdir()):
        st = path.stat()
        found[path.name] = (st.st_ino, st.st_mtime_ns)
    return found


def test_an_unchanged_export_is_kept_and_a_change_rewrites_it(thread_client: Client, tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cache, out = tmp_path / "cache.sqlite", tmp_path / "out"
    cold = analyze(root, client=thread_client, cache_path=cache, out=out)
    assert not pd.read_csv(out / "files.csv")["cached"].any()
    # First warm run: the files table now says "cached", so the export is written again.
    first = analyze(root, scheduler=_closed_address(), cache_path=cache, out=out)
    assert set(first.outputs) == set(cold.outputs)
    assert pd.read_csv(out / "files.csv")["cached"].all()
    before = _outputs_identity(first.outputs)

    second = analyze(root, scheduler=_closed_address(), cache_path=cache, out=out)
    after = _outputs_identity(second.outputs)
    assert second.outputs == first.outputs
    kept = {name for name in before if name != "summary.json"}
    assert {name: after[name] for name in kept} == {name: before[name] for name in kept}
    assert after["summary.json"] != before["summary.json"]
    assert json.loads((out / "summary.json").read_text())["run_id"] == second.summary["run_id"]
    assert "tables" not in second.__dict__  # nothing was loaded to keep the export

    # A file deleted from the folder is written again.
    (out / "functions.csv").unlink()
    third = analyze(root, scheduler=_closed_address(), cache_path=cache, out=out)
    assert (out / "functions.csv").is_file() and third.outputs == first.outputs

    (root / "pkg" / "a.py").write_text("def f(x):\n    return x\n")
    changed = analyze(root, client=thread_client, cache_path=cache, out=out)
    assert changed.stats["analysed"] == 1
    rewritten = _outputs_identity(changed.outputs)
    assert all(rewritten[name] != after[name] for name in kept if name != "functions.csv")
    assert len(pd.read_csv(out / "functions.csv")) == len(changed.functions)


def _wal_commits(db: Path) -> int:
    """Transactions in ``db``'s write-ahead log: frames whose header records a database size."""
    wal = db.with_name(db.name + "-wal")
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    page_size = struct.unpack(">I", data[8:12])[0]
    commits, offset = 0, 32
    while offset + 24 + page_size <= len(data):
        commits += struct.unpack(">I", data[offset + 4:offset + 8])[0] != 0
        offset += 24 + page_size
    return commits


def test_one_cache_transaction_per_run(thread_client: Client, tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache.sqlite"
    ResultCache(cache).close()  # the schema exists before the log is watched
    reader = sqlite3.connect(str(cache))  # keeps the log from being checkpointed away at close
    try:
        reader.execute("SELECT count(*) FROM results").fetchone()
        cold = analyze(root, client=thread_client, cache_path=cache, batch_bytes=40, out=tmp_path / "out")
        assert cold.stats["tasks"] >= 4
        assert _wal_commits(cache) == 1  # every batch's rows, the run's tables and the export record
        analyze(root, scheduler=_closed_address(), cache_path=cache)
        assert _wal_commits(cache) == 1  # a warm run without export writes nothing
        assert reader.execute("SELECT count(*) FROM results").fetchone()[0] == 5  # the broken file too
    finally:
        reader.close()


def test_warm_cli_imports_neither_pandas_nor_distributed(thread_client: Client, tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    cold = analyze(root, client=thread_client)  # the cache under this test's caelum home
    script = (
        "import json, sys\n"
        "from caelum_dask.cli import cli\n"
        "try:\n"
        "    cli(sys.argv[1:], prog_name='caelum')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"sys.stderr.write('HEAVY=' + json.dumps([m for m in {HEAVY!r} if m in sys.modules]) + '\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, "analyze", str(root), "--json", "--scheduler",
                           _closed_address()], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY=[]"], proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["cached"], summary["analysed"], summary["tasks"]) == (5, 0, 0)
    assert _run_fields(summary) == _run_fields(cold.to_dict())


def test_stored_tables_that_no_longer_load_are_assembled_again(thread_client: Client, tmp_path: Path) -> None:
    import pickle

    root = _tree(tmp_path / "src")
    cache = tmp_path / "cache.sqlite"
    cold = analyze(root, client=thread_client, cache_path=cache)
    with sqlite3.connect(str(cache)) as db:  # as if written by another pandas: unpickling fails
        db.execute("UPDATE runs SET tables = ?", (b"not a pickle",))
    warm = analyze(root, scheduler=_closed_address(), cache_path=cache)
    assert warm.stats["tasks"] == 0
    _same_tables(warm.tables, cold.tables)
    assert warm.files["cached"].all()

    # A deferred result pickles with its tables.
    again = pickle.loads(pickle.dumps(analyze(root, scheduler=_closed_address(), cache_path=cache)))
    _same_tables(again.tables, cold.tables)
    assert again.summary["cached"] == 5

"""The cc fast path of issue #17: no garbage collection while a file is analysed, few large
batches for a large run before anything is learned, no centrality pass on an edgeless import
graph; every result the same as without them."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dask.config
import networkx as nx
import pytest
from distributed import Client

from caelum_dask.analysis import AnalysisOptions, analyze
from caelum_dask.analysis.batching import unlearned_bytes
from caelum_dask.analysis.builtins import BUILTINS
from caelum_dask.analysis.collector import collector_paused
from caelum_dask.analysis.graph import module_table
from caelum_dask.analysis.pipeline import analyze_file
from caelum_dask.analysis.plugin import ASTAnalyzer

N_FILES = 120


@pytest.fixture(scope="module")
def two_workers() -> Iterator[Client]:
    """An embedded 2-worker caelum cluster (fresh home: nothing learned)."""
    from caelum_dask import connect

    with dask.config.set({"caelum.embedded.n-workers": 2}):
        client = connect()
    try:
        yield client
    finally:
        client.close()


def _tree(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(N_FILES):
        (root / f"m{i}.py").write_text(
            f"class C{i}:\n    def f(self, x):\n        if x and {i}:\n            return [y for y in x if y]\n"
            f"        return {i}\n\n\ndef g{i}(a, b):\n    while a:\n        a -= b or 1\n    return a\n")
    return root


class _SeesCollector(ASTAnalyzer):
    """Records whether the cyclic collector was on while analysers ran."""

    name = "sees-collector"
    tables = ("files",)

    def analyze(self, tree: object) -> None:
        self.row("files", collector_on=gc.isenabled())


def test_no_collection_runs_while_a_file_is_analysed() -> None:
    source = "\n".join(f"def f{i}(x):\n    return [y for y in x if y and {i}]\n" for i in range(3000)).encode()
    collections: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    assert gc.isenabled()
    gc.callbacks.append(seen)
    try:
        out = analyze_file("big.py", "big", False, source, [*BUILTINS.values(), _SeesCollector], {})
    finally:
        gc.callbacks.remove(seen)
    assert out["file"]["status"] == "ok" and len(out["tables"]["functions"]) == 3000
    assert out["file"]["collector_on"] is False
    # tens of thousands of AST nodes (a young-generation collection every 700 of them when
    # the collector is on) and at most the one collection that follows the file
    assert len(collections) <= 1
    assert gc.isenabled()  # back on afterwards


def test_collector_is_back_only_when_the_last_file_ends_and_only_if_it_was_on() -> None:
    inside, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other_thread)
    with collector_paused():
        worker.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's file is still being analysed
    release.set()
    worker.join(10)
    assert gc.isenabled()

    with pytest.raises(ZeroDivisionError), collector_paused():
        1 / 0
    assert gc.isenabled()  # also after an error

    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # the caller had it off: left off
    finally:
        gc.enable()


def test_unlearned_batch_size_is_batch_bytes_or_a_share_per_worker() -> None:
    assert unlearned_bytes(64_000, 1_000_000, 2, 16) == 64_000  # a small run: batch-bytes
    assert unlearned_bytes(64_000, 32_000_000, 2, 16) == 1_000_000  # the stdlib: 16 per worker
    assert unlearned_bytes(64_000, 32_000_000, 2, 0) == 64_000  # 0: always batch-bytes
    assert unlearned_bytes(64_000, 32_000_000, 2, None) == 64_000


def test_a_large_run_makes_about_batches_per_worker_tasks_with_the_same_results(
        two_workers: Client, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    options = AnalysisOptions.from_config(batch_bytes=100, batch_seconds=0, use_cache=False)  # nothing learned
    fixed = analyze(src, replace(options, batches_per_worker=0), client=two_workers, analyzers=["cc"])
    shared = analyze(src, replace(options, batches_per_worker=8), client=two_workers, analyzers=["cc"])
    assert fixed.stats["tasks"] == N_FILES  # every file over 100 bytes: one batch each
    # 8 per worker asked; whole files per batch: up to twice that when a file does not fit
    assert 8 * 2 <= shared.stats["tasks"] <= 2 * 8 * 2 < N_FILES
    for name in ("functions", "files"):
        ours = shared.tables[name].drop(columns=["seconds"], errors="ignore")
        theirs = fixed.tables[name].drop(columns=["seconds"], errors="ignore")
        assert ours.equals(theirs), name
    assert shared.summary["functions"] == fixed.summary["functions"] == 3 * N_FILES


def test_an_edgeless_import_graph_has_zero_centrality_as_networkx_says() -> None:
    graph = nx.DiGraph()
    graph.add_nodes_from(f"m{i}" for i in range(600))  # over 500: the sampled computation
    table = module_table(graph)
    expected = nx.betweenness_centrality(graph, k=128, seed=0)
    assert len(table) == 600 and set(expected.values()) == {0.0}
    assert table["centrality"].eq(0.0).all() and table["cycle"].eq(-1).all()
    assert table["module"].tolist() == sorted(graph.nodes)  # same order: centrality, then name

"""Metric parity with radon (corpus in tests/analysis_corpus and a stdlib sample), the linear
raw algorithm, the per-file time limit and file discovery. No cluster needed here."""

from __future__ import annotations

import ast
import random
import subprocess
import sysconfig
import tokenize
from pathlib import Path

import pytest
from radon.complexity import add_inner_blocks, cc_visit
from radon.metrics import h_visit, mi_visit
from radon.raw import analyze as radon_raw

from caelum_dask.analysis import raw as raw_module
from caelum_dask.analysis.complexity import blocks, cc_rank
from caelum_dask.analysis.discovery import discover, module_name
from caelum_dask.analysis.halstead import halstead
from caelum_dask.analysis.limits import AnalysisTimeout, call_with_limit
from caelum_dask.analysis.maintainability import mi_from
from caelum_dask.analysis.raw import analyze_raw

CORPUS = Path(__file__).parent / "analysis_corpus"
STDLIB_SAMPLE = 30
STDLIB_MAX_BYTES = 40_000  # radon's raw pass is quadratic on long statements; keep it quick


def radon_blocks(src: str) -> list[tuple[str, int, int, str]]:
    out = []
    for b in add_inner_blocks(cc_visit(src)):
        name = f"{b.classname}.{b.name}" if getattr(b, "is_method", False) and b.classname else b.name
        out.append((name, b.lineno, b.complexity, cc_rank(b.complexity)))
    return sorted(out)


def ours(src: str) -> dict:
    tree = ast.parse(src)
    found, total = blocks(tree)
    raw = analyze_raw(src)
    hal, _ = halstead(tree)
    return {
        "raw": raw.to_dict(),
        "blocks": sorted((b.fullname, b.lineno, b.complexity, cc_rank(b.complexity)) for b in found),
        "mi": mi_from(hal.volume, total, raw.lloc, raw.sloc, raw.comments, raw.multi),
        "halstead": hal,
    }


def assert_parity(src: str, label: str) -> None:
    mine = ours(src)
    assert mine["raw"] == radon_raw(src)._asdict(), label
    assert mine["blocks"] == radon_blocks(src), label
    assert abs(mine["mi"] - mi_visit(src, True)) <= 0.01, label
    expected = h_visit(src).total
    assert (mine["halstead"].h1, mine["halstead"].h2, mine["halstead"].N1, mine["halstead"].N2) == (
        expected.h1, expected.h2, expected.N1, expected.N2), label


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.py")), ids=lambda p: p.name)
def test_corpus_matches_radon(path: Path) -> None:
    assert_parity(path.read_text(encoding="utf-8"), path.name)


def test_corpus_covers_the_hard_constructs() -> None:
    text = "\n".join(p.read_text() for p in CORPUS.glob("*.py"))
    for construct in ("match ", "async def", "async for", "except*", "lambda", "@", " and ", " or ",
                      "finally:", "for j in", "\\\n", "; "):
        assert construct in text, construct


def _stdlib_sample() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts
                   and "test" not in p.parts and p.stat().st_size <= STDLIB_MAX_BYTES)
    return random.Random(4).sample(files, STDLIB_SAMPLE)


@pytest.mark.parametrize("path", _stdlib_sample(), ids=lambda p: p.name)
def test_stdlib_sample_matches_radon(path: Path) -> None:
    try:
        src = path.read_text(encoding="utf-8")
        ast.parse(src)
    except (UnicodeDecodeError, SyntaxError):
        pytest.skip("not parseable by this interpreter")
    assert_parity(src, str(path))


def test_raw_is_one_tokenizer_pass_on_long_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    """radon re-tokenizes a growing buffer (quadratic); we tokenize once, same numbers."""
    lines = ["data = ["] + [f"    {i},  # item {i}" for i in range(300)] + ["]", 'doc = """', "x", '"""']
    src = "\n".join(lines) + "\n"
    expected = radon_raw(src)._asdict()
    calls = []
    real = tokenize.generate_tokens
    monkeypatch.setattr(raw_module.tokenize, "generate_tokens", lambda rl: calls.append(1) or real(rl))
    assert analyze_raw(src).to_dict() == expected
    assert len(calls) == 1


def test_raw_falls_back_to_reference_on_error_tokens() -> None:
    src = "x = 1\ny = '\\u2028 line separator inside a string'\n".replace("\\u2028", "\u2028")
    try:
        expected = radon_raw(src)._asdict()
    except SyntaxError:
        with pytest.raises(SyntaxError):
            analyze_raw(src)
    else:
        assert analyze_raw(src).to_dict() == expected


def test_time_limit_interrupts_a_python_loop() -> None:
    def forever() -> None:
        while True:
            pass

    with pytest.raises(AnalysisTimeout, match="0.3 s limit"):
        call_with_limit(forever, 0.3)
    assert call_with_limit(lambda: 42, 5) == 42  # a quick call is untouched, no stray exception
    total = sum(range(1000))
    assert total == 499500


def test_cc_rank_bounds() -> None:
    assert [cc_rank(n) for n in (1, 5, 6, 10, 11, 20, 21, 30, 31, 40, 41, 100)] == list("AABBCCDDEEFF")


def test_module_names() -> None:
    assert module_name("pkg/sub/mod.py") == "pkg.sub.mod"
    assert module_name("pkg/__init__.py") == "pkg"
    assert module_name("src/pkg/a.py") == "pkg.a"


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())


def test_discovery_with_git_respects_gitignore_and_skips_vendored(tmp_path: Path) -> None:
    _write(tmp_path, {
        ".gitignore": "ignored/\n*_local.py\n",
        "pkg/a.py": "x = 1\n", "pkg/b_local.py": "x = 2\n", "ignored/c.py": "x = 3\n",
        "vendor/lib.py": "x = 4\n", "gen_pb2.py": "x = 5\n", "made.py": "# @generated by tool\nx = 6\n",
        "untracked.py": "x = 7\n", "notes.txt": "hi\n",
    })
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "pkg/a.py", ".gitignore"], check=True)
    files, skipped = discover(tmp_path)
    assert [f.rel for f in files] == ["pkg/a.py", "untracked.py"]
    assert {s["path"]: s["reason"] for s in skipped} == {
        "gen_pb2.py": "generated", "made.py": "generated", "vendor/lib.py": "vendored"}
    everything, _ = discover(tmp_path, include_all=True)
    assert [f.rel for f in everything] == ["gen_pb2.py", "made.py", "pkg/a.py", "untracked.py", "vendor/lib.py"]


def test_discovery_without_git_uses_nested_gitignores(tmp_path: Path) -> None:
    _write(tmp_path, {
        ".gitignore": "build_out/\n*.gen.py\n",
        "a.py": "", "x.gen.py": "", "build_out/b.py": "",
        "sub/.gitignore": "secret*.py\n!secret_ok.py\n",
        "sub/secret1.py": "", "sub/secret_ok.py": "", "sub/c.py": "",
        "big.py": "x = 1\n" * 100,
    })
    files, skipped = discover(tmp_path, max_bytes=100)
    assert [f.rel for f in files] == ["a.py", "sub/c.py", "sub/secret_ok.py"]
    assert skipped == [{"path": "big.py", "reason": "huge (> 100 bytes)"}]


def test_discovery_of_a_folder_the_enclosing_repo_ignores(tmp_path: Path) -> None:
    _write(tmp_path, {".gitignore": "versions/\n", "versions/lib/.gitignore": "skip.py\n",
                      "versions/lib/a.py": "", "versions/lib/skip.py": ""})
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    files, _ = discover(tmp_path / "versions" / "lib")
    assert [f.rel for f in files] == ["a.py"]

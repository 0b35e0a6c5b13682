"""Built-in analyzers: radon's metrics (raw, cc, halstead, mi), structure and imports.

They use the same plugin API as user analyzers. The radon metrics are defined on ``tokenize``
and ``ast``, so these never need libcst: a run with only built-ins never builds a CST.
"""

from __future__ import annotations

import ast
from typing import Any

from caelum_dask.analysis.astwalk import block_children, walk_statements
from caelum_dask.analysis.complexity import blocks, cc_rank
from caelum_dask.analysis.halstead import halstead
from caelum_dask.analysis.maintainability import mi_from, mi_rank
from caelum_dask.analysis.plugin import Analyzer, ASTAnalyzer, SourceAnalyzer
from caelum_dask.analysis.raw import analyze_raw


class RawAnalyzer(SourceAnalyzer):
    """loc, lloc, sloc, comments, multi, blank, single_comments (radon raw), linear time."""

    name = "raw"
    version = "1"
    tables = ("files",)

    def analyze(self, source: str) -> None:
        raw = analyze_raw(source)
        self.ctx.shared["raw"] = raw
        self.row("files", **raw.to_dict())


class ComplexityAnalyzer(ASTAnalyzer):
    """Cyclomatic complexity per function, method and class, with radon's A–F rank."""

    name = "cc"
    version = "1"
    tables = ("files", "functions")

    def analyze(self, tree: ast.Module) -> None:
        found, total = blocks(tree)
        self.ctx.shared["cc_total"] = total
        for block in found:
            self.row("functions", name=block.name, fullname=block.fullname, kind=block.kind,
                     classname=block.classname, lineno=block.lineno, endline=block.endline,
                     col_offset=block.col_offset, complexity=block.complexity,
                     rank=cc_rank(block.complexity))
        scores = [b.complexity for b in found]
        self.row("files", cc_total=total, cc_blocks=len(found),
                 cc_max=max(scores) if scores else 0,
                 cc_mean=(sum(scores) / len(scores)) if scores else 0.0)


class HalsteadAnalyzer(ASTAnalyzer):
    """Halstead metrics of the whole file (radon h_visit total)."""

    name = "halstead"
    version = "1"
    tables = ("files",)

    def analyze(self, tree: ast.Module) -> None:
        total, _functions = halstead(tree)
        self.ctx.shared["halstead"] = total
        self.row("files", **{f"h_{k}": v for k, v in total.to_dict().items()})


class MaintainabilityAnalyzer(Analyzer):
    """Maintainability index from the raw, cc and halstead results (radon mi, multi=True)."""

    name = "mi"
    version = "1"
    parser = "none"
    tables = ("files",)
    requires = ("raw", "cc", "halstead")

    def analyze(self) -> None:
        raw, hal = self.ctx.shared["raw"], self.ctx.shared["halstead"]
        score = mi_from(hal.volume, self.ctx.shared["cc_total"], raw.lloc, raw.sloc, raw.comments, raw.multi)
        self.row("files", mi=score, mi_rank=mi_rank(score))


class StructureAnalyzer(ASTAnalyzer):
    """Classes, functions, docstring coverage and annotation coverage per file."""

    name = "structure"
    version = "1"
    tables = ("files",)

    def analyze(self, tree: ast.Module) -> None:
        classes = functions = documented = documentable = 0
        slots = annotated = 0
        documentable += 1
        documented += ast.get_docstring(tree, clean=False) is not None
        for node, in_class in _walk_defs(tree):
            if isinstance(node, ast.ClassDef):
                classes += 1
            else:
                functions += 1
                s, a = _annotation_counts(node, in_class)
                slots += s
                annotated += a
            documentable += 1
            documented += ast.get_docstring(node, clean=False) is not None
        self.row("files", classes=classes, functions=functions, docstrings=documented,
                 docstring_coverage=documented / documentable,
                 annotation_slots=slots, annotated=annotated,
                 annotation_coverage=(annotated / slots) if slots else 1.0)


def _walk_defs(tree: ast.AST) -> Any:
    """Every class and function, with whether its direct parent is a class."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in block_children(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                yield child, isinstance(node, ast.ClassDef)
            stack.append(child)


def _annotation_counts(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> tuple[int, int]:
    """(annotatable slots, annotated slots): every parameter but a method's self/cls, plus the return."""
    args = node.args
    params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if method and params and not any(
        isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list
    ):
        params = params[1:]
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    slots = len(params) + 1
    annotated = sum(p.annotation is not None for p in params) + (node.returns is not None)
    return slots, annotated


class ImportsAnalyzer(ASTAnalyzer):
    """One row per imported module, resolved to an absolute dotted name (relative imports too)."""

    name = "imports"
    version = "1"
    tables = ("imports",)

    def analyze(self, tree: ast.Module) -> None:
        module = self.ctx.module
        package = module if self.ctx.is_package else module.rpartition(".")[0]
        for node in walk_statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.row("imports", target=alias.name, names="", level=0, lineno=node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".") if package else []
                    keep = len(parts) - (node.level - 1)
                    prefix = ".".join(parts[:max(keep, 0)])
                    base = ".".join(p for p in (prefix, base) if p)
                names = ",".join(a.name for a in node.names)
                self.row("imports", target=base, names=names, level=node.level, lineno=node.lineno)


BUILTINS: dict[str, type[Analyzer]] = {
    cls.name: cls
    for cls in (RawAnalyzer, ComplexityAnalyzer, HalsteadAnalyzer, MaintainabilityAnalyzer,
                StructureAnalyzer, ImportsAnalyzer)
}
DEFAULT_ANALYZERS: tuple[str, ...] = tuple(BUILTINS)

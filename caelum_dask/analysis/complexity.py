"""Cyclomatic complexity on Python's ``ast``, with radon's published counting rules.

The rules (radon.visitors.ComplexityVisitor): +1 for if/elif/ternary, for/while (+1 more with
an ``else``), each except handler and a try's ``else``, each comprehension and its ``if``s,
each extra operand of and/or, assert, each ``case`` except a bare ``case _``. A function
starts at 1 and does not include its closures' complexity; a class is 1 plus its body and
methods. Ranks A–F are radon's ``cc_rank``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from caelum_dask.analysis.astwalk import LEAVES, fields_of

_AST = ast.AST


def cc_rank(cc: int) -> str:
    """radon's rank letter: A 1–5, B 6–10, C 11–20, D 21–30, E 31–40, F 41+."""
    if cc < 0:
        raise ValueError("complexity must be non-negative")
    return chr(min(int(math.ceil(cc / 10.0) or 1) - (1, 0)[5 - cc < 0], 5) + 65)


@dataclass
class Block:
    """A function, method or class with its complexity (radon's Function/Class)."""

    kind: str  # "function" | "method" | "class"
    name: str
    lineno: int
    col_offset: int
    endline: int
    classname: str | None
    complexity: int
    closures: list["Block"] = field(default_factory=list)
    methods: list["Block"] = field(default_factory=list)
    inner_classes: list["Block"] = field(default_factory=list)
    real_complexity: int = 0

    @property
    def fullname(self) -> str:
        return f"{self.classname}.{self.name}" if self.classname and self.kind == "method" else self.name


def _match_count(node: ast.Match) -> int:
    wildcard = any(getattr(case.pattern, "pattern", False) is None for case in node.cases)
    return max(0, len(node.cases) - wildcard)


def _loop_count(node: ast.For | ast.While | ast.AsyncFor) -> int:
    return bool(node.orelse) + 1


#: decision points a node adds (radon's ComplexityVisitor.generic_visit), by exact node type
DECISIONS: dict[type, Callable[[Any], int]] = {
    ast.Try: lambda node: len(node.handlers) + bool(node.orelse),  # as radon: TryStar is not counted
    ast.BoolOp: lambda node: len(node.values) - 1,
    ast.If: lambda node: 1,
    ast.IfExp: lambda node: 1,
    ast.Match: _match_count,
    ast.For: _loop_count,
    ast.While: _loop_count,
    ast.AsyncFor: _loop_count,
    ast.comprehension: lambda node: len(node.ifs) + 1,
}


class ComplexityVisitor:
    """Counts decision points; functions and classes get their own nested visitor.

    Not an ``ast.NodeVisitor``: :meth:`visit` dispatches on the exact node type and walks the
    children itself (:mod:`caelum_dask.analysis.astwalk`), in the same order, with the same
    results as radon's visitor — at about half its cost per node.
    """

    def __init__(self, to_method: bool = False, classname: str | None = None, off: bool = True) -> None:
        self.off = off
        self.complexity = 1 if off else 0
        self.functions: list[Block] = []
        self.classes: list[Block] = []
        self.to_method = to_method
        self.classname = classname
        self.max_line: float = float("-inf")

    @property
    def functions_complexity(self) -> int:
        return sum(f.complexity for f in self.functions) - len(self.functions)

    @property
    def classes_complexity(self) -> int:
        return sum(c.real_complexity for c in self.classes) - len(self.classes)

    @property
    def total_complexity(self) -> int:
        return self.complexity + self.functions_complexity + self.classes_complexity + (not self.off)

    def visit(self, node: ast.AST) -> None:
        """Count ``node`` and everything under it (functions and classes as radon: on their own)."""
        kind = type(node)
        if kind is ast.Assert:  # counted, children not visited (as radon)
            self.complexity += 1
            return
        if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self.visit_FunctionDef(node)  # type: ignore[arg-type]
            return
        if kind is ast.ClassDef:
            self.visit_ClassDef(node)  # type: ignore[arg-type]
            return
        lineno = getattr(node, "lineno", None)
        if lineno is not None and lineno > self.max_line:
            self.max_line = lineno
        count = DECISIONS.get(kind)
        if count is not None:
            self.complexity += count(node)
        for name in fields_of(kind):
            value = getattr(node, name, None)
            for item in value if type(value) is list else (value,):
                if type(item) in LEAVES:  # a name or literal: only its line counts
                    if item.lineno > self.max_line:
                        self.max_line = item.lineno
                elif isinstance(item, _AST):
                    self.visit(item)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        closures: list[Block] = []
        body = 1
        visitor = self
        for child in node.body:
            visitor = ComplexityVisitor(off=False)
            visitor.visit(child)
            closures.extend(visitor.functions)
            body += visitor.complexity
        endline = max(node.lineno, visitor.max_line)
        self.functions.append(Block(
            "method" if self.to_method else "function", node.name, node.lineno, node.col_offset,
            int(endline), self.classname, body, closures=closures,
        ))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        methods: list[Block] = []
        inner: list[Block] = []
        body = 1
        max_lines: list[float] = [node.lineno]
        for child in node.body:
            visitor = ComplexityVisitor(True, node.name, off=False)
            visitor.visit(child)
            methods.extend(visitor.functions)
            body += visitor.complexity + visitor.functions_complexity + len(visitor.functions)
            max_lines.append(visitor.max_line)
            inner.extend(visitor.classes)
        endline = max(max_lines + [m.endline for m in methods])
        block = Block("class", node.name, node.lineno, node.col_offset, int(endline), None, 0,
                      methods=methods, inner_classes=inner, real_complexity=body)
        block.complexity = (
            body if not methods else int(body / float(len(methods))) + (len(methods) > 1)
        )
        self.classes.append(block)


def blocks(tree: ast.AST) -> tuple[list[Block], int]:
    """Every block radon reports with closures/inner classes flattened (``radon cc --show-closures``),
    and the module's total complexity (used by the maintainability index)."""
    visitor = ComplexityVisitor()
    visitor.visit(tree)
    top: list[Block] = list(visitor.functions)
    for cls in visitor.classes:
        top.append(cls)
        top.extend(cls.methods)
    return _flatten(top), visitor.total_complexity


def _flatten(top: list[Block]) -> list[Block]:
    """radon.complexity.add_inner_blocks: closures and inner classes as top-level blocks."""
    out: list[Block] = []
    pending = top[:]
    while pending:
        block = pending.pop()
        out.append(block)
        for inner in (*block.closures, *block.inner_classes):
            named = _replace(inner, name=f"{block.name}.{inner.name}")
            pending.append(named)
            for meth in named.methods:
                pending.append(_replace(meth, classname=named.name))
    out.sort(key=lambda b: (b.lineno, b.col_offset, b.name))
    return out


def _replace(block: Block, **changes: Any) -> Block:
    data = {**block.__dict__, **changes}
    return Block(**data)

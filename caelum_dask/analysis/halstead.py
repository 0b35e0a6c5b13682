"""Halstead metrics on Python's ``ast`` with radon's operator/operand rules.

Operators: binary, unary, boolean, augmented-assignment and comparison operators. Operands:
their arguments; names, attributes and constants are compared by value, any other operand
expression counts as distinct (as in radon). Function bodies are counted with the function
name as context, so equal names in two functions are distinct operands.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HalsteadReport:
    h1: int
    h2: int
    N1: int
    N2: int
    vocabulary: int
    length: int
    calculated_length: float
    volume: float
    difficulty: float
    effort: float
    time: float
    bugs: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_VALUE_ATTR = {ast.Name: "id", ast.Attribute: "attr", ast.Constant: "value"}


class HalsteadVisitor(ast.NodeVisitor):
    def __init__(self, context: str | None = None) -> None:
        self.operators_seen: set[Any] = set()
        self.operands_seen: set[Any] = set()
        self.operators = 0
        self.operands = 0
        self.context = context
        self.function_visitors: list[HalsteadVisitor] = []

    def _add(self, n_ops: int, n_operands: int, ops: Any, operands: Any, node: ast.AST) -> None:
        self.operators += n_ops
        self.operands += n_operands
        self.operators_seen.update(ops)
        for operand in operands:
            attr = _VALUE_ATTR.get(type(operand))
            value = getattr(operand, attr) if attr else operand
            self.operands_seen.add((self.context, value))
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        self._add(1, 2, (type(node.op).__name__,), (node.left, node.right), node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        self._add(1, 1, (type(node.op).__name__,), (node.operand,), node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        self._add(1, len(node.values), (type(node.op).__name__,), node.values, node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._add(1, 2, (type(node.op).__name__,), (node.target, node.value), node)

    def visit_Compare(self, node: ast.Compare) -> None:
        self._add(len(node.ops), len(node.comparators) + 1, [type(o).__name__ for o in node.ops],
                  node.comparators + [node.left], node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        func = HalsteadVisitor(context=node.name)
        for child in node.body:
            visitor = HalsteadVisitor(context=node.name)
            visitor.visit(child)
            for target in (self, func):
                target.operators += visitor.operators
                target.operands += visitor.operands
                target.operators_seen.update(visitor.operators_seen)
                target.operands_seen.update(visitor.operands_seen)
        self.function_visitors.append(func)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def report(self) -> HalsteadReport:
        h1, h2 = len(self.operators_seen), len(self.operands_seen)
        n1, n2 = self.operators, self.operands
        h, n = h1 + h2, n1 + n2
        length = h1 * math.log(h1, 2) + h2 * math.log(h2, 2) if h1 and h2 else 0
        volume = n * math.log(h, 2) if h != 0 else 0
        difficulty = (h1 * n2) / float(2 * h2) if h2 != 0 else 0
        effort = difficulty * volume
        return HalsteadReport(h1, h2, n1, n2, h, n, length, volume, difficulty, effort,
                              effort / 18.0, volume / 3000.0)


def halstead(tree: ast.AST) -> tuple[HalsteadReport, list[tuple[str, HalsteadReport]]]:
    """The module's Halstead report and one per top-level function (radon's h_visit)."""
    visitor = HalsteadVisitor()
    visitor.visit(tree)
    return visitor.report(), [(v.context or "", v.report()) for v in visitor.function_visitors]

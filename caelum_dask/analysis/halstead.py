"""Halstead metrics on Python's ``ast`` with radon's operator/operand rules.

Operators: binary, unary, boolean, augmented-assignment and comparison operators. Operands:
their arguments; names, attributes and constants are compared by value, any other operand
expression counts as distinct (as in radon). Function bodies are counted with the function
name as context, so equal names in two functions are distinct operands.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from caelum_dask.analysis.astwalk import LEAVES, fields_of

_AST = ast.AST


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


def _op(node: Any) -> str:
    return type(node.op).__name__


#: per counted node type: (operators, operands, distinct operators, the operand nodes), as
#: radon's HalsteadVisitor's visit_BinOp/UnaryOp/BoolOp/AugAssign/Compare count them
COUNTED: dict[type, Callable[[Any], tuple[int, int, Any, Any]]] = {
    ast.BinOp: lambda n: (1, 2, (_op(n),), (n.left, n.right)),
    ast.UnaryOp: lambda n: (1, 1, (_op(n),), (n.operand,)),
    ast.BoolOp: lambda n: (1, len(n.values), (_op(n),), n.values),
    ast.AugAssign: lambda n: (1, 2, (_op(n),), (n.target, n.value)),
    ast.Compare: lambda n: (len(n.ops), len(n.comparators) + 1, [type(o).__name__ for o in n.ops],
                            n.comparators + [n.left]),
}


class HalsteadVisitor:
    """radon's Halstead counting; :meth:`visit` dispatches on the exact node type and walks the
    children itself (same order, same counts as radon's ``ast.NodeVisitor``, less overhead)."""

    def __init__(self, context: str | None = None) -> None:
        self.operators_seen: set[Any] = set()
        self.operands_seen: set[Any] = set()
        self.operators = 0
        self.operands = 0
        self.context = context
        self.function_visitors: list[HalsteadVisitor] = []

    def visit(self, node: ast.AST) -> None:
        """Count ``node`` and everything under it (a function's body on its own, as radon)."""
        kind = type(node)
        if kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            self.visit_FunctionDef(node)  # type: ignore[arg-type]
            return
        counted = COUNTED.get(kind)
        if counted is not None:
            n_ops, n_operands, ops, operands = counted(node)
            self.operators += n_ops
            self.operands += n_operands
            self.operators_seen.update(ops)
            for operand in operands:
                attr = _VALUE_ATTR.get(type(operand))
                self.operands_seen.add((self.context, getattr(operand, attr) if attr else operand))
        for name in fields_of(kind):
            value = getattr(node, name, None)
            for item in value if type(value) is list else (value,):
                if type(item) not in LEAVES and isinstance(item, _AST):  # names and literals count nothing
                    self.visit(item)

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

"""Faster equivalents of ``ast.iter_child_nodes`` and ``ast.walk`` for the built-in analyzers.

Why: the radon metrics visit every node of every file, once per analyzer; ``ast.NodeVisitor``
costs a method lookup, two generator layers (``iter_fields``, ``iter_child_nodes``) and a
``try`` per field of every node, which made our cc pass slower than radon's own. These walk
the same children in the same order, reading each node type's fields once (``_fields`` is the
documented list of a node class's child fields) and skipping the marker nodes no metric
counts (``Load``/``Store``/``Del``, the operators).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator

_AST = ast.AST
_FIELDS: dict[type, tuple[str, ...]] = {}
#: fields holding only marker nodes without position or children: the expression context
#: (Load/Store/Del) and the operator of BinOp/UnaryOp/BoolOp/AugAssign/Compare (read by the
#: Halstead counting from the node itself, never visited for anything)
_MARKERS = frozenset({"ctx", "op", "ops"})
#: node types that never hold another node (a name, a literal): a visitor can count them inline
LEAVES = frozenset({ast.Name, ast.Constant})


def fields_of(kind: type) -> tuple[str, ...]:
    """The fields of a node type that can hold child nodes, in ``_fields`` order."""
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(n for n in getattr(kind, "_fields", ()) if n not in _MARKERS)
    return names


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """The direct children of ``node``, as ``ast.iter_child_nodes`` yields them (less markers)."""
    found: list[ast.AST] = []
    for name in fields_of(type(node)):
        value = getattr(node, name, None)
        if type(value) is list:
            found.extend(item for item in value if isinstance(item, _AST))
        elif isinstance(value, _AST):
            found.append(value)
    return found


def walk(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``tree`` (itself included) in ``ast.walk``'s breadth-first order."""
    todo = deque([tree])
    while todo:
        node = todo.popleft()
        todo.extend(child_nodes(node))
        yield node


#: the fields that hold statements (of statements, handlers, match cases and the module)
_BLOCK_FIELDS = frozenset({"body", "handlers", "orelse", "finalbody", "cases"})
_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)
_STATEMENT_FIELDS: dict[type, tuple[str, ...]] = {}


def block_children(node: ast.AST) -> list[ast.AST]:
    """The statements, except handlers and match cases directly under ``node``, in
    ``iter_child_nodes`` order: every ancestor of a statement is one of these, so a walk
    through them alone finds every def, class and import without entering an expression."""
    kind = type(node)
    names = _STATEMENT_FIELDS.get(kind)
    if names is None:
        names = _STATEMENT_FIELDS[kind] = tuple(n for n in fields_of(kind) if n in _BLOCK_FIELDS)
    found: list[ast.AST] = []
    for name in names:
        value = getattr(node, name, None)
        if type(value) is list:
            found.extend(item for item in value if isinstance(item, _BLOCKS))
    return found


def walk_statements(tree: ast.AST) -> Iterator[ast.AST]:
    """``tree`` and every statement, handler and match case under it, in the order
    ``ast.walk`` meets them (the same depths: no statement lies inside an expression)."""
    todo = deque([tree])
    while todo:
        node = todo.popleft()
        todo.extend(block_children(node))
        yield node

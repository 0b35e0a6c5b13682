"""Checks that run before anything is submitted, each failing with one clear message.

Static checks need only the workflow: every node has a callable, no cycles, every reference
names a node, parameters are known and given, every required argument of every function is
fed, task options make sense, callables and constants can be pickled. The cluster check needs
a client: a resource requirement that no machine can meet fails here, not as a task that
waits forever (unless the task allows a fallback).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudpickle
import networkx as nx

from caelum_dask.errors import CaelumError, InvalidInput, UnsatisfiableRequirement
from caelum_dask.requirements import ResourceRequirements
from caelum_dask.workflow.model import REQUIRED, ParamRef, Ref, Workflow, node_inputs, options_of, signature_of

_SIMPLE = (int, float, str, bytes, bool, type(None))


class WorkflowInvalid(InvalidInput):
    """The workflow definition cannot run as written."""


def resolve_params(wf: Workflow, given: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overridden by ``given``; unknown or missing parameters are errors."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(wf.params))
    if unknown:
        known = ", ".join(sorted(wf.params)) or "none"
        raise WorkflowInvalid(f"unknown parameter(s) {', '.join(map(repr, unknown))} for workflow {wf.name!r}; known: {known}")
    values = {**wf.params, **given}
    missing = sorted(name for name, value in values.items() if value is REQUIRED)
    if missing:
        raise WorkflowInvalid(
            f"workflow {wf.name!r} needs parameter(s) {', '.join(map(repr, missing))}; pass -p NAME=VALUE (or params=)"
        )
    return values


def validate(wf: Workflow, params: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Check the workflow; return the resolved parameters and every node's bound inputs."""
    g = wf.graph
    problems: list[str] = []
    for node, attrs in g.nodes(data=True):
        if not callable(attrs.get("func")):
            feeds = sorted(g.successors(node))
            why = f" (an input of {', '.join(map(repr, feeds))})" if feeds else ""
            problems.append(f"task {node!r}{why} has no callable: add the node with func=... or remove the edge")
    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        path = " -> ".join([str(a) for a, _b in cycle] + [str(cycle[0][0])])
        problems.append(f"workflow {wf.name!r} has a cycle: {path}")
    if problems:
        raise WorkflowInvalid("; ".join(problems))
    values = resolve_params(wf, params)

    bindings: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    seen_funcs: dict[int, Callable[..., Any]] = {}
    for node, attrs in g.nodes(data=True):
        args, kwargs = node_inputs(g, node, wf.params)
        bindings[node] = (args, kwargs)
        problems += _check_refs(wf, node, args, kwargs)
        problems += _check_signature(node, attrs["func"], args, kwargs, attrs.get("map_over") is not None)
        problems += _check_options(node, attrs)
        seen_funcs.setdefault(id(attrs["func"]), attrs["func"])
        problems += _check_constants(node, args, kwargs)
        if len(problems) > 5:
            break
    if not problems:
        for func in seen_funcs.values():
            try:
                cloudpickle.dumps(func)
            except Exception as exc:  # noqa: BLE001 - any pickling failure is the user's to fix
                users = [n for n, a in g.nodes(data=True) if a["func"] is func]
                problems.append(
                    f"task {users[0]!r}: its callable {getattr(func, '__qualname__', func)!r} cannot be pickled "
                    f"({type(exc).__name__}: {str(exc)[:120]}); define it at module level and keep locks, "
                    "sockets and open files out of its closure"
                )
    if problems:
        raise WorkflowInvalid("; ".join(problems))
    return values, bindings


def _walk(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _walk(item)]
    if isinstance(value, dict):
        return [v for item in value.values() for v in _walk(item)]
    return [value]


def _check_refs(wf: Workflow, node: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    problems = []
    for value in _walk(list(args)) + _walk(kwargs):
        if isinstance(value, Ref) and value.name not in wf.graph:
            problems.append(f"task {node!r} takes the result of {value.name!r}, which is not a task of workflow {wf.name!r}")
        elif isinstance(value, ParamRef) and value.name not in wf.params:
            problems.append(f"task {node!r} uses parameter {value.name!r}, which workflow {wf.name!r} does not declare")
    return problems


def _check_signature(node: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                     is_map: bool) -> list[str]:
    sig = signature_of(func)
    if sig is None:
        return []
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        if "missing" in str(exc):
            missing = [p.name for p in sig.parameters.values()
                       if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                       and p.name not in kwargs][len(args):]
            return [f"task {node!r} is missing input(s) {', '.join(map(repr, missing))}: pass them when calling the "
                    "task, add an edge with arg=NAME, or declare a workflow parameter of that name"]
        return [f"task {node!r}: its inputs do not match {getattr(func, '__name__', 'the function')}{sig} ({exc})"]
    return []


def _check_options(node: str, attrs: dict[str, Any]) -> list[str]:
    opts = options_of(attrs)
    problems = []
    if not isinstance(opts["retries"], int) or opts["retries"] < 0:
        problems.append(f"task {node!r}: retries must be a whole number >= 0, got {opts['retries']!r}")
    timeout = opts["timeout"]
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        problems.append(f"task {node!r}: timeout must be a number of seconds > 0, got {timeout!r}")
    if not isinstance(opts["priority"], (int, float)):
        problems.append(f"task {node!r}: priority must be a number, got {opts['priority']!r}")
    if opts["resources"]:
        try:
            ResourceRequirements.from_value(opts["resources"])
        except (CaelumError, TypeError) as exc:
            problems.append(f"task {node!r}: {exc}")
    return problems


def _check_constants(node: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    for value in _walk(list(args)) + _walk(kwargs):
        if isinstance(value, _SIMPLE) or isinstance(value, (Ref, ParamRef)):
            continue
        try:
            cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001
            return [f"task {node!r}: argument {value!r:.60} cannot be pickled ({type(exc).__name__}); "
                    "pass something picklable (a path, a number, plain data)"]
    return []


def check_requirements(wf: Workflow, machines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Submit arguments (resources/workers) per node; unmeetable requirements fail here.

    A node with ``fallback=True`` whose requirement no machine meets runs without it (its
    entry is ``{}``), which is how a GPU step falls back to a CPU when that is allowed.
    """
    placement: dict[str, dict[str, Any]] = {}
    memo: dict[ResourceRequirements, dict[str, Any] | Exception] = {}
    for node, attrs in wf.graph.nodes(data=True):
        raw = attrs.get("resources")
        if not raw:
            continue
        req = ResourceRequirements.from_value(raw)
        if req not in memo:
            try:
                memo[req] = req.kwargs_for(req.check(machines))
            except UnsatisfiableRequirement as exc:
                memo[req] = exc
        found = memo[req]
        if isinstance(found, Exception):
            if attrs.get("fallback"):
                placement[node] = {}
                continue
            raise UnsatisfiableRequirement(f"task {node!r}: {found}") from None
        placement[node] = found
    return placement

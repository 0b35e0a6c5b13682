"""The workflow model: a ``networkx.DiGraph`` whose nodes carry a callable and options.

A workflow *is* its graph (``Workflow.graph``). Two ways to build one:

* people write ``@task`` functions and call them inside ``with Workflow("name") as wf:``;
  each call adds a node and returns a :class:`Ref` that later calls take as an argument;
* programs build a plain ``networkx.DiGraph`` and hand it to :meth:`Workflow.from_graph`.

Node attributes (both ways end up with the same ones):

``func``            the callable (required)
``args``/``kwargs`` its arguments: constants, :class:`Ref` (another node's result),
                    :class:`ParamRef` (a workflow parameter), or lists of those (fan-in)
``retries``         extra attempts after a failure (0), spaced by ``retry_delay`` seconds (0.5)
                    times ``retry_backoff`` (2.0) per attempt, plus up to ``retry_jitter`` (0.25)
                    of that delay at random
``timeout``         seconds; a task past it is failed and its dependents skipped (None)
``priority``        higher runs first when slots are scarce (0)
``resources``       a :class:`~caelum_dask.ResourceRequirements` or dict of its fields (None)
``fallback``        when no machine meets ``resources``, run without them instead of failing
``cache``           reuse a cached result for the same code + inputs + parameters (True)
``map_over``        set on a dynamic fan-out node: the items come from the upstream node at
                    run time and the node runs ``func`` once per item, giving a list

Edges carry data. In a graph built by program an edge ``a -> b`` passes ``a``'s result to
``b`` as the keyword argument named by the edge attribute ``arg`` (default: ``a``'s name);
several edges with the same ``arg`` pass a list (fan-in). Any argument of ``func`` that is
still unbound and is named like a workflow parameter receives that parameter's value.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import networkx as nx

from caelum_dask.errors import InvalidInput
from caelum_dask.requirements import ResourceRequirements

OPTION_DEFAULTS: dict[str, Any] = {
    "retries": 0,
    "retry_delay": 0.5,
    "retry_backoff": 2.0,
    "retry_jitter": 0.25,
    "timeout": None,
    "priority": 0,
    "resources": None,
    "fallback": False,
    "cache": True,
}

_current: contextvars.ContextVar["Workflow | None"] = contextvars.ContextVar("caelum_workflow", default=None)


@dataclass(frozen=True)
class Ref:
    """The result of node ``name``, used as an argument of another node."""

    name: str


@dataclass(frozen=True)
class ParamRef:
    """The value of workflow parameter ``name`` at run time."""

    name: str


class MapRef(list):  # type: ignore[type-arg]
    """The per-item results of a fan-out known at build time: a list of :class:`Ref`."""


def options_of(attrs: dict[str, Any]) -> dict[str, Any]:
    """The task options of a node, defaults filled in."""
    return {key: attrs.get(key, default) for key, default in OPTION_DEFAULTS.items()}


class Task:
    """A function plus task options; calling it inside a workflow adds a node.

    Outside a ``with Workflow(...)`` block the task is just its function, so step functions of
    other engines (plain functions returning dicts) stay usable directly.
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None, **options: Any) -> None:
        unknown = set(options) - set(OPTION_DEFAULTS)
        if unknown:
            raise InvalidInput(
                f"unknown task option(s) {sorted(unknown)} for {func.__name__!r}; known: {sorted(OPTION_DEFAULTS)}"
            )
        self.func = func
        self.name = name or getattr(func, "__name__", "task")
        self.options = options
        functools.update_wrapper(self, func)

    def with_options(self, name: str | None = None, **options: Any) -> "Task":
        """A copy with some options (or the node name) changed, like Prefect's ``with_options``."""
        return Task(self.func, name=name or self.name, **{**self.options, **options})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        wf = _current.get()
        if wf is None:
            return self.func(*args, **kwargs)
        return wf.add(self.name, self.func, args, kwargs, **self.options)

    def map(self, items: Any, *args: Any, **kwargs: Any) -> Any:
        """Fan out: one node per item, passed as the first argument; ``args``/``kwargs`` are shared.

        ``items`` known now (a list) gives one node ``name[i]`` per item and returns a
        :class:`MapRef` that a reduce step takes as a list argument. ``items`` produced by an
        upstream node (a :class:`Ref`) or a parameter gives one *dynamic* node that expands
        when the items are known; downstream it is a list of results as well.
        """
        wf = _current.get()
        if wf is None:
            return [self.func(item, *args, **kwargs) for item in items]
        if isinstance(items, (Ref, ParamRef)):
            return wf.add(self.name, self.func, (items, *args), kwargs, map_over=0, **self.options)
        if not isinstance(items, Iterable) or isinstance(items, (str, bytes, dict)):
            raise InvalidInput(f"{self.name}.map() needs a list of items or another task's result, got {type(items).__name__}")
        refs = MapRef()
        base = wf.unique_name(self.name)
        for i, item in enumerate(items):
            refs.append(wf.add(f"{base}[{i}]", self.func, (item, *args), kwargs, exact_name=True, **self.options))
        return refs


@overload
def task(func: Callable[..., Any], /) -> Task: ...
@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...
def task(func: Callable[..., Any] | None = None, /, *, name: str | None = None, **options: Any) -> Any:
    """Make a function a workflow task: ``@task`` or ``@task(retries=2, timeout=60, ...)``.

    Options are the node attributes listed in :mod:`caelum_dask.workflow.model`. Works on any
    plain function, e.g. another engine's step ``task(analyze_step, resources={...})``.
    """
    if func is not None:
        return Task(func, name=name, **options)
    return lambda f: Task(f, name=name, **options)


def _refs_in(value: Any) -> list[Ref]:
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in _refs_in(item)]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _refs_in(item)]
    return []


def _params_in(value: Any) -> list[ParamRef]:
    if isinstance(value, ParamRef):
        return [value]
    if isinstance(value, (list, tuple)):
        return [p for item in value for p in _params_in(item)]
    if isinstance(value, dict):
        return [p for item in value.values() for p in _params_in(item)]
    return []


@dataclass
class Workflow:
    """A named DAG of tasks with parameters (name -> default; ``REQUIRED`` for none)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    description: str = ""

    def __post_init__(self) -> None:
        self.graph.graph.setdefault("name", self.name)
        self._token: contextvars.Token[Workflow | None] | None = None

    # -- building ---------------------------------------------------------------------------
    def __enter__(self) -> "Workflow":
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._token is not None
        _current.reset(self._token)
        self._token = None

    def param(self, name: str, default: Any = inspect.Parameter.empty) -> ParamRef:
        """Declare (or refer to) parameter ``name``; CLI ``-p name=value`` overrides the default."""
        if default is not inspect.Parameter.empty:
            self.params[name] = default
        elif name not in self.params:
            self.params[name] = REQUIRED
        return ParamRef(name)

    def unique_name(self, base: str) -> str:
        if base not in self.graph and f"{base}[0]" not in self.graph:
            return base
        n = 2
        while f"{base}-{n}" in self.graph or f"{base}-{n}[0]" in self.graph:
            n += 1
        return f"{base}-{n}"

    def add(self, name: str, func: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
            *, exact_name: bool = False, **options: Any) -> Ref:
        """Add one node; its edges come from the :class:`Ref` arguments. Returns its Ref."""
        kwargs = dict(kwargs or {})
        node = name if exact_name else self.unique_name(name)
        self.graph.add_node(node, func=func, args=tuple(args), kwargs=kwargs, **options)
        for ref in _refs_in(list(args)) + _refs_in(kwargs):
            self.graph.add_edge(ref.name, node, bound=True)
        for p in _params_in(list(args)) + _params_in(kwargs):
            self.params.setdefault(p.name, REQUIRED)
        return Ref(node)

    # -- programmatic graphs ----------------------------------------------------------------
    @classmethod
    def from_graph(cls, graph: nx.DiGraph, name: str | None = None, params: dict[str, Any] | None = None) -> "Workflow":
        """A workflow from a plain ``networkx.DiGraph`` (node/edge attributes: module docstring).

        The graph's own ``graph.graph["name"]`` and ``graph.graph["params"]`` are used when
        ``name``/``params`` are not given. The graph is copied, never modified.
        """
        if not isinstance(graph, nx.DiGraph):
            raise InvalidInput(f"Workflow.from_graph needs a networkx.DiGraph, got {type(graph).__name__}")
        g = graph.copy()
        wf_name = name or g.graph.get("name") or "workflow"
        return cls(name=wf_name, params=dict(params if params is not None else g.graph.get("params", {})), graph=g)

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, {self.graph.number_of_nodes()} tasks, params={sorted(self.params)})"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that must be given at run time."""


_SIGNATURES: dict[int, tuple[Any, inspect.Signature | None]] = {}


def signature_of(func: Any) -> inspect.Signature | None:
    """``inspect.signature`` memoised per callable (10,000 nodes often share one function)."""
    memo = _SIGNATURES.get(id(func))
    if memo is not None and memo[0] is func:
        return memo[1]
    try:
        sig = inspect.signature(func) if func is not None else None
    except (TypeError, ValueError):
        sig = None
    _SIGNATURES[id(func)] = (func, sig)
    return sig


def node_inputs(graph: nx.DiGraph, node: str, param_names: Iterable[str] = ()) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The node's positional and keyword arguments, with edges of programmatic graphs wired in."""
    attrs = graph.nodes[node]
    args = tuple(attrs.get("args", ()))
    kwargs = dict(attrs.get("kwargs") or {})
    for src, _dst, data in graph.in_edges(node, data=True):
        if data.get("bound"):
            continue
        arg = data.get("arg") or src
        if arg in kwargs:
            existing = kwargs[arg]
            kwargs[arg] = (existing if isinstance(existing, list) else [existing]) + [Ref(src)]
        else:
            kwargs[arg] = Ref(src)
    sig = signature_of(attrs.get("func"))
    if sig is not None:
        params = set(param_names)
        positional = [p.name for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][: len(args)]
        for pname, p in sig.parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or pname in kwargs or pname in positional:
                continue
            if pname in params:
                kwargs[pname] = ParamRef(pname)
    return args, kwargs

"""Lazy public names for a package's ``__init__`` (PEP 562 module ``__getattr__``).

Why: ``import caelum_dask`` and ``import caelum_dask.analysis`` must stay cheap (``caelum --help``
and a warm ``caelum analyze`` never touch dask or pandas), yet ``caelum_dask.connect`` and
``caelum_dask.analysis.analyze`` are the documented API. A package lists name -> module once;
the first access imports that module and caches the name in the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The ``__getattr__`` for ``package``: ``names`` maps each public name to its module."""

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

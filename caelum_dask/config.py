"""Load caelum's defaults into Dask's configuration, the way Dask's own subprojects do.

Everything tunable lives under the ``caelum`` key of ``dask.config`` so that users configure
caelum with the same YAML files, environment variables (``DASK_CAELUM__…``) and
``dask.config.set`` they already use for Dask.

Why importing this module does not import dask: ``import dask.config`` costs the whole dask
package (0.13 s), and commands that never reach the cluster (a warm ``caelum analyze`` of an
unchanged tree) would spend most of their time on it. So the packaged defaults are registered
with ``dask.config`` at the moment both exist — now if dask is already imported, else right
after ``dask.config`` is first imported (an import hook, :class:`_RegisterOnImport`) — and,
while dask is not imported, :func:`get` reads the same files and ``DASK_*`` variables through
:mod:`caelum_dask.daskconfig` (nothing can have called ``dask.config.set`` yet).
"""

from __future__ import annotations

import os
import pathlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from caelum_dask import daskconfig

if TYPE_CHECKING:  # importlib.abc costs 5 ms (importlib.resources, tempfile): a finder needs only find_spec
    from importlib.machinery import ModuleSpec

_DEFAULTS_FILE = pathlib.Path(__file__).with_name("caelum.yaml")

DEFAULTS: dict[str, Any] = daskconfig.load_yaml(str(_DEFAULTS_FILE))

_DASK_CONFIG = "dask.config"
_state: dict[str, Any] = {"registered": False, "light": None}


def _register(dask_config: ModuleType) -> None:
    """Add the packaged defaults to ``dask.config`` (once) and leave the commented copy."""
    if _state["registered"]:
        return
    _state["registered"] = True
    dask_config.update_defaults(DEFAULTS)
    try:  # a commented copy in ~/.config/dask/, as Dask does for its own defaults
        dask_config.ensure_file(source=str(_DEFAULTS_FILE), comment=True)
    except OSError:  # read-only home: the packaged defaults still apply
        pass


class _RegisterOnImport:
    """Registers caelum's defaults as soon as ``dask.config`` has been executed.

    It finds ``dask.config`` with the other finders and wraps only that module's
    ``exec_module``; it removes itself on first use, so every other import is untouched.
    """

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != _DASK_CONFIG:
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                run = spec.loader.exec_module

                def exec_module(module: ModuleType) -> None:
                    run(module)
                    _register(module)

                spec.loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


if _DASK_CONFIG in sys.modules:
    _register(sys.modules[_DASK_CONFIG])
else:
    sys.meta_path.insert(0, _RegisterOnImport())


def get(key: str, default: Any = None) -> Any:
    """Read ``caelum.<key>`` from Dask's configuration (without importing dask if it is not)."""
    dask_config = sys.modules.get(_DASK_CONFIG)
    if dask_config is not None and hasattr(dask_config, "get"):
        _register(dask_config)
        return dask_config.get(f"caelum.{key}", default=default)
    if _state["light"] is None:
        _state["light"] = daskconfig.collect(DEFAULTS)
    return daskconfig.get(_state["light"], key, default)


def home() -> pathlib.Path:
    """The folder holding this machine's caelum state (run store, caches, durations)."""
    path = pathlib.Path(os.path.expanduser(str(get("home")))).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path

"""Loading workflow definitions from a user's file, by path.

The file is imported under a private module name and registered with cloudpickle's
``register_pickle_by_value``, so its functions travel to the workers inside the graph: users
never install their workflow files on the workers (caelum-dask itself is installed there).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys
import types

import cloudpickle

from caelum_dask.errors import InvalidInput
from caelum_dask.workflow.model import Workflow


def load_module(path: str | pathlib.Path) -> types.ModuleType:
    """Import the Python file at ``path``; one clear error when it is missing or broken."""
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise InvalidInput(f"workflow file {str(path)!r} does not exist (give the path to a .py file)")
    if file.suffix != ".py":
        raise InvalidInput(f"workflow file {str(path)!r} is not a .py file")
    resolved = file.resolve()
    name = f"caelum_user_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(resolved.parent)
    before = set(sys.modules)
    sys.path.insert(0, folder)  # the file may import helper modules that sit next to it
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise InvalidInput(f"{path}:{exc.lineno}: cannot parse the workflow file: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        sys.modules.pop(name, None)
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(resolved):
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"{path}:{line}" if line else str(path)
        raise InvalidInput(f"{where}: the workflow file failed to load: {type(exc).__name__}: {exc}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    cloudpickle.register_pickle_by_value(module)
    for helper_name in set(sys.modules) - before:  # helpers from the same folder travel by value too
        helper = sys.modules.get(helper_name)
        helper_file = getattr(helper, "__file__", None) or ""
        if helper is not None and helper_file.startswith(os.path.join(folder, "")) and "." not in helper_name:
            cloudpickle.register_pickle_by_value(helper)
    return module


def workflows_in(module: types.ModuleType) -> list[Workflow]:
    """The Workflow objects a module defines at top level, in definition order."""
    seen: list[Workflow] = []
    for value in vars(module).values():
        if isinstance(value, Workflow) and all(value is not w for w in seen):
            seen.append(value)
    return seen


def load_workflow(path: str | pathlib.Path, name: str | None = None) -> Workflow:
    """The workflow defined in ``path`` (``name`` picks one when the file defines several)."""
    found = workflows_in(load_module(path))
    if not found:
        raise InvalidInput(
            f"{path} defines no workflow: build one at top level with `with Workflow(\"name\") as wf:` "
            "or `wf = Workflow.from_graph(G)`"
        )
    if name is not None:
        for wf in found:
            if wf.name == name:
                return wf
        raise InvalidInput(f"{path} has no workflow named {name!r}; it defines: {', '.join(w.name for w in found)}")
    if len(found) > 1:
        raise InvalidInput(f"{path} defines several workflows ({', '.join(w.name for w in found)}); pick one with --workflow NAME")
    return found[0]

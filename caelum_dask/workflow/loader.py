"""Loading workflow definitions from a user's file, by path.

A thin user of :mod:`caelum_dask.usercode`: the file runs as a module that ships to the workers
by value (users never install their workflow files on the workers; caelum-dask itself is
installed there), and a broken file is one ``FILE:LINE: PROBLEM — WHAT TO DO`` line.
"""

from __future__ import annotations

import pathlib
import types

from caelum_dask import usercode
from caelum_dask.workflow.model import Workflow


def load_module(path: str | pathlib.Path) -> types.ModuleType:
    """Import the Python file at ``path``; one clear error when it is missing or broken."""
    return usercode.load(path, usercode.WORKFLOW)


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
        raise usercode.bad_file(
            path, "defines no workflow (expected `with Workflow(\"name\") as wf:` or "
            "`wf = Workflow.from_graph(G)` at top level)", "add one and run again")
    if name is not None:
        for wf in found:
            if wf.name == name:
                return wf
        raise usercode.bad_file(path, f"has no workflow named {name!r}; it defines: {', '.join(w.name for w in found)}",
                                "pick one of those with --workflow NAME")
    if len(found) > 1:
        raise usercode.bad_file(path, f"defines several workflows ({', '.join(w.name for w in found)})",
                                "pick one with --workflow NAME")
    return found[0]

"""Task keys in Dask's ``<name>-<token>`` convention, and the annotation that says whose task it is.

Dask groups tasks by ``key_split(key)`` — the leading words of the key up to the first word
that is not purely alphabetic — for its progress bars, task groups, fine performance metrics
and, most of all, per-prefix duration estimates (work stealing, queuing, ``Adaptive``, the
durations :mod:`caelum_dask.learned` saves across restarts). Keys such as
``caelum-wf-<run>-<node>`` gave every step of every workflow the one prefix ``caelum-wf``: one
average for a 1 ms step and a 10 minute one. Here the prefix is the step (``load_data``,
``pytest_session``, ``llm_generate``…) and the run and item go into the token, which is never
alphabetic (``<run>.<part>``), so ``key_split`` stops before it.

Which capability a task belongs to (the dashboard's Tasks page colours by it) travels as a
Dask annotation, ``caelum_kind``, not in the key.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

#: the annotation naming the capability of a task: workflow, analysis, test, llm, bi
KIND = "caelum_kind"
#: a map item (``name[3]``) or a repeated step (``name-2``, as ``Workflow`` names a second use)
_NUMBERED = re.compile(r"^(?P<base>.+?)(\[\d+\]|-\d+)$")
_NOT_WORD = re.compile(r"[^A-Za-z0-9_]+")


def step_name(name: str) -> str:
    """The prefix for a step called ``name``: the base name of a map item or a repeated step
    (one duration profile per function), as one Dask word."""
    match = _NUMBERED.match(name)
    base = match["base"] if match else name
    word = _NOT_WORD.sub("_", base).strip("_") or "step"
    return word if word[0].isalpha() else f"step_{word}"


def task_key(step: str, run_id: str, part: Any = 0) -> str:
    """``<step>-<run>.<part>``: Dask's prefix is the step; the run and part are the token."""
    return f"{step_name(step)}-{run_id}.{part}"


@contextlib.contextmanager
def kind(name: str) -> Iterator[None]:
    """Annotate the tasks submitted inside the block as ``name``'s (Dask annotations)."""
    import dask  # here: importing keys (the analysis engine does) must not import dask

    with dask.annotate(**{KIND: name}):
        yield


__all__ = ["KIND", "kind", "step_name", "task_key"]

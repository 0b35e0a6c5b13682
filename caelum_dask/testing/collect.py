"""The user's pytest arguments, as a session needs them.

Every session collects with the user's options and test paths (``-k``/``-m`` apply at
collection, as in a plain run); what caelum owns in a session (its JUnit file, xdist's
``-n``, the cache provider's ``--lf``) is dropped, and ``-x``/``--maxfail`` become the run's
own limit so that they stop the whole run, not one session.
"""

from __future__ import annotations

from collections.abc import Sequence

#: options caelum owns in a session (dropped from the user's arguments)
_DROPPED_WITH_VALUE = frozenset({"--junitxml", "--junit-xml", "-n", "--numprocesses", "--dist",
                                 "--maxprocesses", "--rootdir", "--basetemp"})
_DROPPED_FLAGS = frozenset({"--collect-only", "--co", "--lf", "--last-failed", "--ff",
                            "--failed-first", "--sw", "--stepwise", "--nf", "--new-first"})


def shard_options(options: Sequence[str]) -> list[str]:
    """The user's arguments, in order, minus those caelum sets itself for a session (junit path, xdist, …)."""
    kept: list[str] = []
    skip_next = False
    for arg in options:
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _DROPPED_WITH_VALUE:
            skip_next = "=" not in arg
            continue
        if name in _DROPPED_FLAGS:
            continue
        kept.append(arg)
    return kept


def maxfail_of(options: Sequence[str]) -> int:
    """The run-wide failure limit in the user's options (``-x`` is 1; 0: none)."""
    limit = 0
    args = list(options)
    for i, arg in enumerate(args):
        if arg in ("-x", "--exitfirst") or (arg.startswith("-") and not arg.startswith("--")
                                            and arg[1:].isalpha() and "x" in arg[1:] and _short_flags(arg)):
            limit = 1
        elif arg.startswith("--maxfail="):
            limit = _int(arg.split("=", 1)[1])
        elif arg == "--maxfail" and i + 1 < len(args):
            limit = _int(args[i + 1])
    return limit


def _short_flags(arg: str) -> bool:
    """``-xq``-style clusters of value-less short flags (not ``-k expr`` and the like)."""
    letters = arg[1:]
    valued = {"k", "m", "p", "c", "o", "W", "r"}
    return not any(c in valued for c in letters[: letters.index("x")])


def _int(text: str) -> int:
    try:
        return max(0, int(text))
    except ValueError:
        return 0

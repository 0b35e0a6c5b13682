"""Errors a user can act on.

Every error raised for bad input or an unusable cluster is a :class:`CaelumError`: its message
names the problem and what to do about it. The CLI prints exactly that one line and exits
non-zero; library users catch it like any exception.
"""

from __future__ import annotations


class CaelumError(Exception):
    """A problem the user can fix; ``str(err)`` is the one line shown to them."""

    exit_code: int = 1


class SchedulerUnreachable(CaelumError):
    """No scheduler answered at the address we were given."""

    exit_code = 2


class UnsatisfiableRequirement(CaelumError):
    """A resource requirement that no machine in the cluster can ever meet."""


class PortTaken(CaelumError):
    """A service asked for a port that another service already holds on that machine."""


class InvalidInput(CaelumError):
    """A path, file, definition or option that cannot be used as given."""

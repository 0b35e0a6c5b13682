"""Options of a capability: what the caller said, the rest from ``caelum.*`` in one place.

Why: the CLI, MCP and the Python API are three front doors to the same engines; when each
restated the defaults, the same request behaved differently by door (MCP retried failed tests
once, the CLI as configured). An options dataclass mixes in :class:`ConfiguredOptions` and
names, in ``CONFIG``, the ``caelum.*`` key of every configurable field; such a field defaults
to ``None`` ("not given"), and :meth:`~ConfiguredOptions.resolved` fills it from the
configuration of the process that starts the job — the caller's, never a worker's. Front doors
pass only what the user gave (``from_config(**given)`` drops ``None``s), so caelum.yaml is the
only place a default is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="ConfiguredOptions")


class ConfiguredOptions:
    """Mixin for option dataclasses: ``CONFIG`` maps a field name to its ``caelum.*`` key."""

    #: field name -> key under ``caelum.`` (e.g. ``{"batch_bytes": "analysis.batch-bytes"}``)
    CONFIG: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_config(cls: type[T], **given: Any) -> T:
        """Options from what the caller gave (``None`` = not given), the rest from the config."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(given) - known)
        if unknown:
            raise TypeError(f"{cls.__name__} has no option {', '.join(unknown)}")
        return cls(**{k: v for k, v in given.items() if v is not None}).resolved()

    def resolved(self: T) -> T:
        """A copy with every unset configurable field filled from ``caelum.*``."""
        from caelum_dask import config

        filled = {name: config.get(key) for name, key in self.CONFIG.items() if getattr(self, name) is None}
        return replace(self, **filled) if filled else self  # type: ignore[type-var]


__all__ = ["ConfiguredOptions"]

"""What engines return: typed dataclasses with one ``to_dict()`` for ``--json`` and MCP.

Why: results used to be dataclasses with ``to_dict`` here, ``to_json`` there and raw dicts
elsewhere, so every front end knew every shape. A result dataclass now mixes in
:class:`Result`; its :meth:`~Result.to_dict` turns the fields into plain JSON values (paths,
enums, dates, nested results, sets), and a result whose published JSON shape differs from its
fields overrides ``to_dict`` — the shape users read never changes with the refactoring.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dicts, lists, str, numbers, bool, None)."""
    if isinstance(value, Result):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):  # numpy / pandas scalars
        return value.item()
    return value


class Result:
    """Mixin for result dataclasses: ``to_dict()`` is the JSON every front door prints.

    Fields whose metadata says ``{"json": False}`` stay out (live objects, large frames).
    """

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if f.metadata.get("json", True)}


__all__ = ["Result", "jsonable"]

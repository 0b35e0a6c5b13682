"""Parameter values given as text (``-p name=value`` on the CLI, strings from MCP clients)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from caelum_dask.errors import InvalidInput

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def coerce(name: str, raw: str, default: Any) -> Any:
    """``raw`` as the type of the parameter's default (bool, int, float, str), else JSON, else text."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise InvalidInput(f"parameter {name!r} is a true/false switch; got {raw!r}")
        return lowered in _TRUE
    if isinstance(default, (int, float)):
        try:
            return type(default)(raw)
        except ValueError:
            raise InvalidInput(f"parameter {name!r} must be of type {type(default).__name__}; got {raw!r}") from None
    if isinstance(default, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_param(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """One ``name=value``."""
    if "=" not in text:
        raise InvalidInput(f"parameter {text!r} is not NAME=VALUE")
    name, raw = text.split("=", 1)
    name = name.strip()
    return name, coerce(name, raw, defaults.get(name))


def parse_params(texts: Iterable[str], defaults: dict[str, Any]) -> dict[str, Any]:
    return dict(parse_param(t, defaults) for t in texts)

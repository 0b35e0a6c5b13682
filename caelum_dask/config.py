"""Load caelum's defaults into Dask's configuration, the way Dask's own subprojects do.

Everything tunable lives under the ``caelum`` key of ``dask.config`` so that users configure
caelum with the same YAML files, environment variables (``DASK_CAELUM__…``) and
``dask.config.set`` they already use for Dask.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import dask.config
import yaml

_DEFAULTS_FILE = pathlib.Path(__file__).with_name("caelum.yaml")

with _DEFAULTS_FILE.open() as _f:
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(DEFAULTS)
try:  # a commented copy in ~/.config/dask/, as Dask does for its own defaults
    dask.config.ensure_file(source=str(_DEFAULTS_FILE), comment=True)
except OSError:  # read-only home: the packaged defaults still apply
    pass


def get(key: str, default: Any = None) -> Any:
    """Read ``caelum.<key>`` from Dask's configuration."""
    return dask.config.get(f"caelum.{key}", default=default)


def home() -> pathlib.Path:
    """The folder holding this machine's caelum state (run store, caches, durations)."""
    path = pathlib.Path(os.path.expanduser(str(get("home")))).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path

"""Analyzer selection: built-ins by name, plugins loaded from files by path.

Plugin files are user code that workers do not have; they travel as source text with the
task (:class:`AnalyzerSpec`) and are loaded once per worker process, keyed by content hash.
"""

from __future__ import annotations

import hashlib
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caelum_dask.analysis.builtins import BUILTINS, DEFAULT_ANALYZERS
from caelum_dask.analysis.plugin import Analyzer, analyzer_classes
from caelum_dask.errors import InvalidInput

SCHEMA_VERSION = "1"
_LOADED: dict[str, types.ModuleType] = {}


@dataclass(frozen=True)
class PluginSource:
    filename: str
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class AnalyzerSpec:
    """What a task needs to rebuild the analyzer classes anywhere: names, plugin sources, options."""

    builtins: tuple[str, ...]
    plugins: tuple[PluginSource, ...]
    options: dict[str, dict[str, Any]]

    def classes(self) -> list[type[Analyzer]]:
        found: list[type[Analyzer]] = [BUILTINS[n] for n in self.builtins]
        for plugin in self.plugins:
            found.extend(analyzer_classes(vars(load_plugin_module(plugin))))
        return found

    def fingerprint(self) -> str:
        parts = [SCHEMA_VERSION, json.dumps(self.options, sort_keys=True, default=str)]
        parts += [f"{c.name}:{c.version}" for c in self.classes()]
        parts += [p.digest for p in self.plugins]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def load_plugin_module(plugin: PluginSource) -> types.ModuleType:
    """Execute a plugin file's source as a module (cached per process by content)."""
    key = plugin.digest
    if key not in _LOADED:
        module = types.ModuleType(f"caelum_plugin_{key}")
        module.__file__ = plugin.filename
        try:
            exec(compile(plugin.source, plugin.filename, "exec"), module.__dict__)
        except Exception as exc:
            raise InvalidInput(f"cannot load analyzer plugin {plugin.filename}: {type(exc).__name__}: {exc}") from None
        _LOADED[key] = module
    return _LOADED[key]


def read_plugins(paths: list[str] | tuple[str, ...]) -> tuple[PluginSource, ...]:
    """Plugin files from files or folders (every ``*.py`` not starting with ``_``)."""
    sources: list[PluginSource] = []
    for entry in paths:
        p = Path(entry)
        if not p.exists():
            raise InvalidInput(f"plugin path not found: {entry}")
        files = sorted(f for f in p.glob("*.py") if not f.name.startswith("_")) if p.is_dir() else [p]
        before = len(sources)
        for f in files:
            try:
                plugin = PluginSource(str(f), f.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"analyzer plugin {f} is not UTF-8 Python source") from None
            except OSError as exc:
                raise InvalidInput(f"cannot read analyzer plugin {f}: {exc.strerror or exc}") from None
            if not analyzer_classes(vars(load_plugin_module(plugin))):
                if p.is_dir():
                    continue
                raise InvalidInput(f"{f} defines no analyzer (a CSTAnalyzer/ASTAnalyzer subclass with a `name`)")
            sources.append(plugin)
        if p.is_dir() and len(sources) == before:
            raise InvalidInput(f"--plugins {entry}: the folder holds no analyzer plugin (a *.py file defining "
                               "a CSTAnalyzer/ASTAnalyzer subclass with a `name`)")
    return tuple(sources)


def make_spec(analyzers: list[str] | tuple[str, ...] | None = None, plugins: list[str] | tuple[str, ...] = (),
              options: dict[str, dict[str, Any]] | None = None) -> AnalyzerSpec:
    names = tuple(analyzers) if analyzers is not None else DEFAULT_ANALYZERS
    unknown = [n for n in names if n not in BUILTINS]
    if unknown:
        raise InvalidInput(f"unknown analyzer(s) {', '.join(unknown)}; built-ins are {', '.join(BUILTINS)}")
    needed = {r for n in names for r in BUILTINS[n].requires} | set(names)  # e.g. mi needs raw, cc, halstead
    names = tuple(n for n in BUILTINS if n in needed)
    from caelum_dask import config

    merged = {**(config.get("analysis.plugin-options") or {}), **(options or {})}
    spec = AnalyzerSpec(names, read_plugins(list(plugins)), {k: dict(v) for k, v in merged.items()})
    seen: set[str] = set()
    for cls in spec.classes():
        if cls.name in seen:
            raise InvalidInput(f"two analyzers are named {cls.name!r}; analyzer names must be unique")
        seen.add(cls.name)
    return spec


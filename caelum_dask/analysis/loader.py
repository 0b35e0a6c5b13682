"""Analyzer selection: built-ins by name, plugins loaded from files by path.

Plugin files are user code that workers do not have. :mod:`caelum_dask.usercode` loads them
(as workflow files and report definitions: one error format) and a :class:`PluginSource` that
travels with a task carries its loaded module by value, so the workers never import the file.
The module travels cloudpickled as bytes, unpickled when a task first needs it: unpickling
imports what the plugin imports (libcst's matchers, …), which inside Dask's message handling
would stall the worker's event loop long enough on a busy machine for the cluster to drop it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caelum_dask import usercode
from caelum_dask.analysis.builtins import BUILTINS, DEFAULT_ANALYZERS
from caelum_dask.analysis.plugin import Analyzer, analyzer_classes
from caelum_dask.errors import InvalidInput

SCHEMA_VERSION = "1"
_LOADED: dict[str, types.ModuleType] = {}  # source digest -> module, in this process
_SHIPPED: dict[str, bytes] = {}  # source digest -> that module cloudpickled (sent, or arrived)
_LOCK = threading.RLock()
EXPECTED = "expected a CSTAnalyzer/ASTAnalyzer/SourceAnalyzer subclass with a `name`"


@dataclass(frozen=True)
class PluginSource:
    """A plugin (or codemod transform) file: its name and text; the text's digest keys caches."""

    filename: str
    source: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def __reduce__(self) -> tuple[Any, ...]:
        """Travel with the module loaded here, by value (see :mod:`caelum_dask.usercode`)."""
        return _arrived, (self.filename, self.source, _shipped(self.digest))


def _shipped(digest: str) -> bytes | None:
    """The module loaded here for ``digest``, cloudpickled once (None when not loaded here)."""
    with _LOCK:
        if digest not in _SHIPPED and digest in _LOADED:
            import cloudpickle  # here: an unchanged tree's re-run ships nothing

            _SHIPPED[digest] = cloudpickle.dumps(_LOADED[digest])
        return _SHIPPED.get(digest)


def _arrived(filename: str, source: str, shipped: bytes | None) -> PluginSource:
    """Unpickling side of :meth:`PluginSource.__reduce__`: keep the module's bytes for later."""
    plugin = PluginSource(filename, source)
    if shipped is not None:
        with _LOCK:
            _SHIPPED.setdefault(plugin.digest, shipped)
    return plugin


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
    """The module of a plugin file: the one that came with it, or loaded here (once per content)."""
    key = plugin.digest
    with _LOCK:
        if key not in _LOADED:
            shipped = _SHIPPED.get(key)
            import cloudpickle

            _LOADED[key] = (cloudpickle.loads(shipped) if shipped is not None
                            else usercode.load_source(plugin.filename, plugin.source, usercode.ANALYZER))
        return _LOADED[key]


def _plugin_file(file: Path) -> tuple[PluginSource, bool]:
    """A plugin file read and loaded, and whether it defines any analyzer."""
    plugin = PluginSource(str(file), usercode.read_source(file, usercode.ANALYZER))
    return plugin, bool(analyzer_classes(vars(load_plugin_module(plugin))))


def read_plugins(paths: list[str] | tuple[str, ...]) -> tuple[PluginSource, ...]:
    """Plugin files from files or folders (every ``*.py`` not starting with ``_``)."""
    sources: list[PluginSource] = []
    for entry in paths:
        p = Path(entry)
        if not p.is_dir():
            plugin, defines = _plugin_file(p)
            if not defines:
                raise usercode.bad_file(entry, f"defines no analyzer ({EXPECTED})", "add one and run again")
            sources.append(plugin)
            continue
        found = [plugin for plugin, defines in map(_plugin_file, usercode.files_in(p, usercode.ANALYZER)) if defines]
        if not found:
            raise usercode.bad_file(entry, f"the folder holds no analyzer plugin (a *.py file; {EXPECTED})",
                                    "give a folder with at least one plugin")
        sources.extend(found)
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


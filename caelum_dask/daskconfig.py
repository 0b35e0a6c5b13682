"""The ``caelum`` part of Dask's configuration, read the way ``dask.config`` reads it, without dask.

Why: caelum's settings are Dask configuration (``caelum.*``: the packaged caelum.yaml, the
user's Dask YAML files, ``DASK_CAELUM__…`` variables), but ``import dask.config`` imports the
whole ``dask`` package (0.13 s: dask.base, delayed, highlevelgraph, jinja2, …). A command that
never touches the cluster — a warm ``caelum analyze`` of an unchanged tree — only needs a few
``caelum.*`` values, so it reads them here. Once dask is imported, :mod:`caelum_dask.config`
asks ``dask.config`` as before; this module only has to give the same values in a process
where dask was never imported (``tests/test_config_light.py`` compares them).

The semantics are dask.config's (dask 2026.x, ``dask/config.py``), kept to the ``caelum`` key:

* YAML/JSON files from ``/etc/dask`` (or ``DASK_ROOT_CONFIG``), ``<prefix>/etc/dask`` for
  ``sys.prefix`` and ``site.PREFIXES``, ``~/.config/dask`` and ``DASK_CONFIG``; a folder gives
  its ``.json``/``.yaml``/``.yml`` files in name order; later files win;
* then ``DASK_INTERNAL_INHERIT_CONFIG`` and the ``DASK_*`` variables (``__`` nests, the name
  is lower-cased, the value goes through ``ast.literal_eval`` or none/null/true/false), which
  win over the files;
* the packaged defaults fill only what none of those set (``update_defaults`` after the
  collection, as when caelum registers them after ``import dask.config``);
* ``-`` and ``_`` in a key name are one key (``canonical_name``).

Parsed files are remembered: ``import yaml`` alone costs 11 ms of CPU, a fifth of a warm
``caelum analyze``. :func:`load_yaml` keeps, per file, its whole text and the parsed value
(marshalled) in one file under the user's cache folder; a file whose text is not exactly the
remembered text is parsed again (libyaml's loader when PyYAML has it), so the YAML files stay
the only source of truth and the cache can only save time.
"""

from __future__ import annotations

import marshal
import os
import site
import sys
from collections.abc import Iterator, Mapping
from typing import Any

#: the top-level key this module reads
ROOT = "caelum"
#: file text -> parsed value (marshalled), per path; None until read from the cache file
_parsed: dict[str, Any] = {"entries": None}


def cache_file() -> str:
    """Where parsed configuration files are remembered (per Python: marshal's format may change)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "caelum", f"dask-config.{sys.implementation.cache_tag}.marshal")


def _entries() -> dict[str, tuple[str, bytes]]:
    if _parsed["entries"] is None:
        try:
            with open(cache_file(), "rb") as f:
                entries = marshal.load(f)
            _parsed["entries"] = entries if isinstance(entries, dict) else {}
        except (OSError, EOFError, ValueError, TypeError):
            _parsed["entries"] = {}
    return _parsed["entries"]


def _remember(path: str, text: str, value: Any) -> None:
    """Add one parsed file to the cache file (written whole, atomically; no cache: no harm)."""
    try:
        blob = marshal.dumps(value)
    except ValueError:  # a value marshal cannot hold (a YAML timestamp): parsed each time
        return
    entries = _entries()
    entries[path] = (text, blob)
    target = cache_file()
    temporary = f"{target}.{os.getpid()}"
    try:  # the user's eyes only: configuration files may hold tokens
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            marshal.dump(entries, f)
        os.replace(temporary, target)
    except OSError:
        pass


def load_yaml(path: str) -> Any:
    """A YAML (or JSON) file's content as ``yaml.safe_load`` gives it; parsed only when its text
    differs from the remembered one (libyaml's loader: same resolver and constructor, same values)."""
    with open(path) as f:
        text = f.read()
    known = _entries().get(path)
    if isinstance(known, tuple) and len(known) == 2 and known[0] == text:
        try:
            return marshal.loads(known[1])
        except (EOFError, ValueError, TypeError):
            pass
    import yaml

    value = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loaders
    _remember(path, text, value)
    return value


def search_paths() -> list[str]:
    """Where dask.config looks for YAML files, lowest priority first (``dask.config._get_paths``)."""
    paths = [
        os.getenv("DASK_ROOT_CONFIG", "/etc/dask"),
        os.path.join(sys.prefix, "etc", "dask"),
        *[os.path.join(prefix, "etc", "dask") for prefix in site.PREFIXES],
        os.path.join(os.path.expanduser("~"), ".config", "dask"),
    ]
    if "DASK_CONFIG" in os.environ:
        paths.append(os.environ["DASK_CONFIG"])
    return list(reversed(list(dict.fromkeys(reversed(paths)))))  # duplicates keep their last place


def canonical_name(k: str, config: Any) -> str:
    """The spelling of ``k`` already in ``config`` (``a-b`` and ``a_b`` are one key)."""
    try:
        if k in config:
            return k
    except TypeError:
        return k
    alt = k.replace("_", "-") if "_" in k else k.replace("-", "_")
    return alt if alt in config else k


def update(old: dict, new: Mapping, keep_old: bool = False) -> dict:
    """Merge ``new`` into ``old`` in place, nested dicts key by key (``dask.config.update``);
    ``keep_old``: a value already in ``old`` stays (priority "old")."""
    for k, v in new.items():
        k = canonical_name(k, old)
        if isinstance(v, Mapping):
            if k not in old or old[k] is None or not isinstance(old[k], dict):
                old[k] = {}
            update(old[k], v, keep_old)
        elif not keep_old or k not in old:
            old[k] = v
    return old


def _files(paths: list[str]) -> Iterator[str]:
    for path in paths:
        if not os.path.exists(path):
            continue
        if not os.path.isdir(path):
            yield path
            continue
        try:
            names = os.listdir(path)
        except OSError:
            continue
        yield from sorted(os.path.join(path, n) for n in names
                          if os.path.splitext(n)[1].lower() in (".json", ".yaml", ".yml"))


def file_configs(paths: list[str]) -> Iterator[dict]:
    """The ``caelum`` entry of every configuration file under ``paths``, in priority order.

    A malformed file fails as dask.config fails at import: ``ValueError`` naming the file.
    """
    for path in _files(paths):
        try:
            data = load_yaml(path)
        except OSError:
            continue
        except Exception as exc:
            raise ValueError(f"A dask config file at {path!r} is malformed, original error "
                             f"message:\n\n{exc}") from None
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"A dask config file at {path!r} is malformed - config files must have "
                             f"a dict as the top level object, got a {type(data).__name__} instead")
        if data and ROOT in data:
            yield {ROOT: data[ROOT]}


def interpret_value(value: str) -> Any:
    """An environment variable's value as dask reads it: a Python literal, else none/true/…, else text."""
    import ast

    try:
        return ast.literal_eval(value)
    except (SyntaxError, ValueError):
        pass
    return {"none": None, "null": None, "false": False, "true": True}.get(value.lower(), value)


def _assign(keys: list[str], value: Any, d: dict) -> None:
    key = canonical_name(keys[0], d)
    if len(keys) == 1:
        d[key] = value
        return
    if key not in d:
        d[key] = {}
    _assign(keys[1:], value, d[key])


def env_config(env: Mapping[str, str]) -> dict:
    """The ``caelum`` part of ``DASK_INTERNAL_INHERIT_CONFIG`` and the ``DASK_*`` variables."""
    flat: dict[str, Any] = {}
    if "DASK_INTERNAL_INHERIT_CONFIG" in env:
        import base64
        import json

        flat = json.loads(base64.urlsafe_b64decode(env["DASK_INTERNAL_INHERIT_CONFIG"].encode()).decode())
    for name, value in env.items():
        if name.startswith("DASK_"):
            flat[name[5:].lower().replace("__", ".")] = interpret_value(value)
    result: dict = {}
    for key, value in flat.items():
        if key.split(".")[0] == ROOT:
            _assign(key.split("."), value, result)
    return result


def collect(defaults: Mapping[str, Any], paths: list[str] | None = None,
            env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``caelum`` subtree as ``dask.config.get("caelum")`` gives it once ``defaults`` (the
    packaged caelum.yaml: ``{"caelum": {...}}``) are registered with ``update_defaults``."""
    configs = [*file_configs(search_paths() if paths is None else paths),
               env_config(os.environ if env is None else env)]
    result: dict = {}
    for config in reversed(configs):  # dask.config.collect: the later source wins
        update(result, config, keep_old=True)
    update(result, {ROOT: defaults.get(ROOT) or {}}, keep_old=True)  # update_defaults: fills only what is unset
    found = result.get(ROOT)
    return found if isinstance(found, dict) else {}


def get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``key`` (dotted, under ``caelum``) in ``config``, as ``dask.config.get`` walks it."""
    result: Any = config
    for k in key.split("."):
        k = canonical_name(k, result)
        try:
            result = result[k]
        except (TypeError, IndexError, KeyError):
            return default
    return result


__all__ = ["ROOT", "cache_file", "canonical_name", "collect", "env_config", "file_configs", "get", "interpret_value",
           "load_yaml", "search_paths", "update"]

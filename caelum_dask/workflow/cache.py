"""The result cache: task results stored by a hash of (task code, input hashes, parameters).

Keys are computed on the client before anything runs (a Merkle hash: a task's key includes
its upstream tasks' keys), so a re-run knows up front which tasks it can skip and never even
submits them. Values are cloudpickled files under one root, which is any fsspec URL: a local
folder by default (``caelum.workflow.cache``, else ``<caelum home>/cache/workflows``), or a
shared location (``s3://…``, an NFS path, …) so every machine sees the same cache.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import uuid
from typing import Any

import cloudpickle
import fsspec
from dask.base import tokenize

from caelum_dask import config

_FS_MEMO: dict[str, "ResultCache"] = {}


def default_url() -> str:
    """The configured cache location, or the local default under the caelum home."""
    url = config.get("workflow.cache")
    if url:
        return str(url)
    return str(config.home() / "cache" / "workflows")


class ResultCache:
    """Pickled task results under one fsspec root, sharded by the first two hex digits."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self._made: set[str] = set()
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    @classmethod
    def at(cls, url: str) -> "ResultCache":
        """One instance per URL and process (workers reuse it across tasks)."""
        cache = _FS_MEMO.get(url)
        if cache is None:
            cache = _FS_MEMO[url] = cls(url)
        return cache

    def path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.pkl"

    def keys(self) -> set[str]:
        """Every key present; one listing instead of one stat per task."""
        if self.local:
            found: set[str] = set()
            if not os.path.isdir(self.root):
                return found
            for shard in os.scandir(self.root):
                if shard.is_dir():
                    found.update(e.name[:-4] for e in os.scandir(shard.path) if e.name.endswith(".pkl"))
            return found
        try:
            return {p.rsplit("/", 1)[-1][:-4] for p in self.fs.find(self.root) if p.endswith(".pkl")}
        except FileNotFoundError:
            return set()

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self.path(key)))

    def load(self, key: str) -> Any:
        with self.fs.open(self.path(key), "rb") as f:
            return cloudpickle.load(f)

    def store(self, key: str, value: Any) -> bool:
        """Write atomically (temporary name, then rename); False when the value cannot be pickled."""
        try:
            data = cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001 - an unpicklable result is simply not cached
            return False
        final = self.path(key)
        try:
            if self.local:
                self._write_local(final, data)
            else:
                self.fs.pipe_file(final, data)
        except OSError:  # a full disk or unreachable store costs the cache entry, never the task
            return False
        return True

    def _write_local(self, final: str, data: bytes) -> None:
        shard = os.path.dirname(final)
        if shard not in self._made:
            os.makedirs(shard, exist_ok=True)
            self._made.add(shard)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        try:
            f = open(tmp, "wb")
        except FileNotFoundError:  # the cache was cleared under us
            os.makedirs(shard, exist_ok=True)
            f = open(tmp, "wb")
        with f:
            f.write(data)
        os.replace(tmp, final)

    def clear(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


_CODE_MEMO: dict[int, tuple[Any, str]] = {}


def code_hash(func: Any) -> str:
    """A hash of a callable's code: its source when available, else its bytecode and constants."""
    memo = _CODE_MEMO.get(id(func))
    if memo is not None and memo[0] is func:
        return memo[1]
    target = inspect.unwrap(func)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        text = repr((code.co_code, code.co_consts)) if code is not None else tokenize(target)
    digest = hashlib.sha256(f"{getattr(target, '__qualname__', '')}\n{text}".encode()).hexdigest()
    _CODE_MEMO[id(func)] = (func, digest)
    return digest


def combine(*parts: Any) -> str:
    """A cache key from already-hashed or tokenizable parts."""
    return hashlib.sha256(tokenize(*parts).encode()).hexdigest()

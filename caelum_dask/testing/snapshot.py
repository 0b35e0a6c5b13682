"""A content-addressed snapshot of the project, and its per-machine unpacked cache.

Workers share no filesystem with the developer's machine, so the project travels to them as a
tar archive: in a git work tree the tracked files plus untracked files that are not ignored
(``git ls-files -co --exclude-standard``: what ``git status`` would show), elsewhere every file
minus ``.git``, virtual environments and caches. The archive's name is the SHA-256 of the file
list and contents, so an unchanged project is unpacked on a machine once and reused by every
later run; each machine fetches the bytes at most once per hash (a file lock serialises the
worker processes of one machine).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from caelum_dask.errors import InvalidInput

#: folders never shipped: VCS data, virtual environments, caches, build output, caelum state
EXCLUDED_DIRS = frozenset({
    ".git", ".hg", ".svn", ".venv", "venv", "env", ".env", ".tox", ".nox", "__pycache__",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".caelum", "node_modules",
    ".eggs", "build", "dist", ".ipynb_checkpoints",
})
EXCLUDED_SUFFIXES = (".pyc", ".pyo")
COMPLETE_MARK = ".caelum-snapshot-complete"


@dataclass(frozen=True)
class Snapshot:
    """The archive of one project state; ``digest`` names it everywhere."""

    digest: str
    data: bytes
    files: int

    @property
    def size(self) -> int:
        return len(self.data)


def _git_files(root: Path) -> list[str] | None:
    """Files git would ship (tracked + untracked-not-ignored), or None outside a work tree."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True, timeout=120,
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
    venvs = tuple(n[: -len("pyvenv.cfg")] for n in names if n == "pyvenv.cfg" or n.endswith("/pyvenv.cfg"))
    return [n for n in names if not _excluded(n) and not (venvs and n.startswith(venvs)) and (root / n).is_file()]


#: never shipped even when git does not ignore them
_ALWAYS_EXCLUDED = frozenset({".git", ".caelum", "__pycache__", ".venv", ".tox", ".nox", ".pytest_cache",
                              ".mypy_cache", ".ruff_cache"})


def _excluded(relpath: str) -> bool:
    parts = relpath.split("/")
    return bool(set(parts[:-1]) & _ALWAYS_EXCLUDED) or relpath.endswith(EXCLUDED_SUFFIXES)


def _walk_files(root: Path) -> list[str]:
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS
                       and not (Path(dirpath, d) / "pyvenv.cfg").exists()]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.endswith(EXCLUDED_SUFFIXES) and not os.path.islink(os.path.join(dirpath, name)):
                names.append((rel / name).as_posix())
    return names


def project_files(root: Path) -> list[str]:
    """The relative paths a snapshot of ``root`` contains, sorted."""
    files = _git_files(root)
    if files is None:
        files = _walk_files(root)
    return sorted(set(files))


def build_snapshot(root: str | os.PathLike[str]) -> Snapshot:
    """Archive the project at ``root`` deterministically (same content => same digest)."""
    path = Path(root).resolve()
    if not path.is_dir():
        raise InvalidInput(f"{root}: no such project folder; give the path of the project to test")
    names = project_files(path)
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name in names:
            full = path / name
            content = full.read_bytes()
            mode = 0o755 if os.access(full, os.X_OK) else 0o644
            digest.update(f"{name}\0{mode}\0{len(content)}\0".encode())
            digest.update(content)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return Snapshot(digest=digest.hexdigest()[:32], data=buffer.getvalue(), files=len(names))


def cache_root() -> Path:
    """Where this machine keeps unpacked snapshots (``caelum.testing.snapshot-cache``)."""
    from caelum_dask import config

    configured = config.get("testing.snapshot-cache")
    root = Path(os.path.expanduser(configured)) if configured else config.home() / "test-snapshots"
    root.mkdir(parents=True, exist_ok=True)
    return root


def is_unpacked(digest: str) -> bool:
    """Whether this machine already holds the unpacked snapshot ``digest`` (a client.run probe)."""
    return (cache_root() / digest / COMPLETE_MARK).exists()


def ensure_unpacked(digest: str, fetch: Callable[[], bytes], root: Path | None = None) -> tuple[Path, bool]:
    """The unpacked snapshot ``digest`` on this machine; ``fetch()`` is called only if missing.

    Returns ``(folder, fetched)``. Worker processes of one machine take turns on a lock file,
    so the bytes are fetched and unpacked once per machine however many shards start at once.
    """
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / digest
    if (target / COMPLETE_MARK).exists():
        return target, False
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE_MARK).exists():
            return target, False
        staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
        with tarfile.open(fileobj=io.BytesIO(fetch()), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")
        previous = latest_snapshot(root)
        if previous is not None:
            try:
                seed_bytecode(staging, previous)
            except OSError:  # the previous snapshot pruned meanwhile: compile as usual
                pass
        (staging / COMPLETE_MARK).write_text(digest)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target, True


def latest_snapshot(root: Path) -> Path | None:
    """The most recently unpacked complete snapshot on this machine, if any."""
    marks = [(mark.stat().st_mtime, mark.parent) for mark in root.glob(f"*/{COMPLETE_MARK}")]
    return max(marks)[1] if marks else None


def seed_bytecode(target: Path, previous: Path) -> int:
    """Give ``target`` the compiled bytecode ``previous`` has for files that did not change.

    A new snapshot (one file edited) would otherwise start without ``__pycache__``: its first
    run recompiles every module of the project and pytest rewrites every test module again —
    seconds on a large suite. Every snapshot file is unpacked with mtime 0, so a ``.pyc`` is
    valid for any byte-identical source whatever the snapshot; for each ``.py`` whose bytes
    equal the previous snapshot's, its ``.pyc`` files (every interpreter's, pytest's rewritten
    ones too) are hard-linked (copied across filesystems). Python replaces, never rewrites, a
    ``.pyc`` in place, so sharing the inode is safe. Returns how many files were seeded.
    """
    seeded = 0
    for source in target.rglob("*.py"):
        rel = source.relative_to(target)
        old = previous / rel
        cache = old.parent / "__pycache__"
        if not cache.is_dir() or not old.is_file() or old.stat().st_size != source.stat().st_size:
            continue
        if old.read_bytes() != source.read_bytes():
            continue
        for pyc in cache.glob(f"{source.stem}.*.pyc"):
            seeded += _link(pyc, source.parent / "__pycache__" / pyc.name)
    return seeded


def _link(src: Path, dst: Path) -> int:
    dst.parent.mkdir(exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        try:
            shutil.copy2(src, dst)
        except OSError:
            return 0
    return 1


def prune(keep: Iterable[str], root: Path | None = None) -> None:
    """Remove unpacked snapshots other than ``keep`` (housekeeping, never called implicitly)."""
    root = root or cache_root()
    keep = set(keep)
    for child in root.iterdir():
        if child.is_dir() and child.name not in keep and not child.name.startswith("."):
            shutil.rmtree(child, ignore_errors=True)

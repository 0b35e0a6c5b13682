"""Git history of the repositories under a folder, read with ONE ``git log`` per repository.

Why not a per-commit library (GitPython, PyDriller)? They spawn work per commit; a single
``git log --numstat -z`` streams the whole history in one process and parsing it is linear.
The ``-z`` form makes paths unambiguous (no quoting, NUL separated) and gives renames as
``added\\tdeleted\\t\\0old\\0new\\0``. Binary files show ``-`` for both counts. Merge commits
have no numstat (git's default: no diff for merges), empty commits neither: both still get a
commit row, so commit counts equal ``git rev-list --count``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_RS, _US = "\x1e", "\x1f"
# hash, parents, author name, author email, author time, committer name, committer time, subject
_FORMAT = "%x1e%H%x1f%P%x1f%an%x1f%ae%x1f%at%x1f%cn%x1f%ct%x1f%s"

DEFAULT_REVS = "HEAD --branches --tags --remotes"
COMMIT_COLUMNS = ["commit", "parents", "n_parents", "author", "email", "author_time", "committer",
                  "commit_time", "subject", "is_merge"]
FILE_COLUMNS = ["commit", "path", "old_path", "added", "deleted", "binary"]


class GitError(Exception):
    """A repository whose history could not be read (the message says why)."""


@dataclass
class RepoHistory:
    """Everything read from one repository."""

    path: str
    repo_id: str  # root commit hash: the same project cloned twice has the same id
    name: str
    head: str
    commits: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)


def _git(repo: str | Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    if check and proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo}: {lines[-1] if lines else proc.returncode}")
    return proc


def is_repository(path: Path) -> bool:
    """A working tree root (``.git`` folder or file) or a bare repository."""
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def discover(root: str | Path, max_depth: int = 3) -> list[Path]:
    """Git repositories at or under ``root`` (not descending into a repository found)."""
    root = Path(root).expanduser()
    found: list[Path] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if is_repository(here):
            found.append(here)
            dirnames[:] = []
            continue
        if len(here.parts) - base_depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in
                             {"node_modules", "__pycache__", ".venv", "venv"})
    return found


def _count(value: str) -> int | None:
    return None if value == "-" else int(value)


def parse_log(raw: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parse ``git log -z --numstat --format=<_FORMAT>`` output into commit and file rows."""
    text = raw.decode("utf-8", errors="replace")
    commits: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []
    for record in text.split(_RS):
        if not record:
            continue
        header, _, body = record.partition("\0")
        sha, parents, author, email, atime, committer, ctime, subject = header.split(_US, 7)
        parent_list = parents.split()
        commits.append({
            "commit": sha, "parents": parents, "n_parents": len(parent_list),
            "author": author, "email": email, "author_time": int(atime),
            "committer": committer, "commit_time": int(ctime), "subject": subject,
            "is_merge": len(parent_list) > 1,
        })
        tokens = body.lstrip("\n").split("\0")
        i = 0
        while i < len(tokens):
            token = tokens[i].lstrip("\n")
            i += 1
            if not token:
                continue
            added, deleted, path = token.split("\t", 2)
            old_path = None
            if path == "":  # rename/copy: the two paths follow as separate fields
                old_path, path = tokens[i], tokens[i + 1]
                i += 2
            binary = added == "-"
            files.append({"commit": sha, "path": path, "old_path": old_path,
                          "added": _count(added) or 0, "deleted": _count(deleted) or 0,
                          "binary": binary})
    return commits, files


def read_tags(repo: str | Path) -> list[dict[str, Any]]:
    """Tags with the commit they point at (annotated tags peeled) and their date."""
    proc = _git(repo, "for-each-ref", "refs/tags", "--format=%(refname:short)\x1f%(objectname)\x1f"
                "%(*objectname)\x1f%(creatordate:unix)")
    rows = []
    for line in proc.stdout.decode(errors="replace").splitlines():
        if not line:
            continue
        name, obj, peeled, date = line.split(_US)
        rows.append({"tag": name, "commit": peeled or obj, "tag_time": int(date or 0)})
    return rows


def read_repository(repo: str | Path, since: int | None = None, revs: str = DEFAULT_REVS) -> RepoHistory:
    """Read one repository's whole history: one ``git log``, plus root/HEAD/tags look-ups.

    ``since`` is a Unix time (commits committed before it are left out). Raises
    :class:`GitError` with a clear message for a repository without commits.
    """
    repo = Path(repo)
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    any_ref = _git(repo, "rev-list", "-n1", *revs.split(), check=False)
    if head.returncode != 0 and not any_ref.stdout.strip():
        raise GitError(f"repository {repo} has no commits yet")
    roots = _git(repo, "rev-list", "--max-parents=0", *revs.split()).stdout.decode().split()
    args = ["log", *revs.split(), "-z", "--numstat", "-M", "--no-color", "--no-ext-diff",
            f"--format={_FORMAT}"]
    if since is not None:
        args.append(f"--since=@{int(since)}")
    commits, files = parse_log(_git(repo, *args).stdout)
    return RepoHistory(path=str(repo), repo_id=min(roots), name=repo.resolve().name,
                       head=head.stdout.decode().strip(), commits=commits, files=files,
                       tags=read_tags(repo))


def iter_histories(roots: list[str], since: int | None, revs: str, max_depth: int, threads: int = 4
                   ) -> Iterator[RepoHistory | tuple[str, str, str]]:
    """Histories of every repository under ``roots``; problems come as (root, kind, message).

    Repositories are read by up to ``threads`` git processes at once (git does the heavy
    part, the diffs, outside the GIL); results come in discovery order.
    """
    from concurrent.futures import ThreadPoolExecutor

    seen: set[str] = set()
    repos: list[Path] = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.exists():
            yield (root, "missing-root", f"root {root} does not exist on this machine")
            continue
        if not path.is_dir():
            yield (root, "not-a-folder", f"root {root} is not a folder")
            continue
        found = discover(path, max_depth)
        if not found:
            yield (root, "no-repositories", f"no git repository at or under {root} "
                   f"(searched {max_depth} levels deep)")
            continue
        for repo in found:
            key = str(repo.resolve())
            if key not in seen:
                seen.add(key)
                repos.append(repo)

    def read(repo: Path) -> RepoHistory | tuple[str, str, str]:
        try:
            return read_repository(repo, since, revs)
        except GitError as exc:
            return (str(repo), "git-error", str(exc))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        yield from pool.map(read, repos)

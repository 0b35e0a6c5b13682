"""Real git repositories with known authors, dates, tags, renames, binaries, merges and empty
commits, built with the git CLI for the BI tests (hand-checked expectations in test_bi.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REVS = ("HEAD", "--branches", "--tags", "--remotes")  # caelum.bi.git-revs default
PEOPLE = {name: f"{name.lower()}@example.com" for name in ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")}


def git(repo: Path, *args: str, who: str = "Alice", date: str = "2024-01-01T12:00:00+00:00") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": who, "GIT_AUTHOR_EMAIL": PEOPLE[who],
           "GIT_COMMITTER_NAME": who, "GIT_COMMITTER_EMAIL": PEOPLE[who],
           "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date, "GIT_CONFIG_NOSYSTEM": "1",
           "HOME": str(repo.parent)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def write(repo: Path, path: str, lines: int, start: int = 0) -> None:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(f"line {i}\n" for i in range(start, start + lines)))


def append(repo: Path, path: str, lines: list[str]) -> None:
    with (repo / path).open("a") as f:
        f.writelines(line + "\n" for line in lines)


def commit(repo: Path, message: str, who: str, date: str, *extra: str) -> None:
    git(repo, "add", "-A", who=who, date=date)
    git(repo, "commit", "-q", "-m", message, *extra, who=who, date=date)


def make_alpha(repo: Path) -> Path:
    """8 commits on all refs; tags v1.0 (c2), v1.1 (c7), v1.2 (c8); see test_bi.py for the figures."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, "src/app.py", 10)
    write(repo, "README.md", 2)
    commit(repo, "initial app", "Alice", "2024-01-01T12:00:00+00:00")                   # c1
    text = (repo / "src/app.py").read_text().splitlines()
    text[0] = "changed line 0"
    (repo / "src/app.py").write_text("\n".join(text + ["b1", "b2"]) + "\n")              # +3 -1
    (repo / "assets").mkdir()
    (repo / "assets/logo.bin").write_bytes(bytes(range(256)) * 4)                        # binary
    commit(repo, "tune app, add logo", "Bob", "2024-01-03T12:00:00+00:00")               # c2
    git(repo, "tag", "-a", "v1.0", "-m", "release 1.0", who="Bob", date="2024-01-04T12:00:00+00:00")
    git(repo, "mv", "src/app.py", "src/main.py")
    append(repo, "src/main.py", ["renamed"])                                             # rename +1
    commit(repo, "rename app to main", "Alice", "2024-01-08T12:00:00+00:00")             # c3
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, "src/util.py", 5)
    append(repo, "src/main.py", ["use util", "more"])                                    # +2
    commit(repo, "add util", "Carol", "2024-01-09T12:00:00+00:00")                       # c4
    git(repo, "checkout", "-q", "main")
    text = (repo / "src/main.py").read_text().splitlines()
    text[1] = "fixed line 1"
    (repo / "src/main.py").write_text("\n".join(text) + "\n")                            # +1 -1
    commit(repo, "Fix crash in main", "Alice", "2024-01-10T12:00:00+00:00")              # c5
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge feature", "feature", who="Alice",
        date="2024-01-11T12:00:00+00:00")                                                # c6 merge
    commit(repo, "empty: trigger CI", "Bob", "2024-01-12T12:00:00+00:00", "--allow-empty")  # c7
    git(repo, "tag", "v1.1", who="Bob", date="2024-01-12T18:00:00+00:00")                # lightweight
    append(repo, "src/main.py", ["x", "y"])
    append(repo, "src/util.py", ["z"])
    commit(repo, "extend main and util", "Alice", "2024-01-20T12:00:00+00:00")           # c8
    git(repo, "tag", "-a", "v1.2", "-m", "release 1.2", who="Alice", date="2024-01-21T12:00:00+00:00")
    return repo


def make_beta(repo: Path) -> Path:
    """lib/ written by Dave 4, Erin 4, Frank 2 lines: bus factor 2, owner Dave (40 %)."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, "lib/a.py", 4)
    commit(repo, "a", "Dave", "2024-02-01T09:00:00+00:00")
    write(repo, "lib/b.py", 4)
    commit(repo, "b", "Erin", "2024-02-02T09:00:00+00:00")
    append(repo, "lib/a.py", ["f1", "f2"])
    commit(repo, "more a", "Frank", "2024-02-03T09:00:00+00:00")
    return repo


def clone(source: Path, target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(source), str(target)], check=True, capture_output=True)
    return target


def rev_count(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", *REVS).strip())


def numstat_sums(repo: Path) -> tuple[int, int]:
    """Lines added/deleted as plain ``git log --numstat`` prints them ('-' counts 0)."""
    added = deleted = 0
    for line in git(repo, "log", *REVS, "--numstat", "-M", "--format=").splitlines():
        if line.strip():
            a, d, _ = line.split("\t", 2)
            added += 0 if a == "-" else int(a)
            deleted += 0 if d == "-" else int(d)
    return added, deleted


JUNIT_RUN1 = """<?xml version="1.0"?>
<testsuites><testsuite name="pytest" timestamp="2024-01-10T10:00:00">
<testcase classname="tests.test_x" name="test_a" time="0.5"/>
<testcase classname="tests.test_x" name="test_b" time="1.0"><failure message="boom"/></testcase>
<testcase classname="tests.test_x" name="test_c" time="2.5"/>
</testsuite></testsuites>"""
JUNIT_RUN2 = """<?xml version="1.0"?>
<testsuites><testsuite name="pytest" timestamp="2024-01-11T10:00:00">
<testcase classname="tests.test_x" name="test_a" time="0.4"/>
<testcase classname="tests.test_x" name="test_b" time="1.2"/>
<testcase classname="tests.test_x" name="test_c" time="3.5"/>
</testsuite></testsuites>"""

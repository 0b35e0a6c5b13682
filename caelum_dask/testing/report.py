"""The terminal summary of a run, laid out the way pytest lays out its own.

Sections in pytest's order: collection errors, failures (with their tracebacks), flaky tests,
slowest durations, per-machine session timings, the short test summary and the final
``=== N failed, M passed in Xs ===`` line (pytest's words and order), so people and CI log
scrapers read it as usual.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caelum_dask.testing.result import TestRunResult

SLOWEST = 10


def sep(char: str, title: str = "", width: int | None = None) -> str:
    """A pytest-style separator line (``==== title ====``)."""
    width = width or min(shutil.get_terminal_size((80, 24)).columns, 120)
    if not title:
        return char * width
    side = max(2, (width - len(title) - 2) // 2)
    line = f"{char * side} {title} {char * side}"
    return line + char * (width - len(line)) if len(line) < width else line


def _final_line(counts: dict[str, int], duration: float) -> str:
    """pytest's final line, in pytest's order; caelum's own words (flaky, not run) last."""
    order = ("failed", "passed", "skipped", "deselected", "xfailed", "xpassed", "error", "flaky", "notrun")
    names = {"error": ("error", "errors"), "notrun": ("not run", "not run")}
    parts = [f"{counts[k]} {names.get(k, (k, k))[counts[k] != 1]}" for k in order if counts.get(k)]
    return f"{', '.join(parts) or 'no tests ran'} in {duration:.2f}s"


def _failures(plat: dict[str, Any], tag: str) -> list[str]:
    failures = [t for t in plat["tests"] if t["outcome"] in ("failed", "error")]
    if not failures:
        return []
    lines = [sep("=", f"FAILURES{tag}")]
    for test in failures:
        lines.append(sep("_", test["nodeid"] + (f" on {test['machine']}" if test.get("machine") else "")))
        lines.append((test.get("longrepr") or test.get("message") or "").rstrip())
    return lines


def _flaky(plat: dict[str, Any], tag: str) -> list[str]:
    flaky = [t for t in plat["tests"] if t["outcome"] == "flaky"]
    if not flaky:
        return []
    lines = [sep("=", f"flaky tests{tag} (failed, then passed on a re-run)")]
    for test in flaky:
        first = test["flaky_failures"][0]
        lines.append(f"FLAKY {test['nodeid']} - failed on {first.get('machine') or '?'}: "
                     f"{first.get('message') or first.get('outcome')}; passed on {test.get('machine')}")
    return lines


def _slowest(plat: dict[str, Any], tag: str) -> list[str]:
    slow = sorted(plat["tests"], key=lambda t: -(t.get("duration") or 0))[:SLOWEST]
    if not slow:
        return []
    return [sep("=", f"slowest {len(slow)} durations{tag}"),
            *(f"{t.get('duration') or 0:.2f}s {t['nodeid']}" for t in slow)]


def _sessions(plat: dict[str, Any], tag: str) -> list[str]:
    """Per machine: each pytest session's tests, busy time and interpreter restarts."""
    if not plat["shards"]:
        return []
    lines = [sep("=", f"sessions{tag} (imbalance max/mean {plat['imbalance']})")]
    per_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for shard in plat["shards"]:
        per_machine[shard.get("machine") or "?"].append(shard)
    for machine, shards in sorted(per_machine.items()):
        total = sum(s.get("duration") or 0 for s in shards)
        lines.append(f"{machine}: {len(shards)} session(s), {total:.2f}s of tests")
        for s in shards:
            restarts = max(0, len(s.get("runs") or []) - 1)
            extra = f", {restarts} interpreter restart(s)" if restarts else ""
            extra += ", LOST" if s.get("lost") else ""
            lines.append(f"  {s['shard']:<16} {s['tests']:>5} tests  est {s.get('estimate') or 0:7.2f}s  "
                         f"took {s.get('duration') or 0:7.2f}s  {s.get('worker') or ''}{extra}")
    return lines


def _short_summary(plat: dict[str, Any], tag: str) -> list[str]:
    short = [t for t in plat["tests"] if t["outcome"] in ("failed", "error", "xpassed")]
    if not short:
        return []
    word = {"failed": "FAILED", "error": "ERROR", "xpassed": "XPASS"}
    lines = [sep("=", f"short test summary info{tag}")]
    for test in short:
        message = (test.get("message") or "").splitlines()
        lines.append(f"{word[test['outcome']]} {test['nodeid']}" + (f" - {message[0]}" if message else ""))
    return lines


def _platform(plat: dict[str, Any], tag: str) -> list[str]:
    if plat["collection"].get("output"):
        return [sep("=", f"ERRORS{tag} (collection, pytest output on {plat['collection'].get('machine')})"),
                plat["collection"]["output"].rstrip()]
    return [*_failures(plat, tag), *_flaky(plat, tag), *_slowest(plat, tag), *_sessions(plat, tag),
            *_short_summary(plat, tag)]


def render(summary: TestRunResult) -> str:
    """The whole run as text (printed to stdout by ``caelum test``)."""
    lines: list[str] = []
    multi = len(summary.platforms) > 1
    for plat in summary.platforms:
        tag = f" [{plat['platform']}]" if multi else ""
        lines.extend(_platform(plat, tag))
        if multi:
            lines.append(sep("-", f"{plat['platform']}: {_final_line(plat['counts'], summary.duration)}"))
    broken = [p for p in summary.platforms if p["collection"].get("output")]
    if broken:  # pytest's line counts collection errors, not another platform's test errors
        errors = sum(p["counts"].get("error", 0) for p in broken)
        lines.append(sep("!", f"Interrupted: {errors} error{'s' if errors != 1 else ''} during collection"))
    if summary.stopped:
        lines.append(sep("!", summary.stopped))
    lines.append(sep("=", _final_line(summary.counts, summary.duration)))
    return "\n".join(lines)

"""The terminal summary of a sharded run, laid out the way pytest lays out its own.

Sections in pytest's order: collection errors, failures (with their tracebacks), flaky tests,
slowest durations, per-machine shard timings, the short test summary and the final
``=== N failed, M passed in Xs ===`` line, so people and CI log scrapers read it as usual.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from typing import Any

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
    order = ("failed", "passed", "skipped", "xfailed", "xpassed", "flaky", "error", "notrun")
    names = {"error": ("error", "errors"), "notrun": ("not run", "not run")}
    parts = [f"{counts[k]} {names.get(k, (k, k))[counts[k] != 1]}" for k in order if counts.get(k)]
    return f"{', '.join(parts) or 'no tests ran'} in {duration:.2f}s"


def render(summary: dict[str, Any]) -> str:
    """The whole summary as text (printed to stdout by ``caelum test``)."""
    lines: list[str] = []
    multi = len(summary["platforms"]) > 1
    for plat in summary["platforms"]:
        tag = f" [{plat['platform']}]" if multi else ""
        if plat["collection"].get("output"):
            lines.append(sep("=", f"collection{tag} (pytest output on {plat['collection'].get('machine')})"))
            lines.append(plat["collection"]["output"].rstrip())
            continue
        failures = [t for t in plat["tests"] if t["outcome"] in ("failed", "error")]
        if failures:
            lines.append(sep("=", f"FAILURES{tag}"))
            for test in failures:
                lines.append(sep("_", test["nodeid"] + (f" on {test['machine']}" if test.get("machine") else "")))
                lines.append((test.get("longrepr") or test.get("message") or "").rstrip())
        flaky = [t for t in plat["tests"] if t["outcome"] == "flaky"]
        if flaky:
            lines.append(sep("=", f"flaky tests{tag} (failed, then passed on a re-run)"))
            for test in flaky:
                first = test["flaky_failures"][0]
                lines.append(f"FLAKY {test['nodeid']} - failed on {first.get('machine') or '?'}: "
                             f"{first.get('message') or first.get('outcome')}; passed on {test.get('machine')}")
        slow = sorted(plat["tests"], key=lambda t: -(t.get("duration") or 0))[:SLOWEST]
        if slow:
            lines.append(sep("=", f"slowest {len(slow)} durations{tag}"))
            lines.extend(f"{t.get('duration') or 0:.2f}s {t['nodeid']}" for t in slow)
        if plat["shards"]:
            lines.append(sep("=", f"shards{tag} (imbalance max/mean {plat['imbalance']})"))
            per_machine: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for shard in plat["shards"]:
                per_machine[shard.get("machine") or "?"].append(shard)
            for machine, shards in sorted(per_machine.items()):
                total = sum(s.get("duration") or 0 for s in shards)
                lines.append(f"{machine}: {len(shards)} shard(s), {total:.2f}s")
                for s in shards:
                    restarts = max(0, len(s.get("runs") or []) - 1)
                    extra = f", {restarts} interpreter restart(s)" if restarts else ""
                    extra += ", LOST" if s.get("lost") else ""
                    lines.append(f"  {s['shard']:<16} {s['tests']:>5} tests  est {s.get('estimate') or 0:7.2f}s  "
                                 f"took {s.get('duration') or 0:7.2f}s  {s.get('worker') or ''}{extra}")
        short = [t for t in plat["tests"] if t["outcome"] in ("failed", "error", "xpassed")]
        if short:
            lines.append(sep("=", f"short test summary info{tag}"))
            word = {"failed": "FAILED", "error": "ERROR", "xpassed": "XPASS"}
            for test in short:
                message = (test.get("message") or "").splitlines()
                lines.append(f"{word[test['outcome']]} {test['nodeid']}" + (f" - {message[0]}" if message else ""))
        if multi:
            lines.append(sep("-", f"{plat['platform']}: {_final_line(plat['counts'], summary['duration'])}"))
    if any(p["collection"].get("output") for p in summary["platforms"]):
        lines.append(sep("!", "Interrupted: errors during collection"))
    lines.append(sep("=", _final_line(summary["counts"], summary["duration"])))
    return "\n".join(lines)

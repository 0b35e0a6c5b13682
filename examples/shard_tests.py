"""Shard a small pytest suite over the cluster and print the outcome.

Run:  python examples/shard_tests.py [PROJECT] [--scheduler tcp://HOST:8786]

With no PROJECT it writes a tiny sample project (a fast test, a slow one, a failing one, a
skipped one) to a temporary folder. With no scheduler it runs on an embedded cluster. The
second run is balanced by the durations the first one recorded in PROJECT/.caelum/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import textwrap
from pathlib import Path

from caelum_dask import connect
from caelum_dask.testing import TestOptions, run_tests

SAMPLE = textwrap.dedent('''
    import time
    import pytest

    def test_fast():
        assert 1 + 1 == 2

    def test_slow():
        time.sleep(0.5)

    def test_broken():
        assert "caelum".upper() == "Caelum"

    @pytest.mark.skip(reason="shows up as skipped")
    def test_skipped():
        pass
''')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", nargs="?")
    parser.add_argument("--scheduler", default=None)
    args = parser.parse_args()
    project = Path(args.project) if args.project else Path(tempfile.mkdtemp(prefix="caelum-sample-"))
    if not args.project:
        (project / "tests").mkdir()
        (project / "tests" / "test_sample.py").write_text(SAMPLE)
    try:
        run_twice(project, args.scheduler)
    finally:
        if not args.project:
            shutil.rmtree(project, ignore_errors=True)
    return 0


def run_twice(project: Path, scheduler: str | None) -> None:
    with connect(scheduler) as client:
        for attempt in (1, 2):
            result = run_tests(project, TestOptions(shards=2, retry_failed=0), client=client)
            platform = result.platforms[0]
            print(json.dumps({
                "run": attempt, "exit_code": result.exit_code, "counts": result.counts,
                "shards": [{"tests": s["nodeids"], "estimate": round(s["estimate"], 3)} for s in platform["shards"]],
                "durations_file": result.durations_file,
            }))


if __name__ == "__main__":
    raise SystemExit(main())

"""``run_tests`` returns a typed :class:`TestRunResult` whose ``to_dict()`` is the published JSON.

The ``caelum test --json`` document and the MCP ``run_tests`` result are read by scripts and
agents: the typed result must give exactly the keys, in the order, that the summary dict had.
"""

from __future__ import annotations

import json
from pathlib import Path

from caelum_dask.testing import TestOptions, run_tests
from caelum_dask.testing.result import SnapshotInfo, TestRunResult
from testshard_fixtures import BASIC, make_project

GOLDEN_INPUTS = Path(__file__).resolve().parent / "golden" / "inputs"

#: the summary dict's keys, in its order, before the typed result (the published shape)
RUN_KEYS = ["run_id", "project", "exit_code", "duration", "dist", "snapshot", "counts", "platforms", "junit",
            "durations_file", "stopped"]
SNAPSHOT_KEYS = ["digest", "files", "bytes"]
PLATFORM_KEYS = ["platform", "exit_code", "counts", "collection", "shards", "imbalance", "lost_shards",
                 "env_removed", "stopped", "tests"]


def test_checked_in_json_documents_read_back_unchanged() -> None:
    """A document made by a real `caelum test --json` (the golden inputs) round-trips exactly."""
    for path in sorted(GOLDEN_INPUTS.glob("summary_*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        result = TestRunResult.from_dict(document)
        assert isinstance(result.snapshot, SnapshotInfo) and result.snapshot.files == document["snapshot"]["files"]
        assert result.to_dict() == document, path.name
        assert sorted(result.to_dict()) == sorted(RUN_KEYS), path.name


def test_a_real_run_gives_the_published_shape(shard_cluster, tmp_path: Path) -> None:
    project = make_project(tmp_path / "basic", BASIC)
    result = run_tests(project, TestOptions(shards=2, retry_failed=0), client=shard_cluster)
    assert isinstance(result, TestRunResult)
    assert result.exit_code == 1 and result.counts["failed"] == 2 and result.counts["passed"] >= 1
    assert set(result.nodeids("failed")) == {"tests/test_basic.py::test_fail", "tests/test_basic.py::test_param[3]"}
    assert {t["nodeid"] for t in result.tests} == set(result.nodeids(*{t["outcome"] for t in result.tests}))

    document = json.loads(json.dumps(result.to_dict()))  # plain JSON, nothing lost on the way
    assert list(document) == RUN_KEYS
    assert list(document["snapshot"]) == SNAPSHOT_KEYS and document["snapshot"]["digest"] == result.snapshot.digest
    assert [list(p) for p in document["platforms"]] == [PLATFORM_KEYS]
    assert (document["run_id"], document["exit_code"], document["counts"]) == (result.run_id, 1, result.counts)
    assert TestRunResult.from_dict(document).to_dict() == document

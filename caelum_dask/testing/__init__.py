"""Test sharding: a pytest suite split over the cluster's machines, balanced by history.

``run_tests(path, TestOptions(...))`` is the Python API behind ``caelum test``; see
docs/testing.md. The modules, one job each: :mod:`.snapshot` (content-addressed project
archive, unpacked once per machine), :mod:`.collect` (``pytest --collect-only``),
:mod:`.durations` (recorded durations), :mod:`.partition` (LPT shards), :mod:`.shard` (the
worker-side pytest subprocess), :mod:`.merge` (JUnit), :mod:`.report` (terminal summary),
:mod:`.runner` (the pipeline) and :mod:`.steps` (the workflow step).
"""

from __future__ import annotations

from caelum_dask.testing.runner import TestOptions, run_tests

__all__ = ["TestOptions", "run_tests"]

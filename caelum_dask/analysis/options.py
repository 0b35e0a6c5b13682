"""What ``caelum analyze`` and ``caelum codemod`` can be told, one dataclass each.

Why: the CLI, the MCP tool, the workflow step and scripts all start analyses; each used to
pass its own keywords and the engine fell back to ``caelum.analysis.*`` in three places. Now a
front door builds :class:`AnalysisOptions` / :class:`CodemodOptions` with
``from_config(**what_the_user_gave)``, every unset configurable field is filled from the
caller's configuration (caelum.yaml holds the only defaults), and the resolved values travel
with the tasks — a worker never reads its own, possibly different, configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from caelum_dask.errors import InvalidInput
from caelum_dask.options import ConfiguredOptions

PluginOptions = Mapping[str, Mapping[str, Any]]  # analyzer name -> its options


@dataclass
class AnalysisOptions(ConfiguredOptions):
    """Everything one analysis run takes from the user (``caelum analyze``'s options, one to one).

    ``plugin_options`` are this run's options per analyzer; they go over the configured
    ``caelum.analysis.plugin-options`` (``plugin_defaults``) analyzer by analyzer, as before.
    """

    CONFIG: ClassVar[Mapping[str, str]] = {
        "batch_bytes": "analysis.batch-bytes",
        "batch_seconds": "analysis.batch-seconds",
        "batches_per_worker": "analysis.batches-per-worker",
        "time_limit": "analysis.file-time-limit",
        "max_file_bytes": "analysis.max-file-bytes",
        "plugin_defaults": "analysis.plugin-options",
    }

    analyzers: Sequence[str] | None = None  # built-in analyzers; None: every built-in
    plugins: Sequence[str] = ()  # plugin files or folders
    plugin_options: PluginOptions = field(default_factory=dict)
    plugin_defaults: PluginOptions | None = None
    include_all: bool = False  # also vendored, generated and huge files
    use_cache: bool = True
    cache_path: str | None = None  # None: the results cache under the caelum home
    batch_bytes: int | None = None  # target bytes of source per task
    batch_seconds: float | None = None  # target seconds per task once seconds per byte are learned (0: bytes)
    batches_per_worker: int | None = None  # until then, at most this many batches of more than batch_bytes per worker
    time_limit: float | None = None  # seconds per file (0: no limit)
    max_file_bytes: int | None = None  # larger files are skipped unless include_all
    out: str | None = None  # folder for CSV/Parquet/summary.json/report.html; None: no export

    def merged_plugin_options(self) -> dict[str, dict[str, Any]]:
        """The options each analyzer gets: the configured ones, this run's over them."""
        merged = {**(self.plugin_defaults or {}), **self.plugin_options}
        return {name: dict(values) for name, values in merged.items()}

    def validate(self) -> None:
        """Refuse values that cannot mean anything, with one line each (on a resolved copy)."""
        if self.time_limit is not None and self.time_limit < 0:
            raise InvalidInput(f"the file time limit must be 0 (none) or more seconds (got {self.time_limit:g})")
        if self.batch_bytes is not None and int(self.batch_bytes) < 1:
            raise InvalidInput(f"batch bytes must be a positive number (got {self.batch_bytes})")


@dataclass
class CodemodOptions(ConfiguredOptions):
    """Everything one codemod run takes from the user (``caelum codemod``'s options, one to one)."""

    CONFIG: ClassVar[Mapping[str, str]] = {
        "batch_bytes": "analysis.batch-bytes",
        "context_lines": "analysis.codemod-diff-context",
    }

    transform: str | None = None  # module:Class of a libcst Codemod
    apply: bool = False  # write the changed files instead of only diffing
    context_lines: int | None = None  # lines of context in each diff (libcst.tool's -u)
    batch_bytes: int | None = None  # target bytes of source per task


def given(base: ConfiguredOptions | None, factory: type[ConfiguredOptions], **keywords: Any) -> Any:
    """``base`` (or fresh options) with the keywords a caller gave (not ``None``) over it, resolved.

    Why: the engines keep their old keyword arguments next to ``options=``; a keyword the caller
    did give wins, the rest comes from ``base`` and then from the configuration.
    """
    chosen = {name: value for name, value in keywords.items() if value is not None}
    options = base if base is not None else factory()
    return (replace(options, **chosen) if chosen else options).resolved()  # type: ignore[type-var]


__all__ = ["AnalysisOptions", "CodemodOptions", "PluginOptions", "given"]

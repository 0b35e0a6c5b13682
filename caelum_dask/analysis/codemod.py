"""Distributed libcst codemods: the same transform, files and diff as ``python -m libcst.tool
codemod -x MODULE.CLASS PATH --no-format -u 5``, with the files spread over the cluster.

The file list is libcst's own (``gather_files``, made absolute and sorted as libcst.tool
does; libcst.tool prints files in completion order, we print them sorted), files carrying libcst's generated-code marker
are skipped as libcst does, module/package names come from libcst's
``calculate_module_and_package``, and diffs from its ``diff_code``. The transform's source
travels with the task, so workers need not have the user's module installed.

What the run is told comes as :class:`~caelum_dask.analysis.options.CodemodOptions` (resolved
on the caller; the diff context travels with the tasks), how far it is goes to ``progress`` as
:class:`~caelum_dask.progress.ProgressEvent` (``job="codemod"``: files done, failed files).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caelum_dask import keys
from caelum_dask.analysis.batching import batch_by_size
from caelum_dask.analysis.loader import PluginSource, load_plugin_module
from caelum_dask.analysis.options import CodemodOptions, given
from caelum_dask.errors import InvalidInput
from caelum_dask.progress import ProgressCallback, ProgressEvent, status
from caelum_dask.results import Result

GENERATED_MARKER = "@gen" + "erated"  # libcst.tool's default marker (split so this file is not "generated")
JOB = "codemod"
CodemodItem = tuple[str, bytes, str | None, str | None]  # (filename, content, module, package)


@dataclass(frozen=True)
class TransformRef:
    """A codemod class that can be rebuilt on any worker: import by name, else from source."""

    module: str
    cls: str
    source: PluginSource | None

    def load(self) -> type:
        module: Any = None
        if not self.module.endswith(".py") and "/" not in self.module:
            try:  # installed where the worker runs (keeps its own relative imports working)
                module = importlib.import_module(self.module)
            except ImportError:
                if self.source is None:
                    raise
        if module is None and self.source is not None:
            module = load_plugin_module(self.source)
        return getattr(module, self.cls)


@dataclass
class CodemodResult(Result):
    """Per file: the diff (empty when unchanged), new bytes when changed, skips and failures."""

    files: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict, metadata={"json": False})
    new_code: dict[str, bytes] = field(default_factory=dict, metadata={"json": False})
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[str]:
        return sorted(self.new_code)

    def to_dict(self) -> dict[str, Any]:
        """The published ``caelum codemod --json`` shape: a file count and the changed files
        (not the diffs nor the new bytes, which the text output and ``--apply`` carry)."""
        return {"files": len(self.files), "changed": self.changed, "skipped": self.skipped,
                "failed": self.failed, "written": self.written}

    def add(self, filename: str, outcome: str, new: bytes | None, text: str) -> None:
        """Fold in one file's outcome ("ok", "skip" or "fail") from :func:`codemod_batch`."""
        if outcome == "ok":
            self.diffs[filename] = text
            if new is not None:
                self.new_code[filename] = new
        elif outcome == "skip":
            self.skipped[filename] = text
        else:
            self.failed[filename] = text


def resolve_transform(spec: str) -> TransformRef:
    """``module:Class`` or ``module.Class`` (module importable, or a path to a .py file)."""
    import libcst.codemod as codemod

    module_name, sep, cls_name = spec.rpartition(":")
    if not sep:
        module_name, _, cls_name = spec.rpartition(".")
    if not module_name or not cls_name:
        raise InvalidInput(f"--transform {spec!r} must look like module:Class")
    source = None
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise InvalidInput(f"transform file not found: {module_name}")
        try:
            source = PluginSource(str(path), path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise InvalidInput(f"transform file {module_name} is not UTF-8 Python source") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read transform file {module_name}: {exc.strerror or exc}") from None
        module: Any = load_plugin_module(source)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidInput(f"cannot import transform module {module_name!r}: {exc}") from None
        origin = getattr(module, "__file__", None)
        if origin and origin.endswith(".py") and not _installed(origin):
            source = PluginSource(origin, Path(origin).read_text(encoding="utf-8"))
    cls = getattr(module, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, codemod.Codemod)):
        raise InvalidInput(f"{spec} is not a libcst Codemod class (e.g. a VisitorBasedCodemodCommand)")
    if inspect.isabstract(cls):
        raise InvalidInput(f"{spec} is an abstract Codemod base class; give a concrete subclass that "
                           "implements transform_module_impl")
    return TransformRef(module_name, cls_name, source)


def _installed(origin: str) -> bool:
    return "site-packages" in origin or "dist-packages" in origin or origin.startswith(sys.prefix + "/lib")


def codemod_batch(items: list[CodemodItem], ref: TransformRef,
                  context_lines: int) -> list[tuple[str, str, Any, str]]:
    """Transform each (filename, bytes, module, package): ("ok", new bytes, diff) / ("skip", …) / ("fail", …)."""
    from libcst import PartialParserConfig, parse_module
    from libcst.codemod import CodemodContext, SkipFile, diff_code

    transform = ref.load()
    out: list[tuple[str, str, Any, str]] = []
    for filename, old, module, package in items:
        if GENERATED_MARKER.encode() in old:
            out.append((filename, "skip", None, "Generated file."))
            continue
        try:
            instance = transform(CodemodContext(filename=filename, full_module_name=module,
                                                full_package_name=package))
            tree = parse_module(old, config=PartialParserConfig())
            result = instance.transform_module(tree)
            new, encoding = result.bytes, result.encoding
        except SkipFile as exc:
            out.append((filename, "skip", None, str(exc)))
            continue
        except Exception as exc:
            out.append((filename, "fail", None, f"{type(exc).__name__}: {exc}"))
            continue
        diff = diff_code(old.decode(encoding), new.decode(encoding), context_lines, filename=filename)
        out.append((filename, "ok", new if new != old else None, diff))
    return out


def run_codemod(path: str, transform: str | None = None, *, options: CodemodOptions | None = None,
                apply: bool | None = None, client: Any = None, scheduler: str | None = None,
                context_lines: int | None = None, progress: ProgressCallback | None = None) -> CodemodResult:
    """Run the codemod over ``path`` on the cluster; with ``apply`` write changed files.

    ``options`` says what to run (:class:`CodemodOptions`); ``transform``, ``apply`` and
    ``context_lines`` given here go over it, and what neither says comes from the configuration.
    """
    from libcst.codemod import gather_files

    from caelum_dask.cluster import client_scope

    opts: CodemodOptions = given(options, CodemodOptions, transform=transform, apply=apply,
                                 context_lines=context_lines)
    if not Path(path).exists():
        raise InvalidInput(f"no such file or directory: {path}")
    if not opts.transform:
        raise InvalidInput("a codemod needs a transform (module:Class)")
    ref = resolve_transform(opts.transform)
    files = sorted({os.path.abspath(f) for f in gather_files([path])})  # as libcst.tool does
    result = CodemodResult(files=files)
    if not files:
        return result
    items = _items(files)
    with client_scope(client, scheduler) as client:
        _run_batches(client, items, ref, opts, result, progress)
    if opts.apply:
        for filename in result.changed:
            Path(filename).write_bytes(result.new_code[filename])
            result.written.append(filename)
    return result


def _items(files: list[str]) -> list[CodemodItem]:
    """Each file's bytes with libcst's module and package names (relative to the current folder)."""
    from libcst.helpers import calculate_module_and_package

    repo_root = os.path.abspath(".")
    items: list[CodemodItem] = []
    for filename in files:
        try:
            names = calculate_module_and_package(repo_root, filename)
            module, package = names.name, names.package
        except ValueError:
            module = package = None
        items.append((filename, Path(filename).read_bytes(), module, package))
    return items


def _run_batches(client: Any, items: list[CodemodItem], ref: TransformRef, opts: CodemodOptions,
                 result: CodemodResult, progress: ProgressCallback | None) -> None:
    """Batch the files onto the cluster and fold each batch's outcomes into ``result``."""
    from distributed import as_completed

    run = uuid.uuid4().hex[:12]
    n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
    batches = batch_by_size(items, [len(i[1]) for i in items], target_bytes=int(opts.batch_bytes),
                            min_batches=8 * n_workers)
    if progress:
        progress(status(JOB, f"{len(items)} files in {len(batches)} batches on {n_workers} workers", run_id=run))
    with keys.kind("analysis"):
        futures = [client.submit(codemod_batch, b, ref, int(opts.context_lines), pure=False,
                                 key=keys.task_key("codemod_batch", run, i)) for i, b in enumerate(batches)]
    done = 0
    for future in as_completed(futures):
        for filename, outcome, new, text in future.result():
            result.add(filename, outcome, new, text)
            done += 1
        if progress:
            progress(ProgressEvent(job=JOB, done=done, total=len(items), failed=len(result.failed), run_id=run))

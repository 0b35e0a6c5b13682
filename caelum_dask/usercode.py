"""Loading a user's Python file (workflow, BI report, analyzer plugin, codemod) — one way, one error format.

User code is not installed on the workers: caelum-dask is, the user's ``workflows/x.py`` or
``bi/r.py`` is not. Dask's one way to ship local code is cloudpickle "by value": functions and
classes travel with the task instead of being imported by name. This module gives every kind
of user file the same treatment so they all ship the same way:

* the file runs as a module under a unique, stable name (``caelum_<kind>_<stem>_<hash of the
  path>``); loading the same unchanged file again gives the same module object, a changed file
  is run again (a long-lived MCP server sees the user's edits);
* the module and the helper modules it imports from its own folder are registered with
  :func:`cloudpickle.register_pickle_by_value`;
* after running, the module is taken out of :data:`sys.modules` (we keep it in our own table).
  Why: distributed first tries plain :mod:`pickle`, which happily pickles a user function *by
  reference* whenever its module is importable on the client — and the workers then fail to
  import it (dask/distributed#2268). A module that is not in ``sys.modules`` cannot be pickled
  by reference, so distributed falls back to cloudpickle, which pickles it by value.

Every problem with a file is one :class:`~caelum_dask.errors.InvalidInput` line:
``FILE[:LINE]: PROBLEM — WHAT TO DO`` (e.g. ``workflows/x.py:12: SyntaxError: invalid syntax —
fix the file and run again``); :func:`bad_file` builds it for the loaders' own checks too.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from caelum_dask.errors import InvalidInput

FIX = "fix the file and run again"


@dataclass(frozen=True)
class Kind:
    """A kind of user file: how its modules are named and what the user calls it."""

    key: str  # part of the module name
    noun: str  # "workflow file", shown in messages about the path itself


WORKFLOW = Kind("workflow", "workflow file")
REPORT = Kind("report", "report definition")
ANALYZER = Kind("plugin", "analyzer plugin")
TRANSFORM = Kind("transform", "transform file")

_LOCK = threading.RLock()  # loading edits sys.path and sys.modules, which are process-wide
_MODULES: dict[str, tuple[str, types.ModuleType]] = {}  # module name -> (source digest, module)


def bad_file(where: str | os.PathLike[str], problem: str, advice: str = FIX, line: int | None = None) -> InvalidInput:
    """The one error for a user file: ``FILE[:LINE]: PROBLEM — WHAT TO DO``.

    Loaders use it for their own checks (``defines no workflow`` …) so every message about a
    user's file reads the same, whatever the kind.
    """
    place = f"{where}:{line}" if line else str(where)
    return InvalidInput(f"{place}: {problem} — {advice}")


def module_name(filename: str | os.PathLike[str], kind: Kind) -> str:
    """The unique, stable module name of a file: same path, same name, in every process."""
    resolved = str(Path(filename).expanduser().resolve())
    stem = re.sub(r"\W", "_", Path(resolved).stem) or "module"
    return f"caelum_{kind.key}_{stem}_{hashlib.sha1(resolved.encode()).hexdigest()[:10]}"


def read_source(path: str | os.PathLike[str], kind: Kind) -> str:
    """The text of a user's ``.py`` file; the one error format when it cannot be used."""
    file = Path(path).expanduser()
    if not file.exists():
        raise bad_file(path, "does not exist", f"give the path of the {kind.noun} (a .py file)")
    if file.is_dir():
        raise bad_file(path, "is a folder, not a file", f"give the path of the {kind.noun} (a .py file)")
    if file.suffix != ".py":
        raise bad_file(path, "is not a .py file", f"give the path of the {kind.noun} (a .py file)")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise bad_file(path, "is not UTF-8 Python source", "save it as UTF-8 text and run again") from None
    except OSError as exc:
        raise bad_file(path, f"cannot be read ({exc.strerror or exc})", "check its permissions and run again") from None


def load(path: str | os.PathLike[str], kind: Kind) -> types.ModuleType:
    """Run the user's Python file at ``path`` as a module that ships to workers by value."""
    return load_source(path, read_source(path, kind), kind)


def load_source(filename: str | os.PathLike[str], source: str, kind: Kind) -> types.ModuleType:
    """Run ``source`` (the text of ``filename``) as that file's module; same text, same module.

    ``filename`` names the module and appears in messages and tracebacks; when it is a real
    file, helper modules next to it can be imported by it (and ship by value too).
    """
    name = module_name(filename, kind)
    digest = hashlib.sha256(source.encode()).hexdigest()
    with _LOCK:
        known = _MODULES.get(name)
        if known is not None and known[0] == digest:
            return known[1]
        module = _run(filename, source, name)
        _MODULES[name] = (digest, module)
        return module


def load_folder(path: str | os.PathLike[str], kind: Kind,
                keep: Callable[[types.ModuleType], bool] | None = None) -> list[tuple[Path, types.ModuleType]]:
    """Every ``*.py`` file of a folder not starting with ``_`` (those are helpers), sorted by name.

    ``keep`` drops modules that are not of this kind (a folder may hold other files); each
    file is loaded with :func:`load`, so a broken file is reported as such.
    """
    found = []
    for file in files_in(path, kind):
        module = load(file, kind)
        if keep is None or keep(module):
            found.append((file, module))
    return found


def files_in(path: str | os.PathLike[str], kind: Kind) -> list[Path]:
    """The user files of a folder: ``*.py`` not starting with ``_`` (those are helpers), by name."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise bad_file(path, "is not a folder", f"give a folder of {kind.noun}s")
    return sorted(f for f in folder.glob("*.py") if not f.name.startswith("_"))


def _run(filename: str | os.PathLike[str], source: str, name: str) -> types.ModuleType:
    """Compile and execute ``source`` as module ``name``; register it (and its helpers) by value."""
    display = str(filename)
    file = Path(filename).expanduser()
    code_name = str(file.resolve()) if file.is_file() else display
    try:
        code = compile(source, code_name, "exec", dont_inherit=True)
    except SyntaxError as exc:  # also IndentationError, TabError
        raise bad_file(display, f"{type(exc).__name__}: {exc.msg}", line=exc.lineno) from None
    except ValueError as exc:  # e.g. source with NUL bytes
        raise bad_file(display, f"cannot be compiled: {exc}") from None
    module = types.ModuleType(name)
    module.__file__ = code_name
    folder = str(file.resolve().parent) if file.is_file() else None
    import cloudpickle  # here, not at the top: reading a file (an unchanged analysis) ships nothing

    before = set(sys.modules)
    sys.modules[name] = module  # while it runs: dataclasses, pydantic … look their module up by name
    try:
        with _helpers_importable(folder):
            exec(code, module.__dict__)  # noqa: S102 - running the user's own file is the point
        cloudpickle.register_pickle_by_value(module)
        _register_helpers(set(sys.modules) - before, folder)
    except Exception as exc:  # noqa: BLE001 - the user's module failed while running
        raise bad_file(display, f"{type(exc).__name__}: {exc}", _advice(exc), _line_in(exc, code_name)) from None
    finally:
        sys.modules.pop(name, None)  # by value only: see the module docstring
    return module


@contextmanager
def _helpers_importable(folder: str | None) -> Iterator[None]:
    """Let the file import modules that sit next to it, only while it runs."""
    if folder is None:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _register_helpers(new_modules: set[str], folder: str | None) -> None:
    """Helpers imported from the file's own folder travel by value like the file itself."""
    if folder is None:
        return
    import cloudpickle

    inside = os.path.join(folder, "")
    for helper_name in new_modules:
        helper = sys.modules.get(helper_name)
        helper_file = getattr(helper, "__file__", None) or ""
        if helper is not None and "." not in helper_name and helper_file.startswith(inside):
            cloudpickle.register_pickle_by_value(helper)


def _line_in(exc: BaseException, code_name: str) -> int | None:
    """The last line of the user's file in the traceback (where it failed), if any."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == code_name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _advice(exc: BaseException) -> str:
    """What to do about an error raised while the file ran."""
    if isinstance(exc, ImportError):
        return "install the missing module where caelum runs, or fix the import, and run again"
    return FIX

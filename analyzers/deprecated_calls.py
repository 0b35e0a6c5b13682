"""Calls to deprecated APIs, found by qualified name through libcst's QualifiedNameProvider.

``from datetime import datetime; datetime.utcnow()`` and ``import datetime as dt;
dt.datetime.utcnow()`` both resolve to ``datetime.datetime.utcnow``. Configure the list with
the ``apis`` option (qualified name, or ``package.*``, mapped to advice), e.g. in Dask config::

    caelum:
      analysis:
        plugin-options:
          deprecated-calls:
            apis: {"mylib.old_function": "use mylib.new_function"}
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import PositionProvider, QualifiedNameProvider

from caelum_dask.analysis.plugin import CSTAnalyzer

DEFAULT_APIS = {
    "datetime.datetime.utcnow": "use datetime.datetime.now(datetime.timezone.utc)",
    "datetime.datetime.utcfromtimestamp": "use datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)",
    "asyncio.get_event_loop": "use asyncio.get_running_loop() or asyncio.run()",
    "os.popen": "use subprocess.run",
    "locale.getdefaultlocale": "use locale.getlocale()",
    "imp.*": "use importlib",
    "distutils.*": "distutils is removed in Python 3.12",
    "pkg_resources.*": "use importlib.metadata / importlib.resources",
}


class DeprecatedCalls(CSTAnalyzer):
    """A finding for each call whose qualified name is in the configured deprecated list."""

    name = "deprecated-calls"
    version = "1"
    tables = ("findings",)
    METADATA_DEPENDENCIES = (PositionProvider, QualifiedNameProvider)
    default_options = {"apis": DEFAULT_APIS}

    def __init__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        apis = self.options["apis"]
        self.exact = {k: v for k, v in apis.items() if not k.endswith(".*")}
        self.prefixes = {k[:-1]: v for k, v in apis.items() if k.endswith(".*")}

    def visit_Call(self, node: cst.Call) -> None:
        for qualified in self.get_metadata(QualifiedNameProvider, node.func, set()):
            advice = self.exact.get(qualified.name)
            if advice is None:
                advice = next((v for p, v in self.prefixes.items() if qualified.name.startswith(p)), None)
            if advice is not None:
                self.finding(node, "DEPRECATED", f"{qualified.name}() is deprecated: {advice}")
                return

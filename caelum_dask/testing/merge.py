"""One JUnit XML for the whole run, from the shards' pytest-written files.

pytest's own ``<testcase>`` elements are kept as written (system-out, properties and all),
found by the ``caelum_nodeid`` property the shard plugin adds. A test without one — it ran in
an interpreter that later crashed before writing its file, or it is the test that crashed or
hung — gets a testcase built from the plugin's report, in the same shape pytest uses. A flaky
test is a passing testcase carrying its earlier failures as ``<flakyFailure>`` elements (the
Maven Surefire convention CI servers understand).
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from caelum_dask.events import now_iso

NODEID_PROPERTY = "caelum_nodeid"


def testcases_by_nodeid(documents: Iterable[str]) -> dict[str, ET.Element]:
    """Every testcase of the given JUnit documents that carries its node id (latest wins)."""
    found: dict[str, ET.Element] = {}
    for text in documents:
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            continue
        for case in root.iter("testcase"):
            for prop in case.iter("property"):
                if prop.get("name") == NODEID_PROPERTY:
                    found[prop.get("value", "")] = case
    return found


def _names(nodeid: str) -> tuple[str, str]:
    """pytest's junit classname/name for a node id (``a/b.py::C::t[x]`` -> ``a.b.C``, ``t[x]``)."""
    base = re.sub(r"\[.*\]$", "", nodeid, flags=re.S)
    params = nodeid[len(base):]
    parts = base.split("::")
    module = re.sub(r"\.py$", "", parts[0]).replace("/", ".")
    return ".".join([module, *parts[1:-1]]), parts[-1] + params


_CHILD = {"failed": "failure", "error": "error", "skipped": "skipped", "xfailed": "skipped"}


def synthesize(result: Mapping[str, Any]) -> ET.Element:
    """A pytest-shaped testcase for a result no JUnit file holds."""
    classname, name = _names(result["nodeid"])
    case = ET.Element("testcase", classname=classname, name=name, time=f"{result.get('duration', 0.0):.3f}")
    props = ET.SubElement(case, "properties")
    ET.SubElement(props, "property", name=NODEID_PROPERTY, value=result["nodeid"])
    tag = _CHILD.get(result["outcome"])
    if tag:
        child = ET.SubElement(case, tag, message=str(result.get("message", ""))[:1000])
        if result["outcome"] == "xfailed":
            child.set("type", "pytest.xfail")
        child.text = str(result.get("longrepr", ""))
    return case


def _matches(case: ET.Element, outcome: str) -> bool:
    tags = {child.tag for child in case}
    if outcome in ("passed", "flaky", "xpassed"):
        return not tags & {"failure", "error", "skipped"}
    return _CHILD.get(outcome, "") in tags


def testsuite(name: str, results: Sequence[Mapping[str, Any]], documents: Iterable[str],
              duration: float, run_id: str) -> ET.Element:
    """One ``<testsuite>`` holding every result (collection order), counts recomputed."""
    cases = testcases_by_nodeid(documents)
    suite = ET.Element("testsuite", name=name)
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="caelum_run_id", value=run_id)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in results:
        outcome = result["outcome"]
        if outcome == "notrun":
            continue
        case = cases.get(result["nodeid"])
        if case is None or not _matches(case, outcome):
            case = synthesize({**result, "outcome": "passed" if outcome == "flaky" else outcome})
        props = case.find("properties")
        if props is None:
            props = ET.SubElement(case, "properties")
        if result.get("machine"):
            ET.SubElement(props, "property", name="caelum_machine", value=str(result["machine"]))
        for failure in result.get("flaky_failures", ()):
            flaky = ET.SubElement(case, "flakyFailure", message=str(failure.get("message", ""))[:1000])
            flaky.text = str(failure.get("longrepr", ""))
        suite.append(case)
        counts["tests"] += 1
        tag = _CHILD.get(outcome)
        if tag:
            counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[tag]] += 1
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("time", f"{duration:.3f}")
    suite.set("timestamp", now_iso())
    suite.set("hostname", socket.gethostname())
    return suite


def junit_document(suites: Sequence[ET.Element]) -> str:
    """The merged ``<testsuites>`` document as text."""
    root = ET.Element("testsuites", name="caelum test")
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in suites)))
    root.set("time", f"{max((float(s.get('time', '0')) for s in suites), default=0.0):.3f}")
    root.extend(suites)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

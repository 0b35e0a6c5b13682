"""The caelum pages in a real headless browser (Debian's chromium + chromedriver via selenium).

A real scheduler with the caelum preload and two real workers: one started with
``--resources GPU=1`` (a GPU Dask knows of but NVML does not describe) and one whose machine
description carries an NVML GPU (``tests/dashboard_fake_gpu.py``, because this box has no GPU).
Bokeh renders into shadow DOM after its websocket connects, so the checks poll the rendered
text (shadow roots included) instead of sleeping. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import operator
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caelum_dask import events
from harness import REPO

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")

# Text of the rendered document, shadow roots included (Bokeh 3 renders into shadow DOM).
DEEP_TEXT = """
function collect(node) {
  let text = "";
  if (node.shadowRoot) text += collect(node.shadowRoot);
  for (const child of node.childNodes) {
    if (child.nodeType === Node.TEXT_NODE) text += child.textContent + " ";
    else if (child.nodeType === Node.ELEMENT_NODE && !["STYLE", "SCRIPT"].includes(child.tagName))
      text += collect(child);
  }
  return text;
}
return collect(document.body);
"""


# What a tap on a DAG node does in BokehJS: select it (the server hears the selection).
TAP_NODE = """
for (const doc of Bokeh.documents) {
  const nodes = doc.get_model_by_name("caelum-dag-nodes");
  if (!nodes) continue;
  const index = Array.from(nodes.data_source.data.name).indexOf(arguments[0]);
  if (index >= 0) nodes.data_source.selected.indices = [index];
  return index;
}
return -1;
"""


class Page:
    """A selenium driver with the waits a Bokeh page needs."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def open(self, url: str, *expected: str, timeout: float = 60) -> str:
        self.driver.get(url)
        return self.wait_for(*expected, timeout=timeout)

    def text(self) -> str:
        return " ".join(self.driver.execute_script(DEEP_TEXT).split())

    def idle(self) -> bool:
        """BokehJS has rendered every document of the page and has no pending work."""
        return bool(self.driver.execute_script(
            "return typeof Bokeh !== 'undefined' && Bokeh.documents.length > 0"
            " && Bokeh.documents.every((doc) => doc.is_idle)"
        ))

    def wait_for(self, *expected: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(e in text for e in expected) and self.idle():
                return text
            if time.monotonic() > deadline:
                missing = [e for e in expected if e not in text]
                raise AssertionError(f"page never showed {missing}; it shows: {text[:2000]}")
            time.sleep(0.2)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
        return path

    def js_errors(self) -> list[dict[str, Any]]:
        return [entry for entry in self.driver.get_log("browser") if entry["level"] == "SEVERE"]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip(f"needs chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}); "
                    "install them with `apt-get install chromium chromium-driver` (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Page(driver, shots)
    finally:
        driver.quit()


def test_every_page_in_a_browser(process_cluster: Any, page: Page) -> None:
    process_cluster.start_scheduler()
    process_cluster.start_worker("gpu-res", "--resources", "GPU=1")
    process_cluster.start_worker(
        "nvml", "--preload", "caelum_dask.worker", "--preload", str(REPO / "tests" / "dashboard_fake_gpu.py"),
        preload=False,
    )
    client = process_cluster.wait_for_workers(2)
    try:
        base = client.dashboard_link.rsplit("/status", 1)[0]
        nodes = ["fetch", "parse-0", "parse-1", "report"]
        edges = [["fetch", "parse-0"], ["fetch", "parse-1"], ["parse-0", "report"], ["parse-1", "report"]]
        events.emit(events.WORKFLOWS, "run-started", sink=client, run_id="run-42", workflow="browser-wf",
                    nodes=nodes, edges=edges)
        events.emit(events.WORKFLOWS, "task-state", sink=client, run_id="run-42", task="fetch",
                    state="completed", worker="w", machine="gpu-box")
        events.emit(events.WORKFLOWS, "task-state", sink=client, run_id="run-42", task="parse-0",
                    state="running", worker="w", machine="gpu-box")

        # tasks of three kinds, counted per machine
        futures = [client.submit(operator.add, i, 1, key=f"caelum-{kind}-browser-{i}")
                   for i, kind in enumerate(["test", "analyze", "wf", "test"])]
        assert client.gather(futures) == [1, 2, 3, 4]

        # the Dask navbar links to the index; the index links every page
        page.open(client.dashboard_link, "Status")
        page.driver.find_element("link text", "Caelum").click()
        page.wait_for("Machines —", "Workflows —", "2 machines")
        page.screenshot("index")

        # machines: the worker's hostname, the NVML GPU and the GPU resource without NVML
        hostname = socket.gethostname()
        page.open(f"{base}/caelum/machines", hostname, "gpu-box", "NVIDIA FakeGPU 24GB (test)",
                  "GPU=1 (Dask resource, no NVML description)", "42")
        page.screenshot("machines")

        # workflows: the run's node states, updated live without a reload
        page.open(f"{base}/caelum/workflows", "browser-wf", "run-42", "fetch completed", "parse-0 running",
                  "report pending")
        events.emit(events.WORKFLOWS, "task-state", sink=client, run_id="run-42", task="parse-0",
                    state="failed", worker="w", machine="gpu-box")
        page.wait_for("parse-0 failed")
        page.screenshot("workflows")

        # a map fan-out is one node with a count; clicking it (a tap selects it) draws its tasks
        fan = ["list_repositories", *(f"analyse[{i}]" for i in range(30)), "report"]
        events.emit(events.WORKFLOWS, "run-started", sink=client, run_id="run-fan", workflow="fan-wf", nodes=fan,
                    edges=[["list_repositories", f"analyse[{i}]"] for i in range(30)]
                    + [[f"analyse[{i}]", "report"] for i in range(30)])
        folded = page.open(f"{base}/caelum/workflows?run=run-fan", "fan-wf", "analyse[…] pending 30")
        assert "analyse[1] " not in folded
        page.screenshot("workflows-fanout-folded")
        assert page.driver.execute_script(TAP_NODE, "analyse[…]") >= 0
        page.wait_for("analyse[1] pending")
        page.screenshot("workflows-fanout-expanded")

        # a run above the aggregation threshold is drawn as task groups, selected by URL
        big = [f"shard-{i}" for i in range(1000)] + [f"merge-{i}" for i in range(100)]
        events.emit(events.WORKFLOWS, "run-started", sink=client, run_id="run-big", workflow="big-wf",
                    nodes=big, edges=[[f"shard-{i}", f"merge-{i // 10}"] for i in range(1000)])
        events.emit(events.WORKFLOWS, "task-state", sink=client, run_id="run-big", task="shard-3",
                    state="running", worker="w", machine="gpu-box")
        page.open(f"{base}/caelum/workflows?run=run-big", "drawn as 2 task groups",
                  "shard running 1000 999 pending, 1 running", "merge pending 100 100 pending")
        page.screenshot("workflows-aggregated")

        for path, expected in [("utilisation", "machines, one sample per"), ("tasks", "4 completed"),
                               ("tests", "no test runs yet"), ("llm", "no LLM pool activity yet")]:
            page.open(f"{base}/caelum/{path}", expected)
            page.screenshot(path)
        assert page.js_errors() == []

        # a machine leaves: the page keeps updating and shows it offline
        page.open(f"{base}/caelum/machines", "gpu-box")
        process_cluster.kill_worker("nvml")
        page.wait_for("1 offline")
        page.screenshot("machines-after-leave")
        assert page.js_errors() == []
    finally:
        client.close()

"""Layouts of the caelum pages: Bokeh models fed by the data sources, refreshed by callbacks.

Each page is a small component class with a ``root`` (the Bokeh layout) and an ``update()``
that reads the scheduler-side models (:mod:`caelum_dask.dashboard.collector`) and the machine
registry and pushes only what changed. Pages are attached to their document with Dask's own
``add_periodic_callback`` (weak references, as Dask's pages do), so they update without a
reload and simply show fewer rows when a machine leaves.
"""

from __future__ import annotations

import html
import time
from typing import Any

import numpy as np
from bokeh.layouts import column
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DataRange1d,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    NumberFormatter,
    Range1d,
    Select,
    StringFormatter,
    TableColumn,
    TapTool,
)
from bokeh.plotting import figure

from caelum_dask import config
from caelum_dask.dashboard.collector import DashboardState, get_state
from caelum_dask.dashboard.data import llm as llm_data
from caelum_dask.dashboard.data import machines as machine_data
from caelum_dask.dashboard.data import tasks as task_data
from caelum_dask.dashboard.data import tests as test_data
from caelum_dask.dashboard.data import workflows as wf_data
from caelum_dask.dashboard.data.utilisation import METRIC_LABELS, METRICS
from caelum_dask.events import SCALING

# (url path below /caelum/, navbar label, one-line description)
PAGES: tuple[tuple[str, str, str], ...] = (
    ("machines", "Machines", "every machine: resources, GPUs, services, status, heartbeat"),
    ("utilisation", "Utilisation", "CPU, memory, GPU use per machine over time"),
    ("tasks", "Tasks", "tasks per machine over time by kind"),
    ("workflows", "Workflows", "recent workflow runs and a run's DAG, live"),
    ("tests", "Tests", "sharded test runs: shards per machine, pass/fail, durations"),
    ("llm", "LLM", "the Ollama pool: backends, models, requests in flight, latency"),
)


def update_interval_ms() -> int:
    """How often an open page refreshes (``caelum.dashboard.update-interval-ms``)."""
    return int(config.get("dashboard.update-interval-ms"))


def _table(source: ColumnDataSource, columns: list[tuple[Any, ...] | TableColumn], **kwargs: Any) -> DataTable:
    """A table; a column is a TableColumn or ``(field, title[, relative width])``."""
    cols = [
        c if isinstance(c, TableColumn) else TableColumn(field=c[0], title=c[1], width=c[2] if len(c) > 2 else 110)
        for c in columns
    ]
    kwargs.setdefault("sizing_mode", "stretch_width")
    kwargs.setdefault("index_position", None)
    kwargs.setdefault("reorderable", False)  # needs jquery-ui, which the page does not load
    table = DataTable(source=source, columns=cols, **kwargs)
    # BokehJS redraws a table when its CDSView changes, and the view only changes when the
    # number of rows does: new values in the same rows would stay invisible. Re-emit it.
    source.js_on_change("data", CustomJS(args={"table": table}, code="table.view.change.emit()"))
    return table


def _coloured(field: str, title: str, colour_field: str, width: int = 80) -> TableColumn:
    """A table column whose text takes its colour from another column (status colours)."""
    fmt = StringFormatter(text_color=colour_field, font_style="bold")
    return TableColumn(field=field, title=title, formatter=fmt, width=width)


def _number(field: str, title: str, fmt: str = "0.[00]", width: int = 80) -> TableColumn:
    return TableColumn(field=field, title=title, formatter=NumberFormatter(format=fmt), width=width)


def _fit(table: DataTable, rows: int, most: int = 600) -> None:
    """Size a table to its rows (up to ``most`` pixels, then it scrolls)."""
    height = min(most, 50 + 26 * max(rows, 1))  # header, rows and a horizontal scrollbar
    if table.height != height:
        table.height = height


def _set(source: ColumnDataSource, data: dict[str, list[Any]]) -> None:
    """Replace a source's data only when it differs (no websocket traffic otherwise)."""
    if dict(source.data) != data:
        source.data = data


def _arrays(data: dict[str, list[Any]]) -> dict[str, Any]:
    """Numeric columns as numpy arrays: Bokeh validates and sends them in bulk (binary)."""
    return {k: np.asarray(v, dtype=float) if k == "time" or k in METRICS else v for k, v in data.items()}


def _message(text: str) -> str:
    return f'<p class="caelum-message">{html.escape(text)}</p>'


class Index:
    """The /caelum/ landing page: one line per page with what it currently has."""

    def __init__(self, scheduler: Any, prefix: str) -> None:
        self.scheduler = scheduler
        self.prefix = prefix
        self.div = Div(text="", sizing_mode="stretch_width")
        self.root = column(self.div, sizing_mode="stretch_width")
        self.update()

    def update(self) -> None:
        state = get_state(self.scheduler)
        lines = summaries(state) if state is not None else {}
        items = []
        for path, label, description in PAGES:
            status = lines.get(path, "")
            items.append(
                f'<li><a href="{self.prefix}caelum/{path}">{label}</a> — {html.escape(description)}'
                f'<br><span class="caelum-summary" id="summary-{path}">{html.escape(status)}</span></li>'
            )
        text = '<h2>caelum</h2><ul class="caelum-index">' + "".join(items) + "</ul>"
        if self.div.text != text:
            self.div.text = text


def summaries(state: DashboardState) -> dict[str, str]:
    """One line per page for the index (also what each page says when it has nothing yet)."""
    nodes = state.nodes()
    runs = state.workflows.runs
    tests = state.tests.runs
    return {
        "machines": machine_data.summary_text(nodes),
        "utilisation": f"{len(state.utilisation.machines)} machines sampled, {len(state.utilisation.rows)} samples"
        if state.utilisation.machines else "no samples yet",
        "tasks": task_data.totals_text(state.tasks),
        "workflows": f"{len(runs)} recent runs; latest: {wf_data.run_title(state.workflows.latest())}"
        if runs else NO_WORKFLOWS,
        "tests": f"{len(tests)} recent test runs" if tests else NO_TESTS,
        "llm": llm_data.summary_text(state.llm),
    }


NO_WORKFLOWS = "no workflow runs yet — run `caelum run workflows/…` (runs appear here live)"
NO_TESTS = "no test runs yet — run `caelum test PATH` (shards appear here as they finish)"


class Machines:
    """Every MachineNode, status coloured, heartbeat age, and one row per GPU."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.summary = Div(text="", sizing_mode="stretch_width")
        self.source = ColumnDataSource(machine_data.machines_source([]))
        self.gpu_source = ColumnDataSource(machine_data.gpus_source([]))
        self.table = _table(self.source, [
            ("hostname", "Hostname", 110), ("ip_address", "IP", 90),
            _coloured("status", "Status", "status_colour", 60),
            ("heartbeat", "Heartbeat", 80), _number("cpu_cores", "Cores", "0", 45),
            _number("memory_gb", "Memory GiB", width=75), _number("disk_space_gb", "Disk free GiB", width=80),
            ("gpus", "GPUs", 300), ("resources", "Dask resources", 260), ("services", "Services", 260),
            ("workers", "Workers", 100), ("platform", "Platform", 60), ("os", "OS", 200),
            ("python", "Python", 55), ("caelum_version", "caelum", 50), ("first_seen", "First seen", 130),
            ("id", "Id", 150),
        ], height=360, name="caelum-machines-table", autosize_mode="none")
        self.gpu_table = _table(self.gpu_source, [
            ("hostname", "Machine"), _coloured("status", "Status", "status_colour", 60),
            _number("index", "GPU", "0", 40), ("name", "Name", 260), _number("memory_gb", "Memory GiB"),
            _number("memory_used_gb", "Used GiB"), _number("utilization", "Utilisation %", "0"),
            ("uuid", "UUID"),
        ], height=200, name="caelum-gpus-table")
        # adaptive host groups: the controller's recent decisions (caelum.scaling events)
        self.scaling_source = ColumnDataSource(machine_data.scaling_source([]))
        self.scaling_table = _table(self.scaling_source, [
            ("time", "Time (UTC)", 90), ("event", "Event", 110), ("workers", "Workers", 200),
            ("hosts", "Hosts", 150), ("detail", "Detail", 500)], height=160, name="caelum-scaling-table")
        self.root = column(
            self.summary, self.table, Div(text="<h3>GPUs</h3>"), self.gpu_table,
            Div(text="<h3>Scaling</h3>"), self.scaling_table, sizing_mode="stretch_width",
        )
        self.update()

    def update(self) -> None:
        state = get_state(self.scheduler)
        nodes = state.nodes() if state is not None else []
        text = _message(machine_data.summary_text(nodes))
        if self.summary.text != text:
            self.summary.text = text
        _set(self.source, machine_data.machines_source(nodes, time.time()))
        _set(self.gpu_source, machine_data.gpus_source(nodes))
        _fit(self.table, len(self.source.data["id"]))
        _fit(self.gpu_table, len(self.gpu_source.data["machine"]), 300)
        scaling = [message for _, message in self.scheduler.get_events(SCALING)]
        _set(self.scaling_source, machine_data.scaling_source(scaling))
        _fit(self.scaling_table, len(self.scaling_source.data["event"]), 300)


class Utilisation:
    """CPU, memory, GPU utilisation and GPU memory per machine over time.

    One long-form source (a row per sample and machine) drawn with one glyph per metric,
    coloured by machine, and streamed: the cost per tick is the new rows, whatever the size
    of the cluster.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.state = get_state(scheduler)
        self.summary = Div(text="", sizing_mode="stretch_width")
        self.latest = ColumnDataSource({"machine": [], "hostname": [], **{m: [] for m in METRICS}})
        self.latest_table = _table(self.latest, [
            ("hostname", "Machine"), _number("cpu", "CPU %", "0.0"), _number("memory", "Memory GiB", "0.00"),
            _number("gpu_util", "GPU %", "0"), _number("gpu_memory", "GPU memory GiB", "0.00"),
        ], height=200)
        history = self.state.utilisation if self.state is not None else None
        self.source = ColumnDataSource(_arrays(history.long_source()) if history else
                                       {"time": [], "machine": [], "hostname": [], "colour": [],
                                        **{m: [] for m in METRICS}})
        self.seq = history.seq if history else 0
        plots = []
        x_range = None
        for metric in METRICS:
            fig = figure(title=METRIC_LABELS[metric], x_axis_type="datetime", height=170,
                         sizing_mode="stretch_width", tools="pan,wheel_zoom,reset",
                         **({"x_range": x_range} if x_range is not None else {}))
            x_range = fig.x_range
            glyph = fig.scatter(x="time", y=metric, color="colour", size=4, source=self.source)
            fig.add_tools(HoverTool(renderers=[glyph], tooltips=[("machine", "@hostname"), ("value", f"@{metric}{{0.00}}")]))
            plots.append(fig)
        self.root = column(self.summary, *plots, self.latest_table, sizing_mode="stretch_width")
        self.update()

    def update(self) -> None:
        if self.state is None:
            return
        history = self.state.utilisation
        text = _message(
            f"{len(history.machines)} machines, one sample per "
            f"{config.get('dashboard.sample-interval', '1s')}, one colour per machine (hover a point for its machine)"
            if history.machines else "no samples yet: utilisation appears once a worker has joined"
        )
        if self.summary.text != text:
            self.summary.text = text
        if history.seq != self.seq:
            rows = history.long_rows_since(self.seq)
            if rows and rows["time"]:
                self.source.stream(_arrays(rows), rollover=history.maxlen * max(1, len(history.machines)))
            self.seq = history.seq
        _set(self.latest, history.latest_source())
        _fit(self.latest_table, len(history.machines), 400)


class Tasks:
    """Tasks running over time by kind (all machines or one), and completed per machine."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.state = get_state(scheduler)
        kinds = list(task_data.KINDS)
        colours = [task_data.KIND_COLOURS[k] for k in kinds]
        self.summary = Div(text="", sizing_mode="stretch_width")
        self.select = Select(title="Machine", value=task_data.ALL_MACHINES, options=[task_data.ALL_MACHINES])
        self.running = ColumnDataSource({"time": [], **{k: [] for k in kinds}})
        self.running_fig = figure(title="Tasks running, by kind", x_axis_type="datetime", height=260,
                                  sizing_mode="stretch_width", tools="pan,wheel_zoom,reset")
        self.running_fig.varea_stack(kinds, x="time", color=colours, legend_label=kinds, source=self.running)
        self.running_fig.legend.location = "top_left"
        self.running_fig.legend.orientation = "horizontal"
        self.completed = ColumnDataSource(task_data.per_machine_source(task_data.TaskCounter()))
        self.completed_fig = figure(title="Tasks completed per machine, by kind", height=260,
                                    y_range=FactorRange(), x_range=DataRange1d(start=0),
                                    sizing_mode="stretch_width",
                                    tools="hover", tooltips="$name @hostname: @$name")
        self.completed_fig.hbar_stack(kinds, y="machine", height=0.8, color=colours, source=self.completed,
                                      legend_label=kinds)
        self.completed_fig.add_layout(self.completed_fig.legend[0], "right")
        self.root = column(self.summary, self.select, self.running_fig, self.completed_fig,
                           sizing_mode="stretch_width")
        self.update()

    def update(self) -> None:
        if self.state is None:
            return
        counter = self.state.tasks
        text = _message(task_data.totals_text(counter))
        if self.summary.text != text:
            self.summary.text = text
        machines = counter.machine_names()
        options = [task_data.ALL_MACHINES, *machines]
        if list(self.select.options) != options:
            self.select.options = options
        machine = self.select.value if self.select.value in options else task_data.ALL_MACHINES
        _set(self.running, task_data.running_timeseries(counter, machine))
        data = task_data.per_machine_source(counter, "completed")
        if list(self.completed_fig.y_range.factors) != data["machine"]:
            self.completed_fig.y_range.factors = data["machine"]
            self.completed_fig.height = max(200, 60 + 22 * len(data["machine"]))
        _set(self.completed, data)


class _RunPage:
    """A page with a table of recent runs: clicking a row pins that run (else the latest is shown)."""

    pinned: str | None
    runs: ColumnDataSource

    def update(self) -> None:
        raise NotImplementedError

    def _on_select(self, attr: str, old: Any, new: list[int]) -> None:
        if new:
            self.pinned = self.runs.data["run_id"][new[0]]
            self.update()


class Workflows(_RunPage):
    """Recent runs, and the selected run's DAG with node colours by state, live."""

    def __init__(self, scheduler: Any, run_id: str | None = None) -> None:
        self.scheduler = scheduler
        self.state = get_state(scheduler)
        self.pinned = run_id
        self.aggregate_above = int(config.get("dashboard.aggregate-above"))
        self.fanout_at = int(config.get("dashboard.fanout-group-at"))
        self.expanded: set[str] = set()  # fan-outs the user clicked open
        self.summary = Div(text="", sizing_mode="stretch_width", name="caelum-workflow-summary")
        self.runs = ColumnDataSource(wf_data.runs_source(wf_data.WorkflowRuns()))
        self.runs_table = _table(self.runs, [
            ("run_id", "Run", 120), ("workflow", "Workflow", 140), _coloured("state", "State", "state_colour", 90),
            _number("nodes", "Tasks", "0"), _number("pending", "Pending", "0"),
            _number("running", "Running", "0"), _number("completed", "Completed", "0"),
            _number("cached", "Cached", "0"), _number("failed", "Failed", "0"),
            ("started", "Started", 150), ("finished", "Finished", 150),
        ], height=180, name="caelum-runs-table")
        self.runs.selected.on_change("indices", self._on_select)
        self.title = Div(text="", sizing_mode="stretch_width", name="caelum-run-title")
        self.nodes = ColumnDataSource({k: [] for k in ("x", "y", "name", "label", "label_offset", "state",
                                                       "colour", "size", "count", "detail", "machine",
                                                       "estimate", "actual")})
        self.edges = ColumnDataSource({"xs": [], "ys": []})
        self.dag = figure(height=520, sizing_mode="stretch_width", tools="pan,wheel_zoom,reset,save",
                          x_range=Range1d(-1.1, 1.1), y_range=Range1d(-1.1, 1.1))
        self.dag.axis.visible = False
        self.dag.grid.visible = False
        self.dag.multi_line(xs="xs", ys="ys", source=self.edges, line_color="#999999", line_alpha=0.5)
        glyph = self.dag.scatter(x="x", y="y", size="size", fill_color="colour", line_color="#333333",
                                 source=self.nodes, name="caelum-dag-nodes")
        self.dag.add_tools(TapTool(renderers=[glyph]))  # a click on a fan-out expands or folds it
        self.nodes.selected.on_change("indices", self._on_tap)
        self.labels = self.dag.text(x="x", y="y", text="label", source=self.nodes, text_font_size="11px",
                                    x_offset="label_offset", text_align="left", text_baseline="middle",
                                    text_color="#333333")
        self.dag.add_tools(HoverTool(renderers=[glyph], tooltips=[
            ("task", "@name"), ("state", "@state"), ("tasks", "@count"), ("detail", "@detail"),
            ("machine", "@machine"),
        ]))
        legend = " ".join(
            f'<span style="color:{c}">&#9679;</span> {s}' for s, c in wf_data.STATE_COLOURS.items()
        )
        self.legend = Div(text=legend)
        self.node_table = _table(self.nodes, [
            ("name", "Task (group)", 200), _coloured("state", "State", "colour", 90), _number("count", "Tasks", "0"),
            ("detail", "States", 300), ("machine", "Machine", 150),
            ("estimate", "estimate s", 90), ("actual", "actual s", 90),
        ], height=240, name="caelum-dag-table")
        self.root = column(self.summary, self.runs_table, self.title, self.legend, self.dag, self.node_table,
                           sizing_mode="stretch_width")
        self.runs_version = -1
        self.shown: tuple[str, int] | None = None
        self.structure: tuple[str, int] | None = None
        self.update()

    def update(self) -> None:
        if self.state is None:
            return
        runs = self.state.workflows
        text = _message(f"{len(runs.runs)} recent runs (select one to draw its DAG)" if runs.runs else NO_WORKFLOWS)
        if self.summary.text != text:
            self.summary.text = text
        if runs.version != self.runs_version:
            self.runs_version = runs.version
            _set(self.runs, wf_data.runs_source(runs))
            _fit(self.runs_table, len(runs.runs), 300)
        run = runs.get(self.pinned) if self.pinned else runs.latest()
        if run is None:
            return
        if self.shown == (run.run_id, run.version):
            return
        self.shown = (run.run_id, run.version)
        data = wf_data.dag_source(run, self.aggregate_above, self.expanded, self.fanout_at)
        names = data["nodes"]["name"]
        data["nodes"]["label_offset"] = [size / 2 + 4 for size in data["nodes"]["size"]]  # right of the dot
        _set(self.nodes, data["nodes"])
        _fit(self.node_table, len(names), 400)
        if self.structure != (run.run_id, run.structure_version, len(self.expanded)):
            self.structure = (run.run_id, run.structure_version, len(self.expanded))
            self.edges.data = data["edges"]
        title = html.escape(wf_data.run_title(run))
        if data["aggregated"]:
            title += (f" — drawn as {len(data['nodes']['name'])} task groups "
                      f"(more than {self.aggregate_above} tasks; hover a group for its counts)")
        self.title.text = f"<h3>{title}</h3>"


    def _on_tap(self, attr: str, old: Any, new: list[int]) -> None:
        """A fan-out node (``base[…]``) clicked: draw its tasks; one of its tasks clicked: fold it."""
        if not new:
            return
        name = str(self.nodes.data["name"][new[0]])
        match = wf_data.MAPPED.match(name)
        group = name if name.endswith("[…]") else (f"{match['base']}[…]" if match else None)
        self.nodes.selected.indices = []
        if group is None:
            return
        self.expanded.symmetric_difference_update({group})
        self.shown = None
        self.update()


class Tests(_RunPage):
    """A test run's shards per machine: outcome counts, shard table and durations."""

    def __init__(self, scheduler: Any, run_id: str | None = None) -> None:
        self.scheduler = scheduler
        self.state = get_state(scheduler)
        self.pinned = run_id
        self.summary = Div(text="", sizing_mode="stretch_width")
        self.runs = ColumnDataSource(test_data.runs_source(test_data.TestRuns()))
        self.runs_table = _table(self.runs, [
            ("run_id", "Run", 120), ("state", "State"), ("done", "Done"), ("eta", "ETA"), ("shards", "Shards"),
            _number("tests", "Tests", "0"),
            *(_number(o, o.title(), "0") for o in test_data.OUTCOMES), _number("duration", "Shard time s"),
        ], height=150)
        self.runs.selected.on_change("indices", self._on_select)
        self.per_machine = ColumnDataSource(test_data.machines_source(test_data.TestRun("")))
        outcomes = list(test_data.OUTCOMES)
        self.machine_fig = figure(title="Tests per machine", height=220, y_range=FactorRange(),
                                  x_range=DataRange1d(start=0),
                                  sizing_mode="stretch_width", tools="hover",
                                  tooltips="@machine: @$name $name, @shards shards, @duration{0.0} s")
        self.machine_fig.hbar_stack(outcomes, y="machine", height=0.8, source=self.per_machine,
                                    color=[test_data.OUTCOME_COLOURS[o] for o in outcomes], legend_label=outcomes)
        self.machine_fig.add_layout(self.machine_fig.legend[0], "right")
        self.shards = ColumnDataSource(test_data.shards_source(test_data.TestRun("")))
        self.shards_table = _table(self.shards, [
            ("shard", "Shard"), ("machine", "Machine"), ("worker", "Worker"),
            *(_number(o, o.title(), "0") for o in outcomes), _number("duration", "Duration s", "0.00"),
        ], height=240)
        self.root = column(self.summary, self.runs_table, self.machine_fig, self.shards_table,
                           sizing_mode="stretch_width")
        self.shown: tuple[str, int] | None = None
        self.runs_version = -1
        self.update()

    def update(self) -> None:
        if self.state is None:
            return
        runs = self.state.tests
        if runs.version != self.runs_version:
            self.runs_version = runs.version
            _set(self.runs, test_data.runs_source(runs))
            _fit(self.runs_table, len(runs.runs), 300)
        run = runs.get(self.pinned) if self.pinned else runs.latest()
        text = _message(test_data.progress_text(run) if run else NO_TESTS)
        if self.summary.text != text:
            self.summary.text = text
        if run is None or self.shown == (run.run_id, run.version):
            return
        self.shown = (run.run_id, run.version)
        data = test_data.machines_source(run)
        self.machine_fig.y_range.factors = data["machine"]
        self.machine_fig.height = max(160, 60 + 26 * len(data["machine"]))
        self.per_machine.data = data
        self.shards.data = test_data.shards_source(run)
        _fit(self.shards_table, len(run.shards), 500)


class LLM:
    """The LLM pool: backends with models and requests in flight, latency over time."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.state = get_state(scheduler)
        self.summary = Div(text="", sizing_mode="stretch_width")
        self.backends = ColumnDataSource(llm_data.backends_source(llm_data.LLMState()))
        self.table = _table(self.backends, [
            ("url", "Backend", 170), ("machine", "Machine"), _coloured("up", "Status", "status_colour", 60),
            ("models", "Models", 200), ("loaded", "Loaded", 150), _number("in_flight", "In flight", "0"),
            _number("requests", "Requests", "0"), _number("errors", "Errors", "0"),
            _number("latency_mean", "Mean latency s", "0.000"), _number("latency_p95", "p95 s", "0.000"),
            ("reason", "Last failure"),
        ], height=200)
        self.latency = ColumnDataSource(llm_data.latency_source(llm_data.LLMState()))
        self.fig = figure(title="Request latency (red: failed)", x_axis_type="datetime", height=260,
                          sizing_mode="stretch_width", tools="pan,wheel_zoom,reset,hover",
                          tooltips=[("backend", "@backend"), ("model", "@model"), ("latency", "@latency_s{0.000} s")])
        self.fig.scatter(x="time", y="latency_s", color="colour", size=6, source=self.latency)
        self.fig.yaxis.axis_label = "seconds"
        self.root = column(self.summary, self.table, self.fig, sizing_mode="stretch_width")
        self.version = -1
        self.update()

    def update(self) -> None:
        if self.state is None:
            return
        llm = self.state.llm
        text = _message(llm_data.summary_text(llm))
        if self.summary.text != text:
            self.summary.text = text
        if llm.version == self.version:
            return
        self.version = llm.version
        self.backends.data = llm_data.backends_source(llm)
        _fit(self.table, len(self.backends.data["url"]), 400)
        self.latency.data = llm_data.latency_source(llm)


def build(page: str, scheduler: Any, prefix: str, args: dict[str, str]) -> Any:
    """The component for ``page`` (a path of :data:`PAGES`, or ``""`` for the index)."""
    if page == "":
        return Index(scheduler, prefix)
    if page == "machines":
        return Machines(scheduler)
    if page == "utilisation":
        return Utilisation(scheduler)
    if page == "tasks":
        return Tasks(scheduler)
    if page == "workflows":
        return Workflows(scheduler, args.get("run"))
    if page == "tests":
        return Tests(scheduler, args.get("run"))
    if page == "llm":
        return LLM(scheduler)
    raise KeyError(page)

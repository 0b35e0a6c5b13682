"""caelum pages in the Dask dashboard: machines, utilisation, tasks, workflows, tests, LLM.

``install(scheduler)`` is called by the caelum scheduler preload (``caelum_dask.scheduler``,
embedded cluster included). It adds the :class:`~caelum_dask.dashboard.collector.DashboardState`
plugin, which gathers what the pages show from the scheduler's own hooks, and mounts the
pages under ``/caelum/`` on the scheduler's dashboard server (same port as ``/status``).

Layout: ``data/`` holds the pure data sources (unit-tested without Bokeh), ``pages`` the
Bokeh layouts, ``server`` the mounting.
"""

from __future__ import annotations

from typing import Any

from caelum_dask.dashboard.collector import PLUGIN_NAME, DashboardState

__all__ = ["PLUGIN_NAME", "DashboardState", "install", "pages_url", "pages_mounted"]


def install(scheduler: Any) -> None:
    """Install the dashboard plugin and mount the pages (idempotent)."""
    if PLUGIN_NAME in scheduler.plugins:
        return
    scheduler.add_plugin(DashboardState())
    from caelum_dask.dashboard.server import mount

    app = mount(scheduler)
    if app is not None:
        scheduler.plugins[PLUGIN_NAME].bokeh_app = app


def pages_url(dashboard_link: str | None) -> str | None:
    """The caelum index URL from a Dask dashboard link (``…/status`` → ``…/caelum/``)."""
    if not dashboard_link:
        return None
    base = dashboard_link.rsplit("/status", 1)[0] if dashboard_link.endswith("/status") else dashboard_link.rstrip("/")
    return f"{base}/caelum/"


def pages_mounted(client: Any) -> bool:
    """Whether the client's scheduler serves the caelum pages (it ran the caelum preload)."""

    def check(dask_scheduler: Any) -> bool:
        state = dask_scheduler.plugins.get(PLUGIN_NAME)
        return state is not None and getattr(state, "bokeh_app", None) is not None

    try:
        return bool(client.run_on_scheduler(check))
    except Exception:  # a scheduler that refuses run_on_scheduler: say nothing rather than guess
        return False

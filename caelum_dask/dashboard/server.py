"""Mount the caelum pages in the scheduler's own Dask dashboard (same server, same port).

Dask builds its Bokeh server (``distributed.dashboard.scheduler.connect``) while the
Scheduler is constructed, *before* preloads' ``dask_setup`` runs, and reads its
``applications`` table only then; adding to that table from a preload is too late. What Dask
does itself is the idiomatic hook: build a Bokeh server with
``distributed.dashboard.core.BokehApplication`` and add it to the scheduler's
``http_application`` (a routing application that asks each added application in turn), then
``initialize``/``start`` it. Our pages live under ``<prefix>caelum/…`` and use Dask's
templates, theme and periodic-callback helper, so they look and behave like Dask's pages;
Dask's navbar gets a "Caelum" entry.
"""

from __future__ import annotations

import functools
import logging
import pathlib
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from tornado.ioloop import IOLoop

from caelum_dask.dashboard.pages import PAGES, build, update_interval_ms

logger = logging.getLogger(__name__)

NAV_ENTRY = "caelum"
_TEMPLATES = pathlib.Path(__file__).with_name("templates")


@functools.cache
def _env() -> Environment:
    from distributed.dashboard.components.scheduler import env as dask_env

    return Environment(loader=ChoiceLoader([FileSystemLoader(str(_TEMPLATES)), dask_env.loader]))


def page_doc(page: str, scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document of one caelum page (``page`` ``""`` is the index)."""
    from distributed.dashboard.components import add_periodic_callback
    from distributed.dashboard.components.scheduler import BOKEH_THEME

    request = doc.session_context.request if doc.session_context is not None else None
    args = {k: v[0].decode(errors="replace") for k, v in (request.arguments if request else {}).items() if v}
    component = build(page, scheduler, extra.get("prefix", "/"), args)
    label = dict((p, lbl) for p, lbl, _ in PAGES).get(page, "Index")
    doc.title = f"caelum: {label}"
    add_periodic_callback(doc, component, update_interval_ms())
    doc.add_root(component.root)
    doc.template = _env().get_template("caelum.html")
    doc.template_variables.update(extra)
    doc.template_variables["caelum_page"] = page
    doc.theme = BOKEH_THEME


def _dask_bokeh_app(scheduler: Any) -> Any | None:
    from bokeh.server.tornado import BokehTornado

    for app in getattr(getattr(scheduler, "http_application", None), "applications", []):
        if isinstance(app, BokehTornado) and "/status" in app.app_paths:
            return app
    return None


def _static_aliases(prefix: str) -> list[tuple[Any, ...]]:
    """BokehJS and Dask's CSS/images, also below ``caelum/``.

    Dask's base.html links them relatively (``static/js/bokeh.min.js``, ``statics/css/…``),
    which from ``/caelum/<page>`` resolves to ``/caelum/static/…``; the same handlers Dask and
    Bokeh use serve them there too.
    """
    from bokeh.server.views.static_handler import StaticHandler
    from distributed.http.statics import routes as dask_statics

    aliases: list[tuple[Any, ...]] = [(rf"{prefix}caelum/static/(.*)", StaticHandler)]
    for pattern, handler, kwargs in dask_statics:
        aliases.append((f"{prefix}caelum/{pattern.lstrip('/')}", handler, kwargs))
    return aliases


def mount(scheduler: Any) -> Any | None:
    """Add the caelum pages to the scheduler's dashboard; None when it has no dashboard."""
    dask_app = _dask_bokeh_app(scheduler)
    if dask_app is None:
        logger.info("caelum: the scheduler has no Bokeh dashboard; caelum pages not mounted")
        return None
    from distributed.dashboard.core import BokehApplication
    from distributed.dashboard.scheduler import template_variables

    dask_variables = template_variables(scheduler)  # memoized: the very dict Dask's pages render
    if NAV_ENTRY not in dask_variables["pages"]:
        dask_variables["pages"].append(NAV_ENTRY)
    prefix = "/" + dask_app.prefix.strip("/") + "/" if dask_app.prefix.strip("/") else "/"
    applications = {"/caelum": functools.partial(page_doc, "")}
    for path, _, _ in PAGES:
        applications[f"/caelum/{path}"] = functools.partial(page_doc, path)
    variables = {**dask_variables, "prefix": prefix, "caelum_pages": [(p, label) for p, label, _ in PAGES]}
    app = BokehApplication(applications, scheduler, prefix=dask_app.prefix, template_variables=variables)
    app.add_handlers(r".*", _static_aliases(prefix))
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    return app

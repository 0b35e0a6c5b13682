"""Data sources of the caelum dashboard pages: pure functions and small event-fed models.

Nothing in this package imports Bokeh. Each module turns registry states, worker metrics or
``caelum.*`` events into plain ``{column: list}`` dicts that the page layouts hand to a
``ColumnDataSource`` unchanged, so every number a page shows can be unit-tested without a
browser or a scheduler.
"""

"""The local web dashboard (``motoko ui``).

:mod:`motoko.views.web.server` serves a single page (``static/``) and a small
read-only JSON API over the workflow's databases, with the standard library's
threaded HTTP server; the page learns about changes through server-sent events
fed by the database's change feed, so it updates within a moment of a commit
without polling.
"""

from motoko.views.web.server import Dashboard

__all__ = ["Dashboard"]

"""Context of the code that is running: which step or action, fired for which runs.

``createTask`` records on each run the step or action that created it
(``event_name``) and the runs it was derived from (``parents``). Steps
(:mod:`motoko.flow.dag`), orchestrators (:mod:`motoko.flow.orchestrator`) and event
actions (:mod:`motoko.flow.events`) set these variables around the user code
they call; the task manager reads them. They are context variables, so
concurrent steps of one event loop each see their own.
"""

from __future__ import annotations

import contextvars

#: The step or action currently executing (recorded as runs' event_name).
current_event: contextvars.ContextVar[str | None] = contextvars.ContextVar("motoko_event", default=None)
#: The runs the current action was fired for (recorded as runs' parents).
current_parents: contextvars.ContextVar[tuple[tuple[str, int], ...]] = contextvars.ContextVar(
    "motoko_parents", default=()
)

__all__ = ["current_event", "current_parents"]

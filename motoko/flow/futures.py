"""Handles on runs, by the name they were first imported from.

:class:`~motoko.flow.handles.RunList` (handles on run ids) and
:class:`~motoko.flow.selection.TaskSelection` (lazy selections) live in their
own modules; workflows, notebooks and motoko 0.1.4 orchestrators that import
them from here keep working.
"""

from __future__ import annotations

from motoko.flow.handles import RunList, requeue_left_over
from motoko.flow.selection import AllCondition, TaskSelection
from motoko.flow.waiting import (
    AsCompleted,
    EventLoopError,
    HandleError,
    Progress,
    is_done,
    wait_until,
)

__all__ = [
    "AllCondition",
    "AsCompleted",
    "EventLoopError",
    "HandleError",
    "Progress",
    "RunList",
    "TaskSelection",
    "is_done",
    "requeue_left_over",
    "wait_until",
]

"""motoko 0.1.4's ``motoko.task_manager`` module, for orchestrators written against it.

``from motoko.task_manager import RunList, TaskSelection, TaskSelectionEval,
TaskManager`` keeps working; the names are motoko's own handles (see
:mod:`motoko.flow.handles`, :mod:`motoko.flow.selection`, :mod:`motoko.flow.compat`,
:mod:`motoko.flow.task_manager`), which accept 0.1.4's spellings.
"""

from __future__ import annotations

from motoko.flow.compat import TaskSelectionEval
from motoko.flow.handles import RunList
from motoko.flow.selection import TaskSelection
from motoko.flow.task_manager import TaskManager

__all__ = ["RunList", "TaskManager", "TaskSelection", "TaskSelectionEval"]

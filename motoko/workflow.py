"""motoko 0.1.4 import path: ``from motoko.workflow import Workflow, event``."""

from motoko.flow.events import event
from motoko.flow.workflow import Workflow, WorkflowVars

__all__ = ["Workflow", "WorkflowVars", "event"]

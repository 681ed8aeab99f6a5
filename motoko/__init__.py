"""motoko: workflows over parametric studies.

The public face is small and imported lazily, so that a run's ``doIt.py``
doing ``from motoko import current_run`` does not pay for pandas, networkx or
the workflow engine::

    from motoko import Workflow, step, event, current_run
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0.dev0"

_EXPORTS = {
    "current_run": "motoko.launch.runtime",
    "getRunFromScript": "motoko.launch.runtime",
    "Workflow": "motoko.flow.workflow",
    "step": "motoko.flow.dag",
    "event": "motoko.flow.events",
    "RunList": "motoko.flow.handles",
    "TaskSelection": "motoko.flow.selection",
    "Sweep": "motoko.study.sweeps",
    "Range": "motoko.study.sweeps",
    "Linspace": "motoko.study.sweeps",
    "together": "motoko.study.sweeps",
    "MotokoError": "motoko.errors",
    "RunsFailed": "motoko.errors",
    "WaitTimeout": "motoko.errors",
    "RunNotFound": "motoko.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'motoko' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

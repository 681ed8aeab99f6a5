"""Which steps of a run name have completed, recorded next to ``run-names.json``.

A step's state in the graphs (``motoko graph --states``, PNGs, the
dashboard) comes from its runs. A step that completed without creating any
run (it only selected, or computed in Python) has no run to tell: without a
record it would read PENDING forever. :func:`record_done` writes, per run
name, the steps that returned; :func:`steps_done` reads them back.

The record lives in ``.motoko/steps.json`` (a few bytes per step), written
atomically under a lock so that workflows finishing at once do not lose each
other's entries.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

FILE = "steps.json"


def _path(directory: Path) -> Path:
    return Path(directory) / ".motoko" / FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def steps_done(directory: Path, run_name: str | None) -> set[str]:
    """The steps of ``run_name`` recorded as completed (empty when none or unknown)."""
    if run_name is None:
        return set()
    done = _read(_path(directory)).get(run_name)
    return {str(s) for s in done} if isinstance(done, list) else set()


def record_done(directory: Path, run_name: str, step: str) -> None:
    """Record that ``step`` of ``run_name`` returned (idempotent)."""
    path = _path(directory)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        done = data.get(run_name)
        done = list(done) if isinstance(done, list) else []
        if step in done:
            return
        data[run_name] = [*done, step]
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1))
        with contextlib.suppress(OSError):
            os.chmod(temporary, 0o600)
        os.replace(temporary, path)

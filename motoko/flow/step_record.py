"""Which steps of a run name have completed, recorded next to ``run-names.json``.

A step's state in the graphs (``motoko graph --states``, PNGs, the
dashboard) comes from its runs. A step that completed without creating any
run (it only selected, or computed in Python) has no run to tell: without a
record it would read PENDING forever. :func:`record_done` writes, per run
name, the steps that returned; :func:`steps_done` reads them back.

The record is ``.motoko/steps.log``: one JSON line per completed step,
appended. Why a log: a step completes at every hop of a chain, and
rewriting a JSON file atomically (a temporary file and a rename) made a new
inode each time, up to 1.5 ms of kernel time on this project's test
machine (see :mod:`motoko.launch.spares`); an append makes none. One
``write`` with ``O_APPEND`` lands whole beside other workflows' appends; a
line torn by a crash is skipped when read, and repeats are harmless.
Records of earlier versions in ``.motoko/steps.json`` are still read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FILE = "steps.log"
#: The record of earlier versions (one JSON object: run name → steps), read, no longer written.
OLD_FILE = "steps.json"


def _read_old(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def steps_done(directory: Path, run_name: str | None) -> set[str]:
    """The steps of ``run_name`` recorded as completed (empty when none or unknown)."""
    if run_name is None:
        return set()
    folder = Path(directory) / ".motoko"
    old = _read_old(folder / OLD_FILE).get(run_name)
    done = {str(s) for s in old} if isinstance(old, list) else set()
    try:
        lines = (folder / FILE).read_bytes().splitlines()
    except OSError:
        return done
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # torn by a crash
            continue
        if isinstance(entry, dict) and entry.get("run_name") == run_name and isinstance(entry.get("step"), str):
            done.add(entry["step"])
    return done


def record_done(directory: Path, run_name: str, step: str) -> None:
    """Record that ``step`` of ``run_name`` returned (one appended line; repeats are harmless)."""
    path = Path(directory) / ".motoko" / FILE
    line = (json.dumps({"run_name": run_name, "step": step}) + "\n").encode()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, b"\n" + line)  # on a line of its own, even after a torn one
    finally:
        os.close(fd)

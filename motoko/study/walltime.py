"""Durations of runs and pilots: what ``walltime:`` and ``time:`` mean.

A study (bd.yaml ``walltime:``) or a single run (a ``walltime`` run field)
may say how long a run is expected to take; a pilot claims only runs that
fit in the time its allocation has left (see :mod:`motoko.launch.claiming`).

A duration is a number of seconds, or a string in SLURM's ``--time`` forms
(``"MM"``, ``"MM:SS"``, ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``,
``"D-HH:MM:SS"``), so that what a user copies from a job script means the
same here. Like SLURM, a lone number in a *string* is minutes.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DAYS = re.compile(r"^(?P<d>\d+)-(?P<rest>[\d:]+)$")


def parse_duration(value: Any) -> float:
    """Return ``value`` as seconds.

    Raises:
        ValueError: for anything but a positive number or a SLURM time
            string; the message says which forms are accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{value!r} is not a positive number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    days = 0
    match = _DAYS.match(text)
    if match:
        days = int(match.group("d"))
        parts = match.group("rest").split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{value!r} is not a SLURM time (D-HH:MM:SS)")
        hours, minutes, seconds = ([*map(int, parts), 0, 0])[:3]
    else:
        parts = text.split(":")
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{value!r} is not a SLURM time (HH:MM:SS, MM:SS or MM)")
        numbers = [int(p) for p in parts]
        hours, minutes, seconds = {1: (0, numbers[0], 0), 2: (0, *numbers), 3: tuple(numbers)}[len(numbers)]
    total = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    if total <= 0:
        raise ValueError(f"{value!r} is not a positive duration")
    return total


def format_duration(seconds: float) -> str:
    """``HH:MM:SS`` (``D-HH:MM:SS`` beyond a day): how SLURM and users read it."""
    whole = max(0, int(math.ceil(seconds)))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text


def run_walltime(run: Any, study_walltime: float | None) -> float | None:
    """A run's expected duration: its own ``walltime`` field, else its study's.

    A run's field that cannot be read as a duration counts as unknown (None):
    it was accepted by its type, and claiming must never fail on it.
    """
    own = getattr(run, "walltime", None)
    if own is not None:
        try:
            return parse_duration(own)
        except ValueError:
            return study_walltime
    return study_walltime

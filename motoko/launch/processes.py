"""Proof that a recorded pid is still the process that was recorded.

Records of detached workflows and launcher daemons keep a pid and the time
they were written (just after the process started). The kernel reuses pids,
so before anything is signalled the process holding the pid must have
started no later than its record was written: a process that started
afterwards is someone else, and is never signalled.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Seconds of slack between a process's start and its record's time stamp
#: (the kernel counts start times in clock ticks; boot time is whole seconds).
SLACK = 2.0


def started_at(pid: int) -> float | None:
    """The Unix time at which process ``pid`` started (None: gone, or no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[19])  # field 22 of proc(5), counted from field 3
    return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def is_recorded_process(pid: int, recorded: float) -> bool:
    """Whether ``pid`` is the process a record written at ``recorded`` (Unix time) names.

    False for a pid that is gone, that cannot be checked (no ``/proc``), or
    that a process started after the record was written now holds.
    """
    start = started_at(pid)
    return start is not None and start <= recorded + SLACK

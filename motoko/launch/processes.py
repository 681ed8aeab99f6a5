"""Processes on this host: signalled only when proven to be the one meant.

Two proofs, one per kind of record:

* A local run's process starts in its own session with ``MOTOKO_STUDY``,
  ``MOTOKO_RUN_ID``, ``MOTOKO_ATTEMPT`` and ``MOTOKO_LAUNCHER`` in its
  environment. Those markers, read from ``/proc/PID/environ``, are how a
  launcher finds the processes a dead launcher left behind, even one whose
  pid was never recorded (the launcher died between starting it and
  committing), and how it makes sure a reused pid is never signalled.
* Records of detached workflows, servers and launcher daemons keep a pid and
  the time they were written (just after the process started). The kernel
  reuses pids, so the process holding the pid must have started no later
  than its record was written: a process that started afterwards is someone
  else, and is never signalled (:func:`is_recorded_process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from motoko.study.liveness import OrphanProcess

log = logging.getLogger(__name__)

#: Seconds between checks that stopped processes are gone.
_STOP_POLL = 0.05


def _environ(pid: int) -> set[bytes] | None:
    try:
        return set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:  # gone, not ours, or no /proc: never signal blindly
        return None


def _markers(study: str, run_id: int, launcher: str, attempt: int | None = None) -> set[bytes]:
    wanted = {
        f"MOTOKO_RUN_ID={run_id}".encode(),
        f"MOTOKO_STUDY={study}".encode(),
        f"MOTOKO_LAUNCHER={launcher}".encode(),
    }
    if attempt is not None:
        wanted.add(f"MOTOKO_ATTEMPT={attempt}".encode())
    return wanted


def is_run_process(pid: int, study: str, run_id: int, launcher: str) -> bool:
    """Whether ``pid`` is that run's process of that launcher (not a reused pid)."""
    environ = _environ(pid)
    return environ is not None and _markers(study, run_id, launcher) <= environ


def find_run_processes(study: str, run_id: int, launcher: str, attempt: int) -> list[int]:
    """The session leaders on this host running that attempt of that run for that launcher.

    Only session leaders: a run's children inherit its markers, and
    signalling the leader's group reaches them all.
    """
    wanted = _markers(study, run_id, launcher, attempt)
    found = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        pid = int(name)
        environ = _environ(pid)
        if environ is None or not wanted <= environ:
            continue
        with contextlib.suppress(OSError):
            if os.getsid(pid) == pid:
                found.append(pid)
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Runs start in their own session: the group is the run and its children.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_orphans(orphans: list[OrphanProcess]) -> int:
    """Send TERM to each orphan still running on this host; return how many were signalled."""
    stopped = 0
    for orphan in orphans:
        if not is_run_process(orphan.pid, orphan.study, orphan.run_id, orphan.launcher):
            continue
        _signal(orphan.pid, signal.SIGTERM)
        stopped += 1
        log.warning(
            "stopped process %d of run %s.%d, left running by dead launcher %s",
            orphan.pid, orphan.study, orphan.run_id, orphan.launcher,
        )
    return stopped


async def stop_and_wait(pids: list[int], grace: float) -> None:
    """TERM the process groups of ``pids``, KILL those still there after ``grace`` s, wait until gone.

    Returns once no process of those groups is left, so that a retry
    started afterwards never runs next to them.
    """
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    killed = False
    while any(_group_alive(pid) for pid in pids):
        if not killed and loop.time() >= deadline:
            for pid in pids:
                _signal(pid, signal.SIGKILL)
            killed = True
        await asyncio.sleep(_STOP_POLL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader (not reaped by its dead parent yet) counts as gone.
    return not _zombie(pgid)


def _zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] == "Z"


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

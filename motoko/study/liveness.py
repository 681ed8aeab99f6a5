"""Lost-run detection: runs whose launcher stopped heart-beating.

A LAUNCHED or RUNNING run is alive while its own heartbeat, or its
launcher's (``root["motoko_launchers"]``), is younger than ``lost_after``
seconds. Any live launcher *and* any awaiting workflow runs this check, so
that a run never looks alive forever even when every launcher died: the run
becomes LOST, and is re-queued if its study's ``retries`` allow it.

A local run's process may outlive its dead launcher (it runs in its own
session) and would go on computing next to its retry. When the observer is
on the same host, it stops that *orphan*: only once the run is LOST, only if
the launcher's process is gone, and only a process whose environment names
that run and that launcher (``/proc/PID/environ``), so a reused pid is never
signalled.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.study.records import Run, now
from motoko.study.server import pid_alive
from motoko.study.states import ACTIVE, LOST

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from motoko.study.database import Study, StudyDB


def last_sign_of_life(run: Run, record: Any) -> _dt.datetime:
    """The newest heartbeat of a run or of its launcher (a stopped launcher counts as dead)."""
    stamps = [t for t in (run.heartbeat, run.launched, run.created) if t is not None]
    if record is not None and getattr(record, "stopped", None) is None:
        stamps.append(record.heartbeat)
    return max(stamps)


@dataclass(frozen=True)
class Orphan:
    """A local run's process whose launcher died: stopped once its run is LOST."""

    pid: int
    study: str
    run_id: int
    launcher: str


def declare_lost(
    db: StudyDB,
    study: Study,
    lost_after: float,
    *,
    observer: str,
    skip_launcher: str | None = None,
    orphans: list[Orphan] | None = None,
) -> int:
    """Mark LOST the active runs of ``study`` silent for more than ``lost_after`` s.

    Must run inside a transaction (``db.transact``). Runs owned by
    ``skip_launcher`` (the caller's own) are left alone. Returns how many runs
    were declared lost; their processes that may still run on this host are
    added to ``orphans``, for :func:`stop_orphans` once the transaction is
    committed.

    Silences are counted from the observer's (re)connection at the earliest:
    after the server was restarted, every heartbeat is old, and the runs'
    launchers need ``lost_after`` seconds to write one again.
    """
    stamp = now()
    connected_at = getattr(db.db.storage, "connected_at", None)
    limit = _dt.timedelta(seconds=lost_after)
    if connected_at is not None and stamp - connected_at <= limit:
        return 0
    launchers = db.launchers()
    count = 0
    for state in sorted(ACTIVE):
        for run in list(study.ids_in_state(state).values()):
            if skip_launcher is not None and run.launcher == skip_launcher:
                continue
            record = launchers.get(run.launcher)
            last = last_sign_of_life(run, record)
            if stamp - last > limit:
                orphan = _orphan(run, record, study.name)
                if orphan is not None and orphans is not None:
                    orphans.append(orphan)
                study.transition(
                    run,
                    LOST,
                    error=f"launcher {run.launcher} on {run.machine_name} stopped heart-beating "
                    f"(last heartbeat {last:%Y-%m-%d %H:%M:%S} UTC, "
                    f"{(stamp - last).total_seconds():.0f} s before {observer} noticed)",
                )
                count += 1
    return count


def _orphan(run: Run, record: Any, study: str) -> Orphan | None:
    """The run's process, if it ran locally and its launcher's process is gone."""
    if record is None or getattr(record, "executor", None) != "local" or run.launcher is None:
        return None
    try:
        pid = int(run.executor_id or "")
    except ValueError:
        return None
    if pid_alive(int(record.pid)):
        return None  # the launcher lives (maybe only starved): it still owns the run
    return Orphan(pid, study, run.id, run.launcher)


def stop_orphans(orphans: list[Orphan]) -> int:
    """Send TERM to each orphan still running on this host; return how many were signalled."""
    stopped = 0
    for orphan in orphans:
        if not _is_run_process(orphan):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # Runs start in their own session: the group is the run and its children.
            if os.getpgid(orphan.pid) == orphan.pid:
                os.killpg(orphan.pid, signal.SIGTERM)
            else:
                os.kill(orphan.pid, signal.SIGTERM)
            stopped += 1
            log.warning(
                "stopped process %d of run %s.%d, left running by dead launcher %s",
                orphan.pid, orphan.study, orphan.run_id, orphan.launcher,
            )
    return stopped


def _is_run_process(orphan: Orphan) -> bool:
    """Whether ``orphan.pid`` is that run's process of that launcher (not a reused pid)."""
    try:
        environ = Path(f"/proc/{orphan.pid}/environ").read_bytes().split(b"\0")
    except OSError:  # gone, not ours, or no /proc: never signal blindly
        return False
    wanted = {
        f"MOTOKO_RUN_ID={orphan.run_id}".encode(),
        f"MOTOKO_STUDY={orphan.study}".encode(),
        f"MOTOKO_LAUNCHER={orphan.launcher}".encode(),
    }
    return wanted <= set(environ)

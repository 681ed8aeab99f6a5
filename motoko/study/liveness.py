"""Lost-run detection: runs whose launcher stopped heart-beating.

A LAUNCHED or RUNNING run is alive while its own heartbeat, or its
launcher's (``root["motoko_launchers"]``), is younger than ``lost_after``
seconds. Any live launcher *and* any awaiting workflow runs this check, so
that a run never looks alive forever even when every launcher died: the run
becomes LOST, and is re-queued if its study's ``retries`` allow it.
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any

from motoko.study.records import LAUNCHED, LOST, RUNNING, Run, now

if TYPE_CHECKING:
    from motoko.study.database import Study, StudyDB


def last_sign_of_life(run: Run, record: Any) -> _dt.datetime:
    """The newest heartbeat of a run or of its launcher (a stopped launcher counts as dead)."""
    stamps = [t for t in (run.heartbeat, run.launched, run.created) if t is not None]
    if record is not None and getattr(record, "stopped", None) is None:
        stamps.append(record.heartbeat)
    return max(stamps)


def declare_lost(db: StudyDB, study: Study, lost_after: float, *, observer: str, skip_launcher: str | None = None) -> int:
    """Mark LOST the active runs of ``study`` silent for more than ``lost_after`` s.

    Must run inside a transaction (``db.transact``). Runs owned by
    ``skip_launcher`` (the caller's own) are left alone. Returns how many runs
    were declared lost.

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
    for state in (LAUNCHED, RUNNING):
        for run in list(study.ids_in_state(state).values()):
            if skip_launcher is not None and run.launcher == skip_launcher:
                continue
            last = last_sign_of_life(run, launchers.get(run.launcher))
            if stamp - last > limit:
                study.transition(
                    run,
                    LOST,
                    error=f"launcher {run.launcher} on {run.machine_name} stopped heart-beating "
                    f"(last heartbeat {last:%Y-%m-%d %H:%M:%S} UTC, "
                    f"{(stamp - last).total_seconds():.0f} s before {observer} noticed)",
                )
                count += 1
    return count

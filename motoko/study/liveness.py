"""Lost-run detection: runs whose launcher stopped heart-beating.

A LAUNCHED or RUNNING run is alive while its own heartbeat, or its
launcher's (``root["motoko_launchers"]``), is younger than ``lost_after``
seconds. :func:`silent_runs` finds the others. What becomes of them is
decided above this package: a launcher asks its executor first and adopts
what still executes (see :mod:`motoko.launch.adoption`); only what nobody can
account for is LOST, and re-queued if its study's ``retries`` allow it.

An awaiting workflow declares LOST only the silent runs of *local*
launchers (:func:`declare_lost` with ``executors={"local"}``): a cluster job
may well outlive its launcher, and only a launcher can look for it. The
processes such a local run may have left on this host are returned as
:class:`OrphanProcess` records for :func:`motoko.launch.processes.stop_orphans`;
this package never signals processes.

"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Collection
from dataclasses import dataclass
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


def silence_note(run: Run, record: Any, lost_after: float, stamp: _dt.datetime | None = None) -> str | None:
    """What to tell a user about an active run whose launcher went silent, or None.

    Read-only: views show it (``motoko status``, ``runs show``, the
    dashboard) whether or not any process is watching the study, so that
    no run looks alive forever.
    """
    if run.state not in ACTIVE:
        return None
    gone = ((stamp or now()) - last_sign_of_life(run, record)).total_seconds()
    if gone <= lost_after:
        return None
    return f"launcher gone {gone:.0f} s ago: start a launcher to recover them"


@dataclass(frozen=True)
class OrphanProcess:
    """A local run's process whose launcher died: stopped once its run is LOST (pure data)."""

    pid: int
    study: str
    run_id: int
    launcher: str


@dataclass(frozen=True)
class Silent:
    """An active run whose launcher stopped heart-beating, with what is known of it."""

    run: Run
    record: Any  # the launcher's LauncherRecord, or None when it is gone
    last: _dt.datetime  # its last sign of life
    silence: float  # seconds since then

    @property
    def executor(self) -> str | None:
        """The executor kind of the silent launcher (local, slurm, dask), if known."""
        return getattr(self.record, "executor", None)

    def lost_error(self, observer: str, found: str = "") -> str:
        """The error a LOST run keeps: who went silent, since when, and what was found."""
        run = self.run
        text = (
            f"launcher {run.launcher} on {run.machine_name} stopped heart-beating "
            f"(last heartbeat {self.last:%Y-%m-%d %H:%M:%S} UTC, {self.silence:.0f} s before {observer} noticed)"
        )
        return f"{text}; {found}" if found else text


def silent_runs(
    db: StudyDB, study: Study, lost_after: float, *, skip_launcher: str | None = None
) -> list[Silent]:
    """The active runs of ``study`` silent for more than ``lost_after`` seconds.

    Reads only. Runs owned by ``skip_launcher`` (the caller's own) are left
    out. Silences are counted from the observer's (re)connection at the
    earliest: after the server was restarted, every heartbeat is old, and the
    runs' launchers need ``lost_after`` seconds to write one again.
    """
    stamp = now()
    connected_at = getattr(db.db.storage, "connected_at", None)
    limit = _dt.timedelta(seconds=lost_after)
    if connected_at is not None and stamp - connected_at <= limit:
        return []
    launchers = db.launchers()
    found = []
    for state in sorted(ACTIVE):
        for run in list(study.ids_in_state(state).values()):
            if skip_launcher is not None and run.launcher == skip_launcher:
                continue
            record = launchers.get(run.launcher)
            last = last_sign_of_life(run, record)
            if stamp - last > limit:
                found.append(Silent(run, record, last, (stamp - last).total_seconds()))
    return found


def declare_lost(
    db: StudyDB,
    study: Study,
    lost_after: float,
    *,
    observer: str,
    skip_launcher: str | None = None,
    orphans: list[OrphanProcess] | None = None,
    executors: Collection[str] | None = None,
) -> int:
    """Mark LOST the active runs of ``study`` silent for more than ``lost_after`` s.

    Must run inside a transaction (``db.transact``). Runs owned by
    ``skip_launcher`` (the caller's own) are left alone, and so are runs of
    launchers whose executor is not among ``executors`` (None: any). Returns
    how many runs were declared lost; their processes that may still run on
    this host are added to ``orphans``, for
    :func:`motoko.launch.processes.stop_orphans` once the transaction is
    committed.
    """
    count = 0
    for silent in silent_runs(db, study, lost_after, skip_launcher=skip_launcher):
        if executors is not None and silent.executor not in executors and silent.record is not None:
            continue
        orphan = _orphan(silent.run, silent.record, study.name)
        if orphan is not None and orphans is not None:
            orphans.append(orphan)
        study.transition(silent.run, LOST, error=silent.lost_error(observer))
        count += 1
    return count


def _orphan(run: Run, record: Any, study: str) -> OrphanProcess | None:
    """The run's process, if it ran locally and its launcher's process is gone."""
    if record is None or getattr(record, "executor", None) != "local" or run.launcher is None:
        return None
    try:
        pid = int(run.executor_id or "")
    except ValueError:
        return None
    if pid_alive(int(record.pid)):
        return None  # the launcher lives (maybe only starved): it still owns the run
    return OrphanProcess(pid, study, run.id, run.launcher)

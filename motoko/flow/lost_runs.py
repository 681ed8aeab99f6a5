"""Declaring LOST, while waiting, the runs whose every launcher died.

Launchers declare LOST the runs of a launcher that stopped heart-beating
(after asking its executor). When *every* launcher died, nobody would, and a
workflow awaiting those runs would wait forever. So the code that awaits runs
(:func:`motoko.flow.waiting.wait_until`, the event loop of
:mod:`motoko.flow.events`) takes this explicit step while it waits, every
``lost_after / 4`` seconds: it is a write, kept out of every read path
(:meth:`Session.refresh <motoko.flow.session.Session.refresh>` only commits
and looks).

It declares only *local* runs: a cluster job (SLURM, Dask) may outlive its
launcher, and only a launcher can ask the cluster about it. It declares
nothing while a live launcher serves the study (that launcher adopts what
can be adopted and declares the rest), nor while ``motoko run``'s own
embedded launcher is alive, which serves every study even before it wrote
its liveness record. The processes of the runs it declares are stopped.
"""

from __future__ import annotations

import time
import weakref

from motoko.flow.launcher_watch import watch_for
from motoko.flow.session import Session
from motoko.launch.processes import stop_orphans
from motoko.study.database import StudyDB
from motoko.study.liveness import OrphanProcess, declare_lost, served
from motoko.study.records import now
from motoko.study.states import ACTIVE

#: Per session: when its silent runs were last looked for (time.monotonic()).
_LAST_CHECK: weakref.WeakKeyDictionary[Session, float] = weakref.WeakKeyDictionary()


def declare_lost_while_waiting(session: Session) -> None:
    """Every ``lost_after / 4`` seconds (0.2 s at least), :func:`declare_lost_runs`.

    The first look comes ``lost_after / 4`` seconds after the session was
    opened: a launcher started with the workflow has had time to write its
    record by then.
    """
    current = time.monotonic()
    last = _LAST_CHECK.get(session)
    if last is None:  # the clock starts when the session opened
        last = current - (now() - session.opened_at).total_seconds()
    if current - last >= max(0.2, session.config.lost_after / 4):
        _LAST_CHECK[session] = current
        declare_lost_runs(session)


def declare_lost_runs(session: Session) -> None:
    """Declare LOST the silent local runs of every study no live launcher serves; stop their processes."""
    # ``motoko run``'s own launcher serves every study even before it wrote
    # its record: deciding before it does would stop runs it can adopt.
    embedded = watch_for(session).embedded
    embedded_serves = embedded is not None and embedded.alive
    for name, schema in session.schemas.items():
        db = session.db_for(name)
        study = db.study(name)
        if not any(study.ids_in_state(state) for state in ACTIVE):
            continue
        lost_after = schema.lost_after or session.config.lost_after
        if embedded_serves or served(db, name, lost_after):
            continue  # a live launcher adopts what can be, and declares the rest
        orphans: list[OrphanProcess] = []

        def change(
            db: StudyDB = db, name: str = name, lost_after: float = lost_after, orphans: list[OrphanProcess] = orphans
        ) -> int:
            orphans.clear()  # a retried transaction finds them again
            # Cluster jobs may outlive their launcher: only a launcher can look for them.
            return declare_lost(
                db, db.study(name), lost_after, observer=f"workflow {session.run_name}", orphans=orphans,
                executors=("local",),
            )

        db.transact(change, what="declare lost runs")
        stop_orphans(orphans)


__all__ = ["declare_lost_runs", "declare_lost_while_waiting"]

"""Runs waiting with no launcher alive to execute them.

CREATED runs wait for a launcher; when none runs (``motoko run
--no-launcher`` with no daemon started, a script's ``rl.result()``), the wait
would be silent forever. Every launcher keeps a record in the database
(``root["motoko_launchers"]``, see :class:`~motoko.study.container.LauncherRecord`)
whose heartbeat it refreshes every few seconds; a study is *served* while one
record naming it is not stopped and heart-beat recently. Reading only: a
database without records is read as "no launcher", nothing is created.
"""

from __future__ import annotations

import datetime as _dt
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from motoko.study.records import CREATED, now
from motoko.study.server import pid_alive

if TYPE_CHECKING:
    from motoko.study.database import StudyDB

#: What to run when nothing serves a study.
START_HINT = "`motoko launcher start`"


@dataclass(frozen=True)
class Unserved:
    """CREATED runs of studies that no live launcher serves.

    Attributes:
        waiting: How many runs wait.
        studies: The studies they belong to.
    """

    waiting: int
    studies: tuple[str, ...]

    def __str__(self) -> str:
        runs = "1 run" if self.waiting == 1 else f"{self.waiting} runs"
        return f"{runs} waiting, no launcher alive: {START_HINT}"


def _alive(record: Any, stamp: _dt.datetime, within: float, host: str) -> bool:
    if getattr(record, "stopped", None) is not None:
        return False
    if (stamp - record.heartbeat).total_seconds() > within:
        return False
    # On this host a vanished process is dead at once, whatever its last heartbeat.
    return not (record.machine_name == host and not pid_alive(int(record.pid)))


def served_studies(db: StudyDB, within: float) -> set[str]:
    """The studies of ``db`` that a launcher heart-beating in the last ``within`` s serves."""
    tree = db.conn.root().get("motoko_launchers")  # absent until a launcher ran: not created here
    if not tree:
        return set()
    stamp, host = now(), socket.gethostname()
    served: set[str] = set()
    for record in tree.values():
        if _alive(record, stamp, within, host):
            served.update(record.studies)
    return served


def unserved(databases: Iterable[tuple[StudyDB, str]], within: float, waiting: dict[str, int] | None = None) -> Unserved | None:
    """The CREATED runs of the given studies that no live launcher serves, or None.

    Args:
        databases: ``(database, study name)`` pairs.
        within: Seconds since its last heartbeat for a launcher to count as
            alive (a launcher heart-beats several times per ``lost_after``).
        waiting: Runs waiting per study, when the caller counted only its
            own; default every CREATED run of the study.
    """
    served: dict[int, set[str]] = {}
    count, names = 0, []
    for db, study in databases:
        if id(db) not in served:
            served[id(db)] = served_studies(db, within)
        if study in served[id(db)]:
            continue
        # The per-state counter, not len() of the index: that reads every bucket (10 s at 1M runs).
        n = waiting.get(study, 0) if waiting is not None else db.study(study).count(CREATED)
        if n:
            count += n
            names.append(study)
    return Unserved(count, tuple(names)) if count else None

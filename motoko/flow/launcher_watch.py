"""Saying, within seconds, that runs wait for a launcher that is not there.

A wait on CREATED runs (``rl.result()``, ``await rl``, ``motoko run
--no-launcher``, ``motoko runs wait``) is silent until its timeout when no
launcher runs. :class:`LauncherWatch` looks at the launchers' liveness records
(:mod:`motoko.study.unserved`) once a wait has lasted :data:`HINT_AFTER`
seconds and logs ``3 runs waiting, no launcher alive: `motoko launcher
start``` once per workflow; a timeout's message carries the same sentence.
A progress display that shows the sentence itself (``motoko run``) takes the
job over with :meth:`LauncherWatch.take_over`, so it is never said twice.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any

from motoko.flow.session import Session
from motoko.study.records import CREATED
from motoko.study.unserved import Unserved, unserved

log = logging.getLogger(__name__)

#: Seconds a wait lasts before the launchers are looked at (a launcher being
#: started meanwhile is not reported as missing).
HINT_AFTER = 2.0

_WATCHES: weakref.WeakKeyDictionary[Session, LauncherWatch] = weakref.WeakKeyDictionary()


class LauncherWatch:
    """Per workflow: whether its waiting runs have a live launcher, said once."""

    def __init__(self, workflow: Session):
        self._workflow = weakref.ref(workflow)
        self.told = False
        self.display = False
        #: A launcher running in this process (``motoko run``'s embedded one): it
        #: serves the workflow even before its executor started and it wrote its record.
        self.embedded: Any = None

    def take_over(self) -> None:
        """A display shows the sentence itself: the watch stops logging it."""
        self.display = True

    def check(self, pending: Iterable[tuple[str, int, str]] | None = None) -> Unserved | None:
        """The waiting runs no live launcher serves (of ``pending``, else of every study).

        Args:
            pending: ``(study, run id, state)`` of the runs waited for; only
                the CREATED ones count.
        """
        workflow = self._workflow()
        if workflow is None or (self.embedded is not None and self.embedded.alive):
            return None
        waiting: dict[str, int] | None = None
        if pending is not None:
            waiting = {}
            for study, _, state in pending:
                if state == CREATED:
                    waiting[study] = waiting.get(study, 0) + 1
            if not waiting:
                return None
        studies = list(waiting) if waiting is not None else list(workflow.schemas)
        pairs = [(workflow.db_for(name), name) for name in studies]
        return unserved(pairs, within=workflow.config.lost_after, waiting=waiting)

    def warn(self, pending: Iterable[tuple[str, int, str]]) -> Unserved | None:
        """Log the sentence once per workflow (unless a display shows it); return what was found."""
        found = self.check(pending)
        if found is not None and not self.told and not self.display:
            self.told = True
            log.warning("%s", found)
        return found


def watch_for(workflow: Session) -> LauncherWatch:
    """The workflow's one :class:`LauncherWatch`."""
    watch = _WATCHES.get(workflow)
    if watch is None:
        watch = _WATCHES[workflow] = LauncherWatch(workflow)
    return watch

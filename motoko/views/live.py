"""Waking up when any of a workflow's databases changes (threads, not asyncio).

``motoko status --watch`` and the web dashboard redraw when the database
changes, not on a timer: a :class:`ChangeSignal` subscribes to the change feed
of every database the workflow uses (ZEO pushes invalidations within
milliseconds of a commit) and lets a thread block until the next commit. A
timeout remains as a safety net only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


class ChangeSignal:
    """A thread-side wake-up on commits to any of several databases.

    Args:
        databases: :class:`~motoko.study.database.StudyDB` objects to watch.

    A caller may rely on this: a commit that happens after :meth:`wait`
    returned (or after construction) makes the next :meth:`wait` return True
    at once; several commits in between wake it once.
    """

    def __init__(self, databases: Iterable[Any]):
        self._event = threading.Event()
        self.commits = 0
        self._unsubscribers: list[Callable[[], None]] = [db.feed.subscribe(self._notify) for db in databases]

    def _notify(self, oids: frozenset[bytes] | None) -> None:
        # Runs on ZEO's I/O thread: only set a flag.
        self.commits += 1
        self._event.set()

    def wait(self, timeout: float | None, *, settle: float = 0.0) -> bool:
        """Block until a commit (True) or ``timeout`` seconds pass (False).

        ``settle`` waits that much longer after the first commit, so that a
        burst of commits (a launcher settling ten runs) causes one redraw.
        """
        fired = self._event.wait(timeout)
        if fired and settle > 0:
            time.sleep(settle)
        self._event.clear()
        return fired

    def close(self) -> None:
        """Stop listening (idempotent)."""
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []

    def __enter__(self) -> ChangeSignal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

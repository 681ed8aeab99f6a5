"""The runs a workflow claimed for its embedded launcher, on their way to the launcher's queue.

The workflow thread claims runs inside its insert's transaction (see
:mod:`motoko.launch.insert_claims`); the launcher takes them once that
commit has landed. A :class:`Handoff` is the meeting point of the two
threads. It lives apart from the claiming so that the launcher, which owns
one, does not depend on the module that reads the launcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from motoko.launch.claims import Claimed


class Handoff:
    """The launcher's side: runs its workflow claimed for it, on their way to its queue.

    Thread-safe: the workflow thread fills it while the launcher's loop
    empties it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: list[Claimed] = []  # committed, not yet in the launcher's queue
        self._attempt: list[Claimed] = []  # claimed in the committing thread's current attempt
        self._stamps: dict[tuple[str, int], Any] = {}  # their claims' ``launched`` stamps
        self._doubtful: dict[tuple[str, int], Any] = {}  # claimed in attempts that did not land, or might have
        self._thread: int | None = None  # the thread whose commit carries ``_attempt``
        self._covers = False  # that commit holds nothing new for the launcher but its claims
        self._stale = False  # absorbed runs the launcher's connection has not seen committed
        #: Wakes the launcher's loop from any thread (set once it serves; None: not serving).
        self.wake: Callable[[], None] | None = None

    def begin(self) -> dict[tuple[str, int], Any]:
        """An attempt of the insert starts claiming in this thread (drops an earlier attempt's claims).

        Returns the claims of this insert's earlier attempts (run → its
        claim's ``launched`` stamp): after a conflict none landed, but after
        the server was lost during the commit one may have (see
        :meth:`InsertClaim.__call__`).
        """
        me = threading.get_ident()
        with self._lock:
            if self._thread == me:  # a retry: the last attempt neither landed nor was dropped
                self._doubtful.update(self._stamps)
            else:
                self._doubtful = {}
            self._attempt, self._stamps = [], {}
            self._thread = me
            self._covers = False
            return dict(self._doubtful)

    def claimed(self, item: Claimed, stamp: Any) -> None:
        """One run claimed in the current attempt, ``stamp`` its ``launched`` time."""
        with self._lock:
            self._attempt.append(item)
            self._stamps[(item.study, item.run_id)] = stamp

    def covers(self, covers: bool) -> None:
        """Whether the attempt's commit holds nothing new for the launcher besides its claims."""
        with self._lock:
            self._covers = covers

    def pending(self) -> int:
        """Runs claimed for the launcher that it has not queued yet."""
        with self._lock:
            return len(self._ready) + len(self._attempt)

    def commit_landed(self) -> bool | None:
        """Called by the launcher's change-feed listener: hand over what this thread's commit claimed.

        Returns None when the commit is not one carrying claims (another
        thread's, or another process's), else whether it holds nothing new
        for the launcher besides them (then it needs no claiming cycle).
        """
        with self._lock:
            if self._thread != threading.get_ident():
                return None
            self._ready.extend(self._attempt)
            self._attempt, self._stamps, self._doubtful = [], {}, {}
            self._thread = None
            return self._covers

    def finish(self) -> None:
        """The insert committed: hand over what is left of it, and wake the launcher for it."""
        with self._lock:
            if self._thread != threading.get_ident():
                return
            left, self._attempt, self._thread = self._attempt, [], None
            self._stamps, self._doubtful = {}, {}
            self._ready.extend(left)
        if left and self.wake is not None:
            self.wake()

    def drop(self) -> None:
        """The insert failed: nothing of its attempt was committed by it."""
        with self._lock:
            if self._thread == threading.get_ident():
                self._attempt, self._stamps, self._doubtful, self._thread = [], {}, {}, None

    def absorb(self, owned: dict[tuple[str, int], bytes]) -> list[Claimed]:
        """The launcher's loop takes the handed-over runs: they join ``owned``; returns them to queue."""
        with self._lock:
            items, self._ready = self._ready, []
        for item in items:
            owned[(item.study, item.run_id)] = item.oid
            self._stale = True
        return items

    def take_stale(self) -> bool:
        """Whether the launcher must begin anew to see the commit of runs it absorbed (once)."""
        stale, self._stale = self._stale, False
        return stale

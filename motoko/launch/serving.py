"""Serving: the life that launchers and pilot managers share.

Both wait on one wake-up event that a commit anywhere (pushed by the
change feed), a signal or :meth:`Served.stop` sets; :meth:`Served.serve`
runs one on a new event loop and :meth:`Served.serve_async` on the current
one, subscribed to the change feed while it serves, and returns what it
did. What each does between waking up and sleeping is its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from typing import Any

from motoko.study.database import StudyDB


@dataclass
class LauncherReport:
    """What a launcher did before it exited."""

    executed: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    lost_detected: int = 0
    claims_conflicts: int = 0
    #: Runs claimed while alone and given back when other launchers joined (see motoko.launch.claims).
    given_back: int = 0
    #: Cycles run (one transaction each, or none when nothing changed): how often it woke to work.
    cycles: int = 0


class Served:
    """A loop served until stopped: subclasses give what it does (the hooks below).

    Attributes:
        db: The served database connection (its change feed wakes the loop).
        report: What was done, returned when serving ends.
    """

    db: StudyDB
    report: LauncherReport
    _stopping: bool
    _wake: asyncio.Event | None

    def stop(self) -> None:
        """Ask it to stop: a launcher stops claiming and exits once its runs ended,
        a pilot manager stops submitting pilots and exits."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def serve(self) -> LauncherReport:
        """Serve on a new event loop until a bounded mode ends it."""
        return asyncio.run(self.serve_async())

    async def serve_async(self, install_signals: bool = False) -> LauncherReport:
        """Serve on the current event loop (see :meth:`serve`); TERM and INT stop it when asked."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        unsubscribe = self.db.feed.subscribe(self._on_change(loop), threads=await self._own_threads())
        await self._opening()
        try:
            await self._serving()
        finally:
            unsubscribe()
            await self._closing()
        return self.report

    def _on_change(self, loop: asyncio.AbstractEventLoop) -> Any:
        """The change feed's listener (called in the feed's thread): wakes the loop on every commit."""
        wake = self._wake
        assert wake is not None

        def listener(oids: frozenset[bytes] | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wake.set)

        return listener

    async def _own_threads(self) -> list[int]:
        """Threads besides this one whose commits are its own: the feed does not wake it for them."""
        return []

    async def _opening(self) -> None:
        """Start what serving needs, once the feed is heard (nothing by default)."""

    async def _serving(self) -> None:
        """Serve until stopped or done."""
        raise NotImplementedError

    async def _closing(self) -> None:
        """Release what :meth:`_opening` started, also when serving failed (nothing by default)."""

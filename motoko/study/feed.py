"""The change feed: ZEO invalidations turned into wake-ups.

ZEO pushes, to every connected client, the ids of the objects each committed
transaction changed (invalidations), within milliseconds of the commit. ZODB
offers no public per-connection callback for them, so :class:`FeedStorage`
extends ``ClientStorage.invalidateTransaction`` (still calling the original)
to notify a :class:`ChangeFeed`. Awaiting coroutines and idle launchers wait
on the feed instead of sleeping a fixed interval; a slow poll remains only as
a safety net (a missed notification, a reconnect).

ZEO never echoes a commit to the client that made it. When several
connections of one process share a client (an embedded launcher and its
workflow, see ``StudyDB.sibling``), :class:`FeedStorage` therefore also
publishes its own commits, *in-process*, to the listeners subscribed from
other threads than the committing one: the launcher hears of the runs its
workflow created, and the workflow of the outcomes its launcher settled,
without a server round trip, and reads the changed objects from the shared
client cache.

The feed lives in the study layer because the study database owns the
connection; the workflow engine and launchers only subscribe to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from motoko.study.batched_storage import BatchedClientStorage

#: Passed to listeners when everything may have changed (cache dropped on reconnect).
EVERYTHING: frozenset[bytes] = frozenset()

Listener = Callable[[frozenset[bytes] | None], None]


class ChangeFeed:
    """Fans invalidation notices out to listeners, from ZEO's I/O thread.

    Listeners receive the set of changed object ids, or ``None`` when the
    client reconnected and any object may have changed. They must be quick
    and thread-safe: they run on ZEO's network thread.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._threads: dict[int, frozenset[int]] = {}  # id(listener) → threads whose commits it makes
        self._lock = threading.Lock()
        self.commits_seen = 0
        #: Commits of this process published in-process (see the module's docstring).
        self.local_commits = 0

    def subscribe(self, listener: Listener, *, threads: Iterable[int] = ()) -> Callable[[], None]:
        """Add a listener; return a function that removes it.

        The listener is not told in-process of the commits of the calling
        thread, nor of those of ``threads``: a subscriber that also commits
        from a thread of its own (a launcher's committer) names it.
        """
        with self._lock:
            self._listeners.append(listener)
            self._threads[id(listener)] = frozenset({threading.get_ident(), *threads})

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
                    self._threads.pop(id(listener), None)

        return unsubscribe

    def publish_local(self, oids: Iterable[bytes]) -> None:
        """Tell the listeners of other threads of a commit this process made.

        The committing thread's own listeners are not told, as ZEO does not
        echo a commit to its author.
        """
        changed = frozenset(oids)
        if not changed:
            return
        me = threading.get_ident()
        with self._lock:
            listeners = [item for item in self._listeners if me not in self._threads.get(id(item), ())]
        if not listeners:
            return
        self.local_commits += 1
        for listener in listeners:
            listener(changed)

    def publish(self, oids: Iterable[bytes] | None) -> None:
        """Notify every listener (called by :class:`FeedStorage`)."""
        self.commits_seen += 1
        changed = None if oids is None else frozenset(oids)
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(changed)

    def waiter(self) -> ThreadWaiter:
        """Return a thread-side waiter subscribed to this feed."""
        return ThreadWaiter([self])

    def async_waiter(self, loop: asyncio.AbstractEventLoop | None = None) -> AsyncWaiter:
        """Return an asyncio waiter subscribed to this feed (call inside the loop)."""
        return AsyncWaiter([self], loop or asyncio.get_running_loop())


class _Waiter:
    """What both waiters share: listening to several feeds, and letting go.

    A caller may rely on this: a commit that happens after a ``wait``
    returned (or after construction) makes the next ``wait`` return True at
    once; several commits in between wake it once.
    """

    def __init__(self, feeds: Iterable[ChangeFeed]):
        #: Commits seen since construction (any feed).
        self.commits = 0
        #: Object ids changed since construction; ``everything`` after a reconnect.
        self.changed: set[bytes] = set()
        self.everything = False
        self._unsubscribers = [feed.subscribe(self._notify) for feed in feeds]

    def _notify(self, oids: frozenset[bytes] | None) -> None:
        # Runs on ZEO's I/O thread: record and wake, nothing more.
        self.commits += 1
        if oids is None:
            self.everything = True
        else:
            self.changed |= oids
        self.kick()

    def kick(self) -> None:
        """Wake the waiting side as a commit would (thread-safe)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop listening (idempotent)."""
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadWaiter(_Waiter):
    """Blocks a thread until the next change on any of its feeds (or a timeout)."""

    def __init__(self, feeds: Iterable[ChangeFeed]):
        self._event = threading.Event()
        super().__init__(feeds)

    def kick(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None, *, settle: float = 0.0) -> bool:
        """Wait for a change; True if one arrived, False on timeout.

        ``settle`` waits that much longer after the first change, so that a
        burst of commits (a launcher settling ten runs) wakes a view once.
        """
        fired = self._event.wait(timeout)
        if fired and settle > 0:
            time.sleep(settle)
        self._event.clear()
        return fired


class AsyncWaiter(_Waiter):
    """Lets coroutines await the next change on any of its feeds without blocking the loop."""

    def __init__(self, feeds: Iterable[ChangeFeed], loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()
        super().__init__(feeds)

    def kick(self) -> None:
        # RuntimeError: the loop is closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float | None) -> bool:
        """Wait for a change; True if one arrived, False on timeout."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class FeedStorage(BatchedClientStorage):
    """A ZEO ClientStorage that also reports invalidations to a ChangeFeed.

    Stores travel in batches (see :mod:`motoko.study.batched_storage`).

    Attributes:
        connected_at: When the connection to the server was last made (UTC).
            Nobody could write a heartbeat while the server was away, so
            lost-run detection counts silences from here at the earliest.
    """

    def __init__(self, *args: Any, feed: ChangeFeed, **kw: Any):
        self.feed = feed
        self.connected_at = _dt.datetime.now(_dt.timezone.utc)
        self._written: dict[int, list[bytes]] = {}  # id(transaction) → oids stored in it
        super().__init__(*args, **kw)

    def store(self, oid: bytes, serial: bytes, data: bytes, version: str, txn: Any) -> Any:
        """Storage API: remember what this transaction writes, for :meth:`tpc_finish`."""
        self._written.setdefault(id(txn), []).append(oid)
        return super().store(oid, serial, data, version, txn)

    def tpc_finish(self, txn: Any, *args: Any, **kw: Any) -> Any:
        """Storage API: commit, then tell this process's other threads (see the module doc)."""
        try:
            tid = super().tpc_finish(txn, *args, **kw)
        finally:
            written = self._written.pop(id(txn), ())
        self.feed.publish_local(written)
        return tid

    def tpc_abort(self, txn: Any, *args: Any, **kw: Any) -> Any:
        """Storage API: abort, forgetting what the transaction wrote."""
        self._written.pop(id(txn), None)
        return super().tpc_abort(txn, *args, **kw)

    def invalidateTransaction(self, tid: bytes, oids: Any) -> None:  # noqa: N802
        """Server callback: let ZODB invalidate, then wake the feed's listeners."""
        super().invalidateTransaction(tid, oids)
        self.feed.publish(oids)

    def invalidateCache(self) -> None:  # noqa: N802
        """Server callback after a reconnect: anything may have changed."""
        super().invalidateCache()
        self.feed.publish(None)

    def notify_connected(self, conn: Any, info: Any) -> None:
        """Reconnected: wake everybody so that they re-read."""
        self.connected_at = _dt.datetime.now(_dt.timezone.utc)
        super().notify_connected(conn, info)
        self.feed.publish(None)

"""A ZEO client storage that sends a transaction's objects in batches.

ZEO's ``ClientStorage.store`` hands every stored object to its network
thread on its own (``loop.call_soon_threadsafe``: a write to the loop's
wake-up socket and a thread switch per object), and asks the server for new
object ids 100 at a time, waiting for each answer. A transaction inserting
10,000 runs stores ~24,000 objects and needs ~240 new-id round trips: in a
profile of inserting 30,000 runs, 29 % of the time went to those wake-ups
and 8 % to waiting for ids.

:class:`BatchedClientStorage` changes only how the same messages travel:

* stores are queued per transaction and handed to the network thread
  :data:`STORE_BATCH` at a time (ZEO's own ``async_iter``, which storeBlob
  uses), in order, behind the transaction's ``tpc_begin`` (a small commit's
  begin and stores thus reach the network thread in one hand-over). Every
  other message to the server (vote, a conflict check, a blob, any call)
  first sends what is queued, so the server sees exactly the sequence ZEO
  would have sent;
* a transaction's objects wait for its end in memory
  (:class:`~motoko.study.zeo_buffers.MemoryTransactionBuffer`), not in a
  temporary file (none is made and dropped at ``tpc_begin`` either);
* a big transaction's new objects past :data:`CACHED_NEW` are not copied
  into ZEO's cache at its end;
* a prefetch asks for its objects :data:`~motoko.study.bulk_loads.CHUNK`
  per message and waits for them, when the server can
  (:mod:`motoko.study.bulk_loads`);
* new ids are asked for ahead: when a batch of 100 is taken, the next
  batches are already requested (more while a process keeps asking, up to
  :data:`OID_AHEAD`), so a large insert stops waiting for them. Ids asked
  for and never used are harmless (ZODB's ids only need to be unique).

It reaches into ``ClientStorage``'s message methods (``_call``, ``_async``,
``_async_iter``) as ZEO 6 defines them; ``pyproject.toml`` keeps ZEO below 7
so that a release changing them cannot reach users unnoticed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from ZEO.ClientStorage import ClientStorage
from ZODB.POSException import ReadOnlyError, StorageTransactionError
from ZODB.utils import z64

from motoko.study.bulk_loads import INFO_KEY, load_many
from motoko.study.zeo_buffers import MemoryTransactionBuffer

log = logging.getLogger(__name__)

#: Stores handed to the network thread at once.
STORE_BATCH = 200
#: A transaction's new objects past this many stored are not copied into
#: ZEO's cache at its end (they stay in the connection's own object cache;
#: another connection loads them from the server). Inserting 10,000 runs
#: stores ~24,000 new objects, and copying each into the cache (Python, in
#: the network thread, evicting older entries to make room) held the commit
#: back: ~11 % of an insert's samples. Small transactions (claims, settles, a
#: hop's insert) are copied whole, as ZEO does.
CACHED_NEW = 1000
#: At most this many ``new_oids`` requests (100 ids each) in flight ahead of use.
OID_AHEAD = 8


class BatchedClientStorage(ClientStorage):  # type: ignore[misc]
    """``ClientStorage`` with batched stores and ids asked for ahead (see the module doc)."""

    def __init__(self, *args: Any, **kw: Any):
        self._store_lock = threading.RLock()
        self._queued: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}  # id(txn) → storea messages
        self._oid_lock = threading.Lock()
        self._oid_requests: deque[Any] = deque()  # futures of new_oids, oldest first
        self._oid_ahead = 0
        self._load_many = False  # the server answers bulk loads (told when connecting)
        super().__init__(*args, **kw)
        # Every message but a store first sends the queued stores (in order).
        # (set by ClientStorage.__init__; read through vars() for the type checker)
        call, send, send_iter = (vars(self)[name] for name in ("_call", "_async", "_async_iter"))
        self._raw_async_iter = send_iter

        def flushed_call(*args: Any, **kw: Any) -> Any:
            self._send_queued()
            return call(*args, **kw)

        def flushed_async(*args: Any) -> Any:
            self._send_queued()
            return send(*args)

        def flushed_async_iter(it: Any) -> Any:
            self._send_queued()
            return send_iter(it)

        self._call, self._async, self._async_iter = flushed_call, flushed_async, flushed_async_iter

    def notify_connected(self, conn: Any, info: dict[str, Any]) -> None:
        """ZEO's hook on (re)connecting: note whether this server answers bulk loads."""
        self._load_many = bool(info.get(INFO_KEY))
        super().notify_connected(conn, info)

    def prefetch(self, oids: Any, tid: bytes) -> None:
        """Storage API: load ``oids`` into the cache, many per message (see :mod:`~motoko.study.bulk_loads`).

        Unlike ZEO's, it returns once they are there: its callers read them
        next, and a read of an object still on its way would ask for it again.
        """
        if not self._load_many:
            super().prefetch(oids, tid)
            return
        server = self._server
        try:
            server.io_call(load_many(server.client, tuple(oids), tid))
        except Exception:  # noqa: BLE001 (as ZEO's prefetch: the reads themselves fail, saying why)
            log.debug("prefetch failed", exc_info=True)

    def store(self, oid: bytes, serial: bytes, data: bytes, version: str, txn: Any) -> None:
        """Storage API: queue the object's store; it travels with the next batch."""
        assert not version
        tbuf = self._check_trans(txn, "store")
        with self._store_lock:
            queued = self._queued.setdefault(id(txn), [])
            queued.append(("storea", (oid, serial, data, id(txn))))
            full = len(queued) >= STORE_BATCH
        # A big insert's new objects are not copied into ZEO's cache (see CACHED_NEW).
        tbuf.store(oid, None if serial == z64 and tbuf.count >= CACHED_NEW else data)
        if full:
            self._send_queued()

    def _send_queued(self) -> None:
        """Hand every queued store to the network thread, oldest first."""
        if not self._queued:
            return
        with self._store_lock:
            batches, self._queued = list(self._queued.values()), {}
            for batch in batches:
                self._raw_async_iter(iter(batch))

    def tpc_begin(self, txn: Any, tid: Any = None, status: str = " ") -> None:
        """Storage API: begin a transaction; its message travels with its first stores.

        As ZEO's ``tpc_begin`` does, but the transaction's objects are kept
        in memory (:class:`MemoryTransactionBuffer`) from the start, and the
        ``tpc_begin`` message is queued ahead of the stores instead of sent on
        its own. Why: ZEO made a buffer with a temporary file that was closed
        at once, and handed the message to its network thread alone (a
        wake-up and a thread switch): together a sixth of the client's CPU
        in a small commit. The server sees the same messages in the same
        order (the queue is sent before any other message of this client);
        it takes no lock at ``tpc_begin``, so sending it later changes nothing
        it does.
        """
        if self._is_read_only:
            raise ReadOnlyError()
        if not hasattr(txn, "set_data"):  # a recovery's transaction (copyTransactionsFrom): ZEO's way
            super().tpc_begin(txn, tid, status)
            return
        try:
            if txn.data(self) is not None:
                raise StorageTransactionError("Duplicate tpc_begin calls for same transaction")
        except KeyError:
            pass
        buffer = MemoryTransactionBuffer(self._connection_generation)
        txn.set_data(self, buffer)
        self._commit_lock.acquire()  # one transaction at a time per client, as ZEO
        self._tbuf = buffer
        with self._store_lock:
            self._queued[id(txn)] = [("tpc_begin", (id(txn), txn.user, txn.description, txn.extension, tid, status))]

    def tpc_abort(self, txn: Any, *args: Any, **kw: Any) -> Any:
        """Storage API: abort; stores not sent yet are dropped (the server drops the rest)."""
        with self._store_lock:
            self._queued.pop(id(txn), None)
        return super().tpc_abort(txn, *args, **kw)

    def new_oid(self) -> bytes:
        """Storage API: a new object id, from batches asked for ahead of need."""
        if self._is_read_only:
            return bytes(super().new_oid())  # raises ReadOnlyError
        with self._oid_lock:
            while not self._oids:
                self._refill_oids()
            return bytes(self._oids.pop())

    def _refill_oids(self) -> None:
        """Take the oldest batch asked for (or ask now), and ask for more ahead."""
        ids = None
        while self._oid_requests and ids is None:
            try:
                ids = self._oid_requests.popleft().result()
            except Exception:  # noqa: BLE001 (lost connection: ask again below, as ZEO would)
                self._oid_requests.clear()
        if ids is None:
            ids = self._call("new_oids")
        self._oids[:0] = reversed(ids)
        # A process that keeps asking gets more ahead each time; one that
        # needed a batch once asks for one more.
        self._oid_ahead = min(OID_AHEAD, self._oid_ahead + 1)
        self._send_queued()
        while len(self._oid_requests) < self._oid_ahead:
            self._oid_requests.append(self._server.call("new_oids", wait=False))

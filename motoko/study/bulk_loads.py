"""Many objects asked for in one message, both ends of ZEO.

ZEO's ``prefetch`` sends one ``loadBefore`` message per object, and each
answer comes back in its own message, decoded by the client's network thread
and stored in its cache one at a time. Reading 1,000 runs and their 1,000
jobs (``motoko select``) thus costs the server and the client ~2,000
messages each, in Python at both ends: on a slow VM, most of the select.

Here the same loads travel :data:`CHUNK` objects per message:

* the server's :class:`BulkZEOStorage` answers ``loadBeforeMany(oids, tid)``
  with the list of what ``loadBefore`` answers for each (None for an object
  it does not have: a prefetch never fails, the later read says why), and
  says in its ``get_info`` that it can (:data:`INFO_KEY`);
* the client's :func:`load_many` sends the chunks from the network thread
  and stores each answer in ZEO's cache in the callback of its reply, as
  ZEO stores the answer to a single ``loadBefore``: an invalidation that
  arrives after the reply is applied after the store, never before.

A client that reaches a server without the method (one started by an older
motoko) keeps ZEO's way.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from ZEO.StorageServer import StorageServer, ZEOStorage, registered_methods
from ZODB.POSException import POSKeyError

log = logging.getLogger(__name__)

#: The server method, and the key of ``get_info`` that says a server has it.
METHOD = "loadBeforeMany"
INFO_KEY = "motoko_load_many"
#: Objects per message: the server's loop answers no other client while it
#: reads one chunk (~250 loads, a few ms), so chunks stay small.
CHUNK = 250


class BulkZEOStorage(ZEOStorage):  # type: ignore[misc]
    """ZEO's per-client server object, also answering :data:`METHOD`."""

    def setup_delegation(self) -> None:
        super().setup_delegation()
        self.connection.methods = registered_methods | {METHOD}

    def get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super().get_info()
        info[INFO_KEY] = 1
        return info

    def loadBeforeMany(self, oids: Sequence[bytes], tid: bytes) -> list[Any]:  # noqa: N802 (ZEO's naming)
        """What ``loadBefore(oid, tid)`` answers for each oid, None where it has no record."""
        self.stats.loads += len(oids)
        found: list[Any] = []
        for oid in oids:
            try:
                found.append(self.storage.loadBefore(oid, tid))
            except POSKeyError:
                found.append(None)
        return found


class BulkStorageServer(StorageServer):  # type: ignore[misc]
    """ZEO's server, its clients served by :class:`BulkZEOStorage`."""

    def create_client_handler(self) -> BulkZEOStorage:
        return BulkZEOStorage(self, self.read_only)


def _store(cache: Any, oids: Sequence[bytes], future: Any) -> None:
    """Put a chunk's answers in ZEO's cache (run by the network thread, as the reply arrives)."""
    try:
        answers = future.result()
    except Exception:  # noqa: BLE001 (a prefetch: the later read fails, saying why)
        return
    for oid, answer in zip(oids, answers, strict=True):
        if answer:
            data, start, end = answer
            cache.store(oid, start, end, data)


async def load_many(client: Any, oids: Sequence[bytes], tid: bytes) -> None:
    """Load ``oids`` as of before ``tid`` into the cache of ZEO's ``client`` (its ``ClientIO``).

    Runs in the client's network thread. Objects the cache already holds are
    not asked for.
    """
    if not client.operational:
        return  # the reads wait for the server, or fail saying it is gone
    cache = client.cache
    wanted = [oid for oid in oids if cache.loadBefore(oid, tid) is None]
    replies = []
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        reply = client.protocol.call_sync(METHOD, (chunk, tid))
        reply.add_done_callback(functools.partial(_store, cache, chunk))
        replies.append(reply)
    for reply in replies:
        try:
            await reply
        except Exception:  # noqa: BLE001 (as ZEO's prefetch: logged, the read itself fails)
            log.debug("bulk load failed", exc_info=True)

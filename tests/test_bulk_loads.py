"""Many objects per message (motoko.study.bulk_loads), against real ZEO servers.

A prefetch through motoko's server must bring every object into the client's
cache in a message per :data:`~motoko.study.bulk_loads.CHUNK` objects, give
exactly what single loads give, never hide a later commit, and never fail;
against a server without the method (ZEO's own), prefetching keeps ZEO's way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import ZEO
from persistent.mapping import PersistentMapping

from motoko.study import bulk_loads
from motoko.study.database import StudyDB
from motoko.study.prefetch import prefetch

COUNT = 600


def _fill(address: Any) -> list[bytes]:
    """Store COUNT small objects under the root; their oids."""
    with StudyDB(address) as db:

        def add() -> None:
            db.conn.root()["items"] = [PersistentMapping({"n": n, "pad": "x" * n}) for n in range(COUNT)]

        db.transact(add)
        return [item._p_oid for item in db.conn.root()["items"]]


class _Messages:
    """The names of the messages a client's network thread sends (spied on its protocol)."""

    def __init__(self, db: StudyDB):
        self.names: list[str] = []
        protocol = db.db.storage._server.client.protocol
        original = protocol.call_sync

        def spy(method: str, args: Any, *rest: Any, **kw: Any) -> Any:
            self.names.append(method)
            return original(method, args, *rest, **kw)

        protocol.call_sync = spy


def _items(db: StudyDB) -> list[Any]:
    db.tm.begin()
    return list(db.conn.root()["items"])


def test_a_prefetch_brings_every_object_in_a_message_per_chunk(address):
    _fill(address)
    with StudyDB(address) as db:
        items = _items(db)
        storage = db.db.storage
        assert storage._load_many  # motoko's server said it answers bulk loads
        sent = _Messages(db)
        prefetch(items)
        assert sent.names == [bulk_loads.METHOD] * math.ceil(COUNT / bulk_loads.CHUNK)
        assert [item["n"] for item in items] == list(range(COUNT))  # read from the cache
        assert sent.names.count("loadBefore") == 0
        prefetch(items)  # all loaded: nothing asked again
        assert len(sent.names) == math.ceil(COUNT / bulk_loads.CHUNK)


def test_prefetched_objects_are_the_ones_single_loads_give(address):
    oids = _fill(address)
    with StudyDB(address) as bulk, StudyDB(address) as single:
        bulk.tm.begin()
        bulk.db.storage.prefetch(oids, bulk.conn._storage._start)
        start = bulk.conn._storage._start
        for oid in oids:
            assert bulk.db.storage._cache.loadBefore(oid, start) == single.db.storage.loadBefore(oid, start)


def test_a_commit_after_the_prefetch_is_seen_not_the_prefetched_state(address):
    _fill(address)
    with StudyDB(address) as reader, StudyDB(address) as writer:
        items = _items(reader)
        prefetch(items)
        writer.transact(lambda: writer.conn.root()["items"][7].__setitem__("n", "changed"))
        reader.catch_up()
        assert _items(reader)[7]["n"] == "changed"
        assert _items(reader)[8]["n"] == 8


def test_an_object_the_server_does_not_have_fails_only_its_own_read(address):
    oids = _fill(address)
    with StudyDB(address) as db:
        db.tm.begin()
        start = db.conn._storage._start
        db.db.storage.prefetch([b"\xff" * 8, *oids[:10]], start)  # no error
        assert all(db.db.storage._cache.loadBefore(oid, start) is not None for oid in oids[:10])
        assert db.db.storage._cache.loadBefore(b"\xff" * 8, start) is None


@pytest.fixture
def zeo_s_own_server(tmp_path) -> Iterator[str]:
    """A plain ZEO server (ZEO's own StorageServer, in a thread of this process), stopped afterwards."""
    address, stop = ZEO.server(path=str(tmp_path / "plain.fs"))
    try:
        yield f"zeo://{address[0]}:{address[1]}"
    finally:
        stop()


def test_against_zeo_s_own_server_a_prefetch_keeps_zeo_s_way(zeo_s_own_server):
    _fill(zeo_s_own_server)
    with StudyDB(zeo_s_own_server) as db:
        items = _items(db)
        assert not db.db.storage._load_many
        sent = _Messages(db)
        prefetch(items)
        assert bulk_loads.METHOD not in sent.names
        assert [item["n"] for item in items] == list(range(COUNT))


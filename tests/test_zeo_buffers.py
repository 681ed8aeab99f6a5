"""ZEO's transaction buffers kept in memory (motoko.study.zeo_buffers, motoko.study.zeo_main).

Each is driven side by side with ZEO's own buffer (a real one, writing its
temporary file) through the same calls, and must give back the same records
in the same order, below the memory limit and past it (where the rest goes
to a temporary file as ZEO's does).
"""

from __future__ import annotations

from typing import Any

import pytest
from ZEO.StorageServer import CommitLog
from ZEO.TransactionBuffer import TransactionBuffer

from motoko.study import zeo_buffers
from motoko.study.zeo_buffers import MemoryTransactionBuffer
from motoko.study.zeo_main import MemoryCommitLog

LIMITS = [zeo_buffers.MEMORY_LIMIT, 100]


@pytest.mark.parametrize("limit", LIMITS)
def test_the_client_buffer_gives_what_zeo_s_gives(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same records, same order, an object resolved on the client once (its last state),
    deletions and objects resolved by the server included."""
    monkeypatch.setattr(zeo_buffers, "MEMORY_LIMIT", limit)
    ours, theirs = MemoryTransactionBuffer(3), TransactionBuffer(3)
    for buffer in (ours, theirs):
        for i in range(20):
            buffer.store(b"%08d" % i, b"x" * (i * 7))
        buffer.store(b"gone0000", None)
        buffer.resolve(b"00000004", b"resolved")
        buffer.server_resolve(b"00000005")
        buffer.server_resolve(b"undone00")
    try:
        assert list(ours) == list(theirs)
        assert (ours.count, ours.size, ours.connection_generation) == (theirs.count, theirs.size, 3)
        assert ours.spilled == (limit == 100)
    finally:
        ours.close()
        theirs.close()
    assert list(ours.records) == []


@pytest.mark.parametrize("limit", LIMITS)
def test_the_server_log_gives_what_zeo_s_gives(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zeo_buffers, "MEMORY_LIMIT", limit)
    ours, theirs = MemoryCommitLog(), CommitLog()
    calls: list[tuple[str, tuple[Any, ...]]] = [
        *(("store", (b"%08d" % i, b"s" * 8, b"d" * (i * 9))) for i in range(20)),
        ("delete", (b"00000001", b"s" * 8)),
        ("checkread", (b"00000002", b"s" * 8)),
        ("restore", (b"00000003", b"s" * 8, b"data", b"p" * 8)),
        ("undo", (b"t" * 8,)),
    ]
    for log in (ours, theirs):
        for name, args in calls:
            getattr(log, name)(*args)
    try:
        assert list(ours) == list(theirs) and ours.stores == theirs.stores == len(calls)
        assert ours.records.spilled == (limit == 100)
        assert ours.size() > 20 * 19 * 9 / 2
    finally:
        ours.close()
        theirs.close()
    assert ours.file is None  # what ZEO's own close() leaves


def test_records_past_the_limit_come_back_whole_and_the_file_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zeo_buffers, "MEMORY_LIMIT", 1000)
    records = zeo_buffers.SpillingRecords()
    for i in range(100):
        records.add((b"%d" % i, b"v" * 100), 100)
    assert records.spilled and len(records.memory) == 11  # the one that passed the limit, and those before
    assert list(records) == [(b"%d" % i, b"v" * 100) for i in range(100)]
    assert list(records) == list(records)  # read twice (a retried vote reads again)
    spill = records._file
    records.close()
    assert spill.closed and list(records) == []


def _cached(db: Any, oid: bytes) -> bytes | None:
    """The state ZEO's cache holds for ``oid`` as current, or None."""
    found = db.db.storage._cache.load(oid)
    return found[0] if found else None


def test_a_big_transaction_s_new_objects_are_not_copied_into_zeo_s_cache(address: Any) -> None:
    """Past CACHED_NEW new objects, a commit leaves them out of ZEO's cache; changed ones are still copied,
    and every object reads back right, here and from another client."""
    from persistent.mapping import PersistentMapping

    from motoko.study.batched_storage import CACHED_NEW
    from motoko.study.database import StudyDB

    with StudyDB(address) as db, StudyDB(address) as other:
        db.transact(lambda: db.conn.root().__setitem__("old", PersistentMapping({"n": 0})))
        old = db.conn.root()["old"]

        def insert() -> None:
            old["n"] = 1  # a changed object, stored first
            db.conn.root()["new"] = [PersistentMapping({"n": n}) for n in range(CACHED_NEW + 200)]

        db.transact(insert)
        new = db.conn.root()["new"]
        assert _cached(db, old._p_oid) is not None  # changed: copied, as ZEO does
        cached = sum(_cached(db, item._p_oid) is not None for item in new)
        assert CACHED_NEW - 5 <= cached <= CACHED_NEW  # the first stored (root and list among them), not the rest
        other.catch_up()
        assert [item["n"] for item in other.conn.root()["new"]] == list(range(CACHED_NEW + 200))
        assert other.conn.root()["old"]["n"] == 1


def test_a_small_transaction_s_new_objects_are_copied_into_zeo_s_cache(address: Any) -> None:
    from persistent.mapping import PersistentMapping

    from motoko.study.database import StudyDB

    with StudyDB(address) as db:
        db.transact(lambda: db.conn.root().__setitem__("few", [PersistentMapping({"n": n}) for n in range(10)]))
        assert all(_cached(db, item._p_oid) is not None for item in db.conn.root()["few"])

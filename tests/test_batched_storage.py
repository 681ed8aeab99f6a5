"""Batched stores and ids asked for ahead (motoko.study.batched_storage), against a real ZEO server."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from BTrees.IOBTree import IOBTree
from persistent.mapping import PersistentMapping

from motoko.errors import ServerError
from motoko.study import batched_storage
from motoko.study.database import StudyDB
from motoko.study.server import ensure_server, server_status


def _fill(db: StudyDB, key: str, n: int, value: int) -> None:
    """Store ``n`` new objects (more than a batch) under root[key] in one transaction."""

    def change() -> None:
        tree = IOBTree()
        for i in range(n):
            tree[i] = PersistentMapping({"v": value, "i": i})
        db.conn.root()[key] = tree

    db.transact(change)


def _read(address: object, key: str) -> list[tuple[int, int]]:
    with StudyDB(address) as other:  # type: ignore[arg-type]
        return [(m["i"], m["v"]) for m in other.conn.root()[key].values()]


def test_a_transaction_of_many_batches_lands_whole_and_in_order(address):
    n = 5 * batched_storage.STORE_BATCH + 7
    with StudyDB(address) as db:
        _fill(db, "objects", n, 1)
        oids = {m._p_oid for m in db.conn.root()["objects"].values()}
    assert len(oids) == n, "every object got its own id"
    assert _read(address, "objects") == [(i, 1) for i in range(n)]


def test_a_commit_failing_among_queued_stores_writes_nothing(address):
    with StudyDB(address) as db:
        _fill(db, "kept", 10, 1)

        def change() -> None:
            root = db.conn.root()
            for i in range(10):
                root["kept"][i]["v"] = 2  # stored first, queued below one batch
            root["bad"] = PersistentMapping({"f": lambda: None})  # cannot be stored: the commit fails

        with pytest.raises(Exception, match="pickle|lambda"):
            db.transact(change)
        db.abort()
        assert [v for _, v in _read(address, "kept")] == [1] * 10
        _fill(db, "after", 3, 3)  # the next transaction is unharmed
    assert _read(address, "after") == [(0, 3), (1, 3), (2, 3)]


def test_a_conflict_inside_batched_stores_is_retried_on_fresh_data(address):
    with StudyDB(address) as first, StudyDB(address) as second:
        _fill(first, "counter", 1, 0)
        second.begin()
        calls = []

        def bump() -> None:
            calls.append(1)
            second.conn.root()["counter"][0]["v"] += 1
            tree = second.conn.root()["counter"]
            for i in range(1, 2 * batched_storage.STORE_BATCH):  # batches sent before the vote
                tree[i] = PersistentMapping({"v": 0, "i": i})
            if len(calls) == 1:  # another process changes the same object meanwhile
                first.transact(lambda: first.conn.root()["counter"][0].__setitem__("v", 10), fresh=True)

        second.transact(bump)
    assert len(calls) == 2, "the first attempt conflicted"
    values = dict(_read(address, "counter"))
    assert values[0] == 11 and len(values) == 2 * batched_storage.STORE_BATCH


def test_sibling_threads_committing_large_transactions_at_once_all_land(address):
    n = 3 * batched_storage.STORE_BATCH
    errors: list[BaseException] = []
    with StudyDB(address) as db:
        siblings = [db.sibling() for _ in range(3)]

        def work(index: int, conn: StudyDB) -> None:
            try:
                _fill(conn, f"thread{index}", n, index)
            except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(siblings)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for sibling in siblings:
            sibling.close()
    assert errors == []
    for index in range(3):
        assert _read(address, f"thread{index}") == [(i, index) for i in range(n)]


def test_ids_asked_for_ahead_stay_unique_across_clients(address):
    with StudyDB(address) as one, StudyDB(address) as two:
        ids = [one.db.storage.new_oid() for _ in range(450)] + [two.db.storage.new_oid() for _ in range(450)]
        ids += [one.db.storage.new_oid() for _ in range(450)]
    assert len(set(ids)) == len(ids)
    assert all(len(oid) == 8 for oid in ids)


def test_a_server_killed_during_a_large_commit_leaves_nothing_of_it(workdir, monkeypatch):
    monkeypatch.setenv("MOTOKO_SERVER_WAIT", "2")
    address = ensure_server(workdir)
    n = 3 * batched_storage.STORE_BATCH
    with StudyDB(address) as db:
        _fill(db, "before", n, 1)

        def change() -> None:
            for mapping in db.conn.root()["before"].values():
                mapping["v"] = 9  # several batches of stores, none voted
            os.kill(server_status(workdir).pid, signal.SIGKILL)

        with pytest.raises(ServerError, match="lost the database server"):
            db.transact(change, attempts=2)
    ensure_server(workdir)
    assert [v for _, v in _read(address, "before")] == [1] * n


def test_a_conflict_resolved_by_the_client_reaches_the_cache_resolved(address):
    """A counter changed by two clients at once: the second commit's state is resolved on the
    client (a Length merges), and its cache holds the merged value, not its own."""
    from BTrees.Length import Length

    with StudyDB(address) as first, StudyDB(address) as second:
        first.transact(lambda: first.conn.root().__setitem__("n", Length(0)))
        second.abort()
        first.conn.root()["n"].change(1)
        second.conn.root()["n"].change(10)
        first.conn.transaction_manager.commit()
        second.conn.transaction_manager.commit()
        second.conn.cacheMinimize()
        assert second.conn.root()["n"]() == 11
        with StudyDB(address) as third:
            assert third.conn.root()["n"]() == 11


def test_a_small_commit_sends_its_begin_with_its_stores_and_makes_no_file(address, monkeypatch):
    """tpc_begin travels in the first batch, ahead of the stores, and ZEO's file-backed buffer is not made."""
    from ZEO.TransactionBuffer import TransactionBuffer

    def no_file(*args: object, **kw: object) -> None:
        raise AssertionError("a small commit made ZEO's buffer (a temporary file)")

    with StudyDB(address) as db:
        _fill(db, "small", 2, 1)
        storage = db.db.storage
        batches: list[list[tuple[str, tuple[object, ...]]]] = []
        raw = storage._raw_async_iter

        def recorded(messages: object) -> None:
            batch = list(messages)  # type: ignore[call-overload]
            batches.append(batch)
            raw(iter(batch))

        monkeypatch.setattr(storage, "_raw_async_iter", recorded)
        monkeypatch.setattr(TransactionBuffer, "__init__", no_file)
        db.transact(lambda: db.conn.root()["small"][0].__setitem__("v", 5))
    monkeypatch.undo()
    assert len(batches) == 1, "begin and stores were handed to the network thread at once"
    names = [name for name, _ in batches[0]]
    assert names[0] == "tpc_begin" and set(names[1:]) == {"storea"} and len(names) >= 2
    assert _read(address, "small") == [(0, 5), (1, 1)]


def test_a_commit_failing_after_its_begin_was_sent_leaves_the_server_ready(address):
    """More stores than a batch send the begin mid-transaction; a failure then aborts it on the server too."""
    n = batched_storage.STORE_BATCH + 5
    with StudyDB(address) as db:
        _fill(db, "many", n, 1)

        def change() -> None:
            for mapping in db.conn.root()["many"].values():
                mapping["v"] = 2  # a batch is sent before the failing object is reached
            db.conn.root()["bad"] = PersistentMapping({"f": lambda: None})

        with pytest.raises(Exception, match="pickle|lambda"):
            db.transact(change)
        db.abort()
        _fill(db, "after", 2, 7)
    assert [v for _, v in _read(address, "many")] == [1] * n
    assert _read(address, "after") == [(0, 7), (1, 7)]


def test_a_transaction_begun_twice_on_one_client_is_refused(address):
    import transaction
    from ZODB.POSException import StorageTransactionError

    with StudyDB(address) as db:
        storage = db.db.storage
        txn = transaction.TransactionManager().begin()
        storage.tpc_begin(txn)
        try:
            with pytest.raises(StorageTransactionError, match="Duplicate tpc_begin"):
                storage.tpc_begin(txn)
        finally:
            storage.tpc_abort(txn)
        _fill(db, "after", 1, 1)  # the client's commit lock was released by the abort
    assert _read(address, "after") == [(0, 1)]


def test_a_read_only_client_cannot_begin_a_transaction(address):
    import transaction
    from ZODB.POSException import ReadOnlyError

    storage = batched_storage.BatchedClientStorage(address.zeo(), read_only=True, wait_timeout=10)
    try:
        with pytest.raises(ReadOnlyError):
            storage.tpc_begin(transaction.TransactionManager().begin())
        assert not storage._queued, "nothing was queued for the server"
    finally:
        storage.close()

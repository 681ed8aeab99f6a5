"""Batched loads: which buckets a read asks for, and what an indexed select loads.

Speed itself is shown by ``benchmarks/db_scale.py``; these tests check the
structure behind it against a real ZEO server: ``prefetch_buckets`` asks for
exactly the buckets that hold the keys about to be read, and a select
answered by the state index takes its runs from the index without loading the
study's ``runs`` tree.
"""

from __future__ import annotations

from typing import Any

from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOTreeSet

from motoko.study.database import StudyDB
from motoko.study.prefetch import prefetch, prefetch_buckets
from motoko.study.records import FINISHED, LAUNCHED
from motoko.study.schema import parse_schema


def _store(address: Any, name: str, tree: Any) -> None:
    with StudyDB(address) as db:
        db.transact(lambda: db.conn.root().__setitem__(name, tree))


def _bucket_keys(tree: Any) -> dict[bytes, list[Any]]:
    """Bucket oid → its keys, following the bucket chain (loads every bucket)."""
    out: dict[bytes, list[Any]] = {}
    tree._p_activate()
    state = tree.__getstate__()
    bucket = state[1] if state and len(state) > 1 else None
    while bucket is not None:
        bucket._p_activate()
        bstate = bucket.__getstate__()
        keys = list(bstate[0][::2]) if isinstance(tree, IOBTree) else list(bstate[0])
        out[bucket._p_oid] = keys
        bucket = bstate[1] if len(bstate) > 1 else None
    return out


class _Spy:
    """Records what a connection is asked to prefetch."""

    def __init__(self, db: StudyDB):
        self.oids: list[bytes] = []
        original = db.conn.prefetch

        def record(oids: Any) -> None:
            self.oids.extend(oids)
            original(oids)

        db.conn.prefetch = record  # type: ignore[method-assign]


def test_prefetch_asks_for_exactly_the_buckets_holding_the_keys(address):
    _store(address, "big", IOBTree({i: f"v{i}" for i in range(0, 40_000, 2)}))
    with StudyDB(address) as reader:
        layout = _bucket_keys(reader.conn.root()["big"])
    assert len(layout) > 100, "the tree must have many buckets and interior nodes"
    # Absent keys (odd ones, 50_000) ask for nothing more than present ones.
    wanted = [4, 5, 6, *range(1000, 39_000, 1501), 39_998, 50_000]
    # A lookup reads the bucket whose key range holds the key, present or not.
    firsts = [keys[0] for keys in layout.values()]
    bounds = zip(layout, [None, *firsts[1:]], [*firsts[1:], None], strict=True)
    expected = {
        oid for oid, lo, hi in bounds if any((lo is None or lo <= k) and (hi is None or k < hi) for k in wanted)
    }
    with StudyDB(address) as cold:
        spy = _Spy(cold)
        prefetch_buckets(cold.conn.root()["big"], keys=wanted)
        assert set(spy.oids) == expected
        assert len(spy.oids) == len(set(spy.oids))
        tree = cold.conn.root()["big"]
        assert [tree.get(k) for k in wanted] == [f"v{k}" if k % 2 == 0 and k < 40_000 else None for k in wanted]


def test_prefetch_of_a_range_covers_it_and_little_else(address):
    _store(address, "pairs", OOTreeSet((float(i), i) for i in range(20_000)))
    with StudyDB(address) as reader:
        layout = _bucket_keys(reader.conn.root()["pairs"])
    low, high = (5000.5, -1), (6200.0, 2**31)
    inside = {oid for oid, keys in layout.items() if any(low <= k <= high for k in keys)}
    with StudyDB(address) as cold:
        spy = _Spy(cold)
        prefetch_buckets(cold.conn.root()["pairs"], low=low, high=high)
        asked = set(spy.oids)
    assert inside <= asked
    assert len(asked - inside) <= 2  # at most the buckets bordering the range


def test_prefetch_skips_loaded_objects_small_batches_and_tiny_trees(address):
    _store(address, "small", IOBTree({i: i for i in range(10)}))  # one bucket, stored inline
    _store(address, "empty", IOBTree())
    _store(address, "mid", IOBTree({i: str(i) for i in range(3000)}))
    with StudyDB(address) as cold:
        spy = _Spy(cold)
        root = cold.conn.root()
        prefetch_buckets(root["small"])
        prefetch_buckets(root["empty"])
        prefetch_buckets(root["mid"], keys=[])
        assert spy.oids == []
        prefetch_buckets(root["mid"], keys=[1, 2])  # one bucket: below the batch size
        assert spy.oids == []
        mid = root["mid"]
        assert list(mid.keys()) == list(range(3000))  # every bucket loaded now
        prefetch_buckets(mid)
        prefetch([mid])
        assert spy.oids == []


def test_indexed_select_takes_runs_from_the_index_not_the_runs_tree(address):
    with StudyDB(address) as db:
        db.create_study(parse_schema("study: s\njob: {x: int}\n", check_files=False))
        db.insert("s", [{"x": i} for i in range(4000)], {}, run_name="r")

        def finish_some() -> None:
            study = db.study("s")
            for rid in range(1, 4001, 97):
                run = study.runs[rid]
                study.transition(run, LAUNCHED)
                study.transition(run, FINISHED)

        db.transact(finish_some)
    with StudyDB(address) as cold:
        spy = _Spy(cold)
        study = cold.study("s")
        runs = cold.select("s", "state = FINISHED")
        assert [r.id for r in runs] == list(range(1, 4001, 97))
        # The runs were asked for in one batch, and no bucket of the runs tree
        # was loaded to find them.
        assert {r._p_oid for r in runs} <= set(spy.oids)
        study.runs._p_activate()
        state = study.runs.__getstate__()
        children = [c for c in state[0][::2]]
        assert len(children) > 20
        assert all(c._p_changed is None for c in children), "an indexed select loaded the runs tree"
        assert [r.state for r in runs] == [FINISHED] * len(runs)
        assert all(study.runs[r.id] is r for r in runs)
        assert study.check_indexes() == []

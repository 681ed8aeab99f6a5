"""RunIndex merges concurrent changes of small state trees key by key (two real connections)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import transaction
import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

from motoko.study.run_index import RunIndex

Change = Callable[[RunIndex], object]


def _race(tmp_path: Path, initial: list[int], first: Change, second: Change) -> dict[int, int]:
    """Apply two changes from two connections that began together; return the stored result."""
    db = ZODB.DB(FileStorage(str(tmp_path / "data.fs")))
    try:
        managers = [transaction.TransactionManager() for _ in range(3)]
        setup = db.open(managers[0])
        index = RunIndex()
        for key in initial:
            index[key] = key * 10
        setup.root()["index"] = index
        managers[0].commit()
        trees = []
        for manager in managers[1:]:
            tree = db.open(manager).root()["index"]
            list(tree.keys())
            trees.append(tree)
        first(trees[0])
        managers[1].commit()
        second(trees[1])
        managers[2].commit()  # resolved, or ConflictError
        check = transaction.TransactionManager()
        return dict(db.open(check).root()["index"].items())
    finally:
        db.close()


def test_removing_the_oldest_run_no_longer_conflicts_with_other_changes(tmp_path: Path):
    # BTrees refuse this one (the first key of a bucket is removed): every launcher moving its
    # oldest run out of RUNNING used to conflict with the others.
    result = _race(tmp_path, [1, 2, 3], lambda t: t.pop(1), lambda t: t.__setitem__(4, 40))
    assert result == {2: 20, 3: 30, 4: 40}


def test_emptying_the_tree_while_another_adds(tmp_path: Path):
    result = _race(tmp_path, [1], lambda t: t.pop(1), lambda t: t.__setitem__(5, 50))
    assert result == {5: 50}


def test_both_sides_emptying(tmp_path: Path):
    assert _race(tmp_path, [1, 2], lambda t: t.pop(1), lambda t: t.pop(2)) == {}


def test_the_same_run_changed_twice_still_conflicts(tmp_path: Path):
    with pytest.raises(ConflictError):
        _race(tmp_path, [1, 2], lambda t: t.__setitem__(1, 11), lambda t: t.__setitem__(1, 12))


def test_large_trees_keep_btrees_own_rules(tmp_path: Path):
    assert RunIndex.max_leaf_size < 2000, "the tree below has several buckets"
    result = _race(tmp_path, list(range(1, 2000)), lambda t: t.pop(200), lambda t: t.pop(1500))
    assert 200 not in result and 1500 not in result and len(result) == 1997


def test_equal_values_of_different_types_are_not_the_same_change(tmp_path: Path):
    # The index judges "same value" as the run and the columns do (motoko.study.values.same):
    # 1 and True are different values, so setting one run id to each at once conflicts.
    with pytest.raises(ConflictError):
        _race(tmp_path, [1, 2], lambda t: t.__setitem__(1, 1), lambda t: t.__setitem__(1, True))
    assert _race(tmp_path, [1, 2], lambda t: t.__setitem__(1, 7), lambda t: t.__setitem__(1, 7)) == {1: 7, 2: 20}


def _buckets(tree: RunIndex) -> list[list[int]]:
    keys, bucket = [], tree._firstbucket
    while bucket is not None:
        keys.append(list(bucket.keys()))
        bucket = bucket._next
    return keys


def test_large_trees_are_made_of_run_buckets(tmp_path: Path):
    from motoko.study.run_index import RunBucket

    tree = RunIndex({key: key for key in range(1, 2000)})
    assert len(_buckets(tree)) > 1 and isinstance(tree._firstbucket, RunBucket)


def test_both_sides_removing_the_last_runs_of_a_bucket_merge(tmp_path: Path):
    # BTrees refuse this (both removed keys at a bucket's end): launchers eating
    # the CREATED index of a big study from the top conflicted on most claims.
    result = _race(tmp_path, list(range(1, 2000)), lambda t: t.pop(1999), lambda t: t.pop(1998))
    assert 1999 not in result and 1998 not in result and len(result) == 1997


def test_removing_a_later_buckets_first_run_merges_with_a_change_elsewhere_in_it(tmp_path: Path):
    initial = list(range(1, 2000))
    second_bucket = _buckets(RunIndex({key: key for key in initial}))[1]
    first, other = second_bucket[0], second_bucket[5]
    result = _race(tmp_path, initial, lambda t: t.pop(other), lambda t: t.pop(first))
    assert first not in result and other not in result and len(result) == 1997


def test_a_run_added_below_a_removed_first_run_still_conflicts(tmp_path: Path):
    # Removing a bucket's first run moves the parent's separator up to the next
    # run: a run added in between by the other side would be out of the tree's reach.
    initial = list(range(2, 4000, 2))
    low, above = _buckets(RunIndex({key: key for key in initial}))[1][:2]
    with pytest.raises(ConflictError):
        _race(tmp_path, initial, lambda t: t.pop(low), lambda t: t.__setitem__(low + 1, low + 1))
    assert low + 1 < above


def test_the_same_run_removed_twice_from_a_bucket_still_conflicts(tmp_path: Path):
    with pytest.raises(ConflictError):
        _race(tmp_path, list(range(1, 2000)), lambda t: t.pop(1500), lambda t: t.__setitem__(1500, 1))


def test_a_bucket_merge_refuses_what_could_break_the_tree_around_it():
    from motoko.study.run_index import RunBucket

    old = ((2, 20, 4, 40, 6, 60),)
    merge = RunBucket()._p_resolveConflict
    assert merge(old, ((2, 20, 4, 40),), ((4, 40, 6, 60),)) == ((4, 40),), "first and last removed: merged"
    with pytest.raises(ConflictError, match="first key"):
        merge(old, ((4, 40, 6, 60),), ((2, 20, 3, 30, 4, 40, 6, 60),))  # 3 added below the new separator 4
    with pytest.raises(ConflictError, match="emptied"):
        merge(((2, 20),), ((),), ((2, 20, 3, 30),))
    with pytest.raises(ConflictError, match="split or unlinked"):
        merge(old, ((2, 20, 4, 40), "next"), ((2, 20, 4, 40, 6, 60, 8, 80),))
    with pytest.raises(ConflictError, match="two places"):
        merge(old, ((2, 21, 4, 40, 6, 60),), ((2, 22, 4, 40, 6, 60),))

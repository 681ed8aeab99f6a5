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

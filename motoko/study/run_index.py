"""Indexes of runs that many launchers change at once without conflicting.

A study's state index holds, per state, a BTree run id → run. Small trees
(the runs LAUNCHED or RUNNING right now: a few per launcher) keep their one
bucket inside the tree object, and runs leave them in about the order they
came. BTrees refuse to merge two concurrent changes to a bucket when one of
them removes its *first* key (a parent's separator may depend on it), so the
launcher that moved the oldest run out of RUNNING conflicted with every
other launcher's commit of that moment, and retried its whole cycle.

:class:`RunIndex` merges those changes itself when the tree is one inline
bucket (no parent, no separator): changes to different run ids never
conflict; two changes to the same run id still do (a run moved twice at
once is a real conflict, caught on the run itself as well). Larger trees
keep BTrees' own rules.
"""

from __future__ import annotations

from typing import Any

from BTrees.IOBTree import IOBTree
from ZODB.POSException import ConflictError

from motoko.study.values import same

_MISSING = object()


class RunIndex(IOBTree):
    """An IOBTree (run id → run) whose small-tree conflicts are merged key by key.

    Its buckets hold up to 500 runs (BTrees' default: 60): a bucket split or
    emptied changes the tree itself, which conflicts with every launcher
    committing at that moment, so fewer, larger buckets mean fewer such
    moments (at 16 launchers, 0.25 conflict retries per run with 250, 0.20 with
    500). A bucket of 500 references is still a few kilobytes.
    """

    max_leaf_size = 500

    def _p_resolveConflict(self, old: Any, committed: Any, new: Any) -> Any:
        states = [_inline(state) for state in (old, committed, new)]
        if any(state is None for state in states):
            return super()._p_resolveConflict(old, committed, new)
        before, theirs, ours = (state for state in states if state is not None)
        merged = dict(before)
        for key in set(before) | set(theirs) | set(ours):
            was, their, our = (s.get(key, _MISSING) for s in (before, theirs, ours))
            if same(their, was):
                value = our
            elif same(our, was) or same(our, their):
                value = their
            else:
                raise ConflictError(f"run {key} changed in two places of a run index at once")
            if value is _MISSING:
                merged.pop(key, None)
            else:
                merged[key] = value
        if not merged:
            return None
        items: list[Any] = []
        for key in sorted(merged):
            items += [key, merged[key]]
        return (((tuple(items),),),)


def _inline(state: Any) -> dict[int, Any] | None:
    """The items of a tree that is empty or one inline bucket; None for a larger tree."""
    if state is None:
        return {}
    try:
        (bucket,), = state
        (items,) = bucket
    except (TypeError, ValueError):
        return None
    if not isinstance(items, tuple):
        return None
    return dict(zip(items[::2], items[1::2], strict=True))



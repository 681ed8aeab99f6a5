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
keep BTrees' own rules for the tree, but their buckets are
:class:`RunBucket`, which merge key by key too: BTrees refuses a merge in
which both sides removed keys at a bucket's end, or either removed its first
key, so the launchers emptying the CREATED index of a big study conflicted
on most claims. A bucket merge is refused only when it could break the tree
around it: a bucket emptied or split (its ``next`` changed), or a merged
first key below one the parent may have been given.
"""

from __future__ import annotations

from typing import Any

from BTrees.IOBTree import IOBTree, IOBucket
from ZODB.POSException import ConflictError

from motoko.study.values import same

_MISSING = object()


class RunBucket(IOBucket):
    """A bucket of a :class:`RunIndex`: concurrent changes to different runs merge."""

    def _p_resolveConflict(self, old: Any, committed: Any, new: Any) -> Any:  # noqa: N802
        states = [_bucket(state) for state in (old, committed, new)]
        if any(state is None for state in states):
            raise ConflictError("a run index bucket changed shape in two places at once")
        (before, before_next), (theirs, their_next), (ours, our_next) = (s for s in states if s is not None)
        if not (_same_ref(their_next, before_next) and _same_ref(our_next, before_next)):
            raise ConflictError("a run index bucket was split or unlinked while another process changed it")
        if not theirs or not ours:
            raise ConflictError("a run index bucket was emptied while another process changed it")
        merged = _merge(before, theirs, ours)
        if not merged or not _separator_kept(before, theirs, ours, merged):
            raise ConflictError("a run index bucket lost its first key while another process changed it")
        items = _items(merged)
        return (items,) if before_next is None else (items, before_next)


class RunIndex(IOBTree):
    """An IOBTree (run id → run) whose small-tree conflicts are merged key by key.

    Its buckets hold up to 500 runs (BTrees' default: 60): a bucket split or
    emptied changes the tree itself, which conflicts with every launcher
    committing at that moment, so fewer, larger buckets mean fewer such
    moments (at 16 launchers, 0.25 conflict retries per run with 250, 0.20 with
    500). A bucket of 500 references is still a few kilobytes.
    """

    max_leaf_size = 500
    _bucket_type = RunBucket

    def _p_resolveConflict(self, old: Any, committed: Any, new: Any) -> Any:
        states = [_inline(state) for state in (old, committed, new)]
        if any(state is None for state in states):
            return super()._p_resolveConflict(old, committed, new)
        before, theirs, ours = (state for state in states if state is not None)
        merged = _merge(before, theirs, ours)
        if not merged:
            return None
        return (((_items(merged),),),)


def bucket_starts(tree: Any) -> frozenset[int]:
    """The first keys of a BTree's buckets, but its first bucket's (none for a tree held in one node).

    Why: a BTree keeps each bucket's first key in the node above it, so
    removing that key rewrites the node, and every launcher whose claim of
    that moment changed one of the tree's buckets fails its commit with a
    read conflict (BTrees check that the tree did not change under a bucket
    they changed). At 16 launchers that was 37 % of all conflict retries,
    thieves taking the bottom of a part one key at a time. A launcher takes
    such keys last (see :mod:`motoko.launch.claiming`). Subtrees not loaded
    yet (a study of a million runs) are not loaded for this: their keys are
    not known.
    """
    starts: set[int] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        state = node.__getstate__()
        if state is None or len(state) < 2:  # empty, or its one bucket held inline
            continue
        children = state[0]
        starts.update(children[1::2])
        nodes.extend(child for child in children[0::2] if isinstance(child, type(tree)) and child._p_changed is not None)
    return frozenset(starts)


def _merge(before: dict[int, Any], theirs: dict[int, Any], ours: dict[int, Any]) -> dict[int, Any]:
    """Both sides' changes to the runs of an index, or ConflictError if both changed one run."""
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
    return merged


def _separator_kept(before: dict[int, Any], theirs: dict[int, Any], ours: dict[int, Any], merged: dict[int, Any]) -> bool:
    """Whether no key of ``merged`` comes before a separator either side gave the parent.

    A side that removed the bucket's first key may have raised the parent's
    separator to its own new first key; keys the other side added below it
    would then be out of the tree's reach.
    """
    first = min(before) if before else None
    return all(first is None or first in side or min(merged) >= min(side) for side in (theirs, ours))


def _items(merged: dict[int, Any]) -> tuple[Any, ...]:
    """A bucket's state: keys and values, interleaved, in key order."""
    items: list[Any] = []
    for key in sorted(merged):
        items += [key, merged[key]]
    return tuple(items)


def _bucket(state: Any) -> tuple[dict[int, Any], Any] | None:
    """A bucket state's items and next bucket; None for a state of another shape."""
    if state is None:
        return {}, None
    if not isinstance(state, tuple) or not 1 <= len(state) <= 2 or not isinstance(state[0], tuple):
        return None
    items = state[0]
    return dict(zip(items[::2], items[1::2], strict=True)), (state[1] if len(state) == 2 else None)


def _same_ref(a: Any, b: Any) -> bool:
    """Whether two references (to a next bucket) are the same; different ones refuse ``==``."""
    if a is None or b is None:
        return a is b
    try:
        return bool(a == b)
    except ValueError:  # ZODB's references to different objects refuse to compare
        return False


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

"""Ask ZEO for many objects at once before reading them.

A ZEO client loads a missing object with one round trip to the server, and
reading a cold BTree or a list of runs would pay that round trip per object,
one after the other. ``Connection.prefetch`` sends every request at once and
lets the answers arrive in the background, so later reads find them (or wait
for the one request already under way). These helpers work out *which*
objects a read will need: the ghosts of a list, or the buckets of a BTree
that hold some keys, found from the tree's interior nodes (a handful of
objects) without loading a single bucket.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Any

#: Below this many missing objects, plain loads are as fast.
_MIN_BATCH = 8


def prefetch(objects: Sequence[Any], least: int = _MIN_BATCH) -> None:
    """Request every ghost among ``objects`` (persistent objects of one connection).

    Args:
        objects: The objects a read or write is about to touch.
        least: Fewer ghosts than this are left to plain loads.
    """
    ghosts = [o for o in objects if getattr(o, "_p_jar", None) is not None and o._p_changed is None and o._p_oid is not None]
    if not ghosts or len(ghosts) < least:
        return
    jar = ghosts[0]._p_jar
    is_connected = getattr(jar.db().storage, "is_connected", None)
    if is_connected is not None and not is_connected():
        # ZEO's prefetch is fire-and-forget: without a server its task fails
        # and asyncio logs "exception was never retrieved" on the user's
        # terminal. The loads themselves then wait for the server, or fail
        # with the one error that says so.
        return
    jar.prefetch([o._p_oid for o in ghosts])


def prefetch_buckets(tree: Any, keys: Sequence[Any] | None = None, low: Any = None, high: Any = None) -> None:
    """Request the buckets of a BTree (or TreeSet) that a read will touch.

    Args:
        tree: The BTree.
        keys: Sorted keys about to be looked up: only buckets holding one of
            them are requested. ``None`` means every key in ``[low, high]``.
        low: Smallest key of interest (``None``: unbounded).
        high: Largest key of interest (``None``: unbounded).
    """
    if keys is not None and not keys:
        return
    buckets: list[Any] = []
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        node._p_activate()
        state = node.__getstate__()
        # None: empty; one element: a single bucket stored inside the tree.
        if not state or len(state) < 2:
            continue
        items = state[0]  # child0, key1, child1, key2, child2, ...
        children = items[::2]
        separators = items[1::2]
        for index, child in enumerate(children):
            start = separators[index - 1] if index > 0 else None
            stop = separators[index] if index < len(separators) else None
            if not _wanted(start, stop, keys, low, high):
                continue
            if isinstance(child, type(tree)):
                nodes.append(child)
            else:
                buckets.append(child)
    prefetch(buckets)


def _wanted(start: Any, stop: Any, keys: Sequence[Any] | None, low: Any, high: Any) -> bool:
    """Whether a child holding the keys in ``[start, stop)`` is needed."""
    if keys is not None:
        first = 0 if start is None else bisect.bisect_left(keys, start)
        return first < len(keys) and (stop is None or keys[first] < stop)
    if low is not None and stop is not None and not low < stop:
        return False
    return high is None or start is None or start <= high


def jobs_by_id(jobs_tree: Any, job_ids: Iterable[int]) -> dict[int, Any]:
    """The jobs with these ids (a study's ``jobs`` tree), fetched in two batches.

    First the tree's buckets holding the ids, then the jobs themselves: a
    table of 1,000 runs and their jobs costs a few round trips, not 1,000.
    """
    wanted = sorted(set(job_ids))
    prefetch_buckets(jobs_tree, keys=wanted)
    jobs = {jid: jobs_tree.get(jid) for jid in wanted}
    prefetch([job for job in jobs.values() if job is not None])
    return jobs

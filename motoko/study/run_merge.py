"""Merging two concurrent changes of one run, attribute by attribute, on the server.

Concurrent writers (a launcher heart-beating, the run's own process writing a
quantity, the workflow tagging it) would conflict constantly if every write
to the same run were a conflict. :meth:`Run._p_resolveConflict
<motoko.study.records.Run._p_resolveConflict>` therefore merges changes to
*different* attributes; two writers changing the same attribute still
conflict, and the state, the launcher claim and the attempt counter always
conflict when both sides touched any of them, which is what makes a claim
(CREATED → LAUNCHED) and an adoption exactly-once. "Changed" is judged by
:func:`motoko.study.values.same`, as the columns and the journal judge it.
"""

from __future__ import annotations

from typing import Any

from ZODB.POSException import ConflictError

from motoko.study.outdated_counts import TRACKED
from motoko.study.values import same

# Attributes that two concurrent transactions may never both change, even to
# the same value, nor one of them each: a claim is exclusive, so two launchers
# writing LAUNCHED must conflict for one of them, and so must a launcher
# adopting a run and a workflow declaring it LOST. What decides whether a run
# may be outdated (motoko.study.outdated_counts.TRACKED) is exclusive with
# them: each side counted the run from its own view, and a merge of both
# would leave the study's outdated counts off by one.
EXCLUSIVE = frozenset({"_state", "launcher", "attempt", "history", *TRACKED})

_MISSING = object()


def merge_run_changes(old: dict[str, Any], committed: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Return the state of a run with both ``committed``'s and ``new``'s changes of ``old``.

    The three are a run's pickled ``__dict__`` states, as ZODB gives them to
    ``_p_resolveConflict``.

    Raises:
        ConflictError: when both changed the same attribute differently,
            both touched the exclusive ones (state, launcher, attempt,
            history: even different ones of them), or
            the committed change requeued the run (a new attempt).
    """
    merged = dict(committed)
    # A requeue is a barrier: a change made while the run was in its
    # previous attempt (by a process that outlived its launcher, say)
    # must not slip into the new attempt unnoticed.
    requeued = not same(committed.get("attempt", _MISSING), old.get("attempt", _MISSING))
    keys = set(old) | set(committed) | set(new)
    mine_exclusive = {k for k in keys & EXCLUSIVE if not same(new.get(k, _MISSING), old.get(k, _MISSING))}
    theirs_exclusive = {k for k in keys & EXCLUSIVE if not same(committed.get(k, _MISSING), old.get(k, _MISSING))}
    if mine_exclusive and theirs_exclusive:
        # Who owns the run and what state it is in are one decision: a
        # launcher adopting it (launcher) and a workflow declaring it LOST
        # (state) must not both win.
        raise ConflictError(
            f"both changed who owns run or its state ({', '.join(sorted(mine_exclusive | theirs_exclusive))})"
        )
    for key in keys:
        o, c, n = old.get(key, _MISSING), committed.get(key, _MISSING), new.get(key, _MISSING)
        mine = not same(n, o)
        theirs = not same(c, o)
        if not mine:
            continue
        if requeued:
            raise ConflictError(f"run attribute {key!r} changed while the run was requeued")
        if theirs and (key in EXCLUSIVE or not same(n, c)):
            raise ConflictError(f"both changed run attribute {key!r}")
        if n is _MISSING:
            merged.pop(key, None)
        else:
            merged[key] = n
    return merged

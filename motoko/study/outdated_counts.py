"""Counts of done runs per run name and fingerprint, for the outdated check at any size.

A run is outdated when it holds a result and the study files it was made
from changed since (:mod:`motoko.flow.outdated`): its fingerprint's digest
differs from the study's current one. Finding them by reading every run of a
run name costs ~40 µs a run: seconds for a million. A study therefore keeps,
in ``study.outdated_counts``, a counter per *counted key*::

    (run name, fingerprint digest, digest it was kept for or "") → Length

of the runs that could be outdated: runs of a run name, holding a result
(:func:`holds_result`), with a fingerprint, and neither ``rerun_pending`` nor
``superseded``. Comparing the digests with the current one answers "N runs
of run name X are outdated, K kept" from a handful of small records.

Every change that moves a run between keys (a state change, a requeue, a
delete, setting one of :data:`TRACKED`) updates the counters in the same
transaction (:func:`recount`). ``Length`` objects add concurrent changes up
(BTrees' conflict resolution), so launchers settling runs at once never
conflict on them, and a new key's entry merges into its bucket like any
insert of a different key.

Studies created before the counters existed have none (``outdated_counts``
is None) and are never given any: counting their runs would be a write
nobody asked for. Their outdated check reads the runs, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree

from motoko.study.states import ACTIVE, CREATED, FAILURE

#: The run attributes (besides its state) that decide its counted key.
TRACKED = frozenset({"run_name", "fingerprint", "outdated_kept", "rerun_pending", "superseded"})

#: A run's counted key: run name, fingerprint digest, digest it was kept for ("" if never).
Key = tuple[str, str, str]


def holds_result(state: str) -> bool:
    """True for a state holding a result: FINISHED or a user state (FORWARDED...)."""
    return state != CREATED and state not in ACTIVE and state not in FAILURE


def counted_key(run: Any) -> Key | None:
    """The key ``run`` is counted under, or None when it cannot be outdated.

    A fingerprint without a digest (none was ever written so) counts under
    the digest "" , which the reader treats as "unknown: read the runs".
    """
    if not holds_result(run._state) or run.run_name is None:
        return None
    fingerprint = run.fingerprint
    if not fingerprint or run.rerun_pending is not None or run.superseded is not None:
        return None
    digest = fingerprint.get("digest") if isinstance(fingerprint, dict) else None
    return (str(run.run_name), digest if isinstance(digest, str) else "", str(run.outdated_kept or ""))


def new_counts() -> OOBTree:
    """The empty counters of a new study."""
    return OOBTree()


def key_before(study: Any, run: Any) -> Key | None:
    """The run's counted key before a change, when its study keeps counters (else None)."""
    if getattr(study, "outdated_counts", None) is None:
        return None
    return counted_key(run)


def recount(study: Any, run: Any, before: Key | None) -> None:
    """Move ``run`` from the counter of ``before`` to that of its key now, if they differ."""
    counts: OOBTree | None = getattr(study, "outdated_counts", None)
    if counts is None:
        return
    after = counted_key(run)
    if after == before:
        return
    if before is not None:
        _change(counts, before, -1)
    if after is not None:
        _change(counts, after, 1)


def prepare(study: Any, run: Any) -> None:
    """Make, with a new run, the counter it will be counted under once done.

    Launchers settling runs of one fingerprint at once then only change
    existing ``Length`` objects, which merge; two of them adding the same
    new key to the tree would conflict.
    """
    counts: OOBTree | None = getattr(study, "outdated_counts", None)
    if counts is None or run.run_name is None or not isinstance(run.fingerprint, dict):
        return
    digest = run.fingerprint.get("digest")
    key = (str(run.run_name), digest if isinstance(digest, str) else "", str(run.outdated_kept or ""))
    if counts.get(key) is None:
        counts[key] = Length()


def check(study: Any) -> list[str]:
    """Differences between a study's outdated counts and its runs, read one by one (none expected)."""
    counts: OOBTree | None = getattr(study, "outdated_counts", None)
    if counts is None:
        return []
    wanted: dict[Key, int] = {}
    for run in study.runs.values():
        key = counted_key(run)
        if key is not None:
            wanted[key] = wanted.get(key, 0) + 1
    stored = {key: int(length()) for key, length in counts.items() if length()}
    return [
        f"outdated counts of {key}: {stored.get(key, 0)} counted, {wanted.get(key, 0)} runs"
        for key in sorted(set(wanted) | set(stored))
        if stored.get(key, 0) != wanted.get(key, 0)
    ]


def _change(counts: OOBTree, key: Key, delta: int) -> None:
    length = counts.get(key)
    if length is None:
        length = counts[key] = Length()
    length.change(delta)


def counts_of(study: Any, run_name: str) -> Iterator[tuple[str, str, int]]:
    """``(digest, kept_for, runs)`` of ``run_name``'s counted runs (none when the study keeps no counters)."""
    counts: OOBTree | None = getattr(study, "outdated_counts", None)
    if counts is None:
        return
    for key, length in counts.items(min=(run_name,)):
        if key[0] != run_name:
            break
        value = int(length())
        if value:
            yield key[1], key[2], value


__all__ = ["TRACKED", "Key", "check", "counted_key", "counts_of", "holds_result", "key_before", "new_counts", "prepare", "recount"]

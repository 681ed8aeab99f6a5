"""Which CREATED runs a launcher claims: its own part of the set, and only runs that fit.

Many launchers serve one database. Two launchers wanting the same run
conflict: one of them retries its whole cycle on fresh data. Launchers that
all started at the lowest id (or at random points, which pile up) met each
other on every claim. Here each launcher claims from *its own part* of the
CREATED ids: the live launchers serving a study are ranked by id, and the
launcher ranked ``i`` of ``n`` starts at ``i/n`` of the id range, taking ids
downward from the top of its part. Parts change as launchers come and go (a
launcher re-ranks as soon as the set of launcher records changes), and a
launcher that emptied its part steals from the *bottom* of another part,
chosen at random among those with runs left: the owner eats its part from the
top, so owner and thief meet only at its last runs, and thieves spread over
the parts instead of all queueing behind the same next run (which is what
made the last runs of a study conflict on almost every claim). Work is
stolen, never left waiting.

A pilot (a launcher inside a SLURM allocation) also has a deadline: it claims
only runs whose expected duration (``walltime``) fits in the time it has left,
minus a margin, and claims nothing once that time is too short.
"""

from __future__ import annotations

import datetime as _dt
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from motoko.study.prefetch import jobs_by_id, prefetch
from motoko.study.run_index import bucket_starts
from motoko.study.walltime import run_walltime

#: Runs looked at, per wanted run, before a walltime-limited claim gives up
#: (runs too long for a pilot are skipped; the scan stays bounded).
SCAN_PER_RUN = 50
#: Claimed runs are drawn at random among this many per wanted run, at the end of a part.
SPREAD = 16
#: Seconds after a change of the ranking during which launchers may disagree on it.
SETTLE = 2.0
#: Seconds between re-ranking the live launchers (their records change on heartbeats only).
SHARE_REFRESH = 0.5


@dataclass(frozen=True)
class Share:
    """A launcher's rank among the live launchers of a database.

    Attributes:
        index: This launcher's rank (0-based).
        count: How many live launchers share the CREATED runs.
    """

    index: int = 0
    count: int = 1

    def start(self, low: int, high: int) -> int:
        """The first id of this launcher's part of ``[low, high]``."""
        return low + (high - low) * self.index // max(1, self.count)

    def next(self) -> Share:
        """The share ranked after this one (whose part begins where ours ends)."""
        return Share(self.index + 1, self.count)


class Shares:
    """Ranks a launcher among the live ones, re-read every :data:`SHARE_REFRESH` s.

    Args:
        launcher_id: This launcher's id.
        alive_for: Seconds after its last heartbeat that a launcher counts as live.
    """

    def __init__(self, launcher_id: str, alive_for: float):
        self.launcher_id = launcher_id
        self.alive_for = alive_for
        self._share = Share()
        self._read_at = -SHARE_REFRESH
        self._serial: Any = None
        self._changed_at = time.monotonic()

    def current(self, records: Any) -> Share:
        """This launcher's share, given the database's launcher records (an OOBTree)."""
        # A launcher arriving or leaving changes the tree of records (its
        # serial, while the records fit in the tree's one bucket; beyond,
        # every SHARE_REFRESH): re-rank at once, or parts disagree and
        # launchers collide.
        serial = getattr(records, "_p_serial", None)
        if time.monotonic() - self._read_at < SHARE_REFRESH and serial == self._serial:
            return self._share
        self._read_at = time.monotonic()
        self._serial = serial
        horizon = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=self.alive_for)
        prefetch(list(records.values()), least=2)  # others' heartbeats: one round trip, not one each
        live = sorted(
            key for key, record in records.items()
            if record.stopped is None and _aware(record.heartbeat) >= horizon
        )
        if self.launcher_id not in live:
            live = sorted([*live, self.launcher_id])
        share = Share(live.index(self.launcher_id), len(live))
        if share != self._share:
            self._changed_at = time.monotonic()
        self._share = share
        return self._share

    @property
    def settled(self) -> bool:
        """Whether the ranking has not changed for :data:`SETTLE` s (every launcher agrees by then)."""
        return time.monotonic() - self._changed_at >= SETTLE


def _aware(stamp: Any) -> _dt.datetime:
    if stamp is None:
        return _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=_dt.timezone.utc)


@dataclass(frozen=True)
class Deadline:
    """When a pilot's allocation ends, and how long before it stops claiming.

    Attributes:
        end: The allocation's end (seconds since the epoch).
        margin: Seconds kept free before ``end`` (settling, leaving).
    """

    end: float
    margin: float = 10.0

    def left(self) -> float:
        """Seconds a run claimed now may take."""
        return self.end - self.margin - time.time()

    def closed(self) -> bool:
        """True once nothing should be claimed any more."""
        return self.left() <= 0


def fits_within(deadline: Deadline | None, study_walltime: float | None, per_run: bool) -> Callable[[Any], bool] | None:
    """A test of whether a run fits before ``deadline``; None when every run fits.

    Args:
        deadline: The pilot's deadline (None: not a pilot).
        study_walltime: The study's expected run duration (bd.yaml ``walltime``).
        per_run: Whether runs may declare their own ``walltime`` (a run field).
    """
    if deadline is None:
        return None
    left = deadline.left()
    if not per_run:
        fits = study_walltime is None or study_walltime <= left
        return None if fits else (lambda run: False)
    return lambda run: (run_walltime(run, study_walltime) or 0.0) <= left


def pick(
    created: Any,
    want: int,
    share: Share,
    fits: Callable[[Any], bool] | None = None,
    ceiling: int | None = None,
    chooser: random.Random | None = None,
    settled: bool = False,
    steal: bool | int = True,
    leave: int = 0,
) -> list[int]:
    """Up to ``want`` ids of CREATED runs, from this launcher's own part first.

    Within its part a launcher takes the *highest* ids first: removing a
    bucket's first key conflicts with any concurrent change to that bucket
    (see :mod:`motoko.study.run_index`), so launchers eat their parts from the
    top down and meet such keys only when a bucket empties. Once its part is
    empty it takes from the *lowest* ids of the other parts, visited in an
    order drawn by ``chooser``, so that two thieves rarely pick the same part.

    Args:
        created: The study's CREATED runs (an IOBTree run id → run).
        want: How many runs the launcher has room for.
        share: This launcher's rank among the live launchers.
        fits: A test a run must pass (walltime), or None.
        ceiling: The study's highest run id: parts are cut from the lowest
            CREATED id to it, so that they stay put while launchers eat them
            from the top (cut up to the highest CREATED id, every part moved
            down each time the top launcher claimed, into its neighbour's).
        chooser: Draws the order in which other parts are stolen from, and
            the runs taken (None: the parts above, then those below, each
            from its bottom; runs in order).
        settled: Whether every launcher agrees on the shares by now: a
            launcher then eats its own part strictly from the top (drawing
            there only helps while launchers disagree on their parts).
        steal: Whether to take from other parts once this one is empty (a
            launcher only topping up its queue does not: at a study's end its
            claims would crowd the last runs that idle launchers take), or
            how many at most: a launcher claiming ahead (see
            :mod:`motoko.launch.pacing`) takes from others only what its idle
            slots start now, its queue comes from its own part alone.
        leave: Runs at the top of another part that a thief leaves to its
            owner (see :meth:`motoko.launch.pacing.Pacing.leave`): it steals
            only from the bottom of parts holding more.
    """
    if want <= 0 or not created:
        return []
    low, high = created.minKey(), created.maxKey()
    if ceiling is not None and ceiling > high:
        high = ceiling
    count = max(1, share.count)
    bounds = [Share(j, count).start(low, high) for j in range(count)] + [high + 1]
    room = want if steal is True else min(want, int(steal))  # runs it may take from other parts
    others = [j for j in (*range(share.index + 1, count), *range(share.index)) if room > 0 and bounds[j] < bounds[j + 1]]
    if chooser is not None:
        chooser.shuffle(others)
    limit = want if fits is None else want * SCAN_PER_RUN
    index = share.index
    starts = bucket_starts(created)
    own = _down(created, bounds[index + 1] - 1, bounds[index])
    picked = _draw(
        own, created, want, limit, fits, None if settled else chooser, span=bounds[index + 1] - bounds[index], starts=starts
    )
    goal = min(want, len(picked) + room)
    for j in others:
        if len(picked) >= goal:
            break
        stolen = iter(created.keys(bounds[j], bounds[j + 1] - 1))
        span = bounds[j + 1] - bounds[j]
        if leave > 0:  # only what lies below the owner's last runs
            # One more than it takes: the part's lowest id is often its
            # bucket's first key, which it then leaves (see _draw). Cut to
            # exactly what it takes, a thief with one idle slot took each
            # next first key in turn, every one rewriting the tree.
            bottom = list(islice(stolen, leave + goal - len(picked) + 1))
            stolen = iter(bottom[: max(0, len(bottom) - leave)])
            span = min(span, len(bottom) - leave)
            if span <= 0:
                continue
        picked += _draw(stolen, created, goal - len(picked), limit, fits, chooser, span=span, starts=starts)
    return picked


def _draw(
    ids: Iterator[int], created: Any, want: int, limit: int,
    fits: Callable[[Any], bool] | None, chooser: random.Random | None, span: int, starts: frozenset[int] = frozenset(),
) -> list[int]:
    """Up to ``want`` of ``ids`` that fit, drawn at random among the first few; ``starts`` last.

    Launchers whose views of the shares disagree for a moment (one just
    started) start at the same end of the same part: drawn among the first
    :data:`SPREAD` ids per wanted run, they rarely pick the same run. The
    first keys of buckets (``starts``, see
    :func:`~motoko.study.run_index.bucket_starts`) are taken
    only when nothing else is left to take: removing one rewrites the tree.
    The draw spans at most a quarter of the part (``span`` ids wide), so
    that a small part is still eaten from its end, not from its first keys.
    Without a ``chooser`` the first ids are taken in order.
    """
    if chooser is None:
        return _take(_starts_last(ids, starts), created, want, limit, fits)
    pool = list(islice(ids, max(want, min(SPREAD * want, span // 4))))
    held = [rid for rid in pool if rid in starts]
    pool = [rid for rid in pool if rid not in starts]
    chooser.shuffle(pool)
    picked = _take(iter(pool), created, want, limit, fits)
    if len(picked) < want:  # the pool did not fit enough: go on past it, then the held keys
        rest = _starts_last(ids, starts, held)
        picked += _take(rest, created, want - len(picked), limit - len(pool), fits)
    return picked


def _starts_last(ids: Iterator[int], starts: frozenset[int], held: list[int] | None = None) -> Iterator[int]:
    """``ids``, those in ``starts`` (and ``held``) after all the others."""
    later = list(held or ())
    for rid in ids:
        if rid in starts:
            later.append(rid)
        else:
            yield rid
    yield from later


def _take(ids: Iterator[int], created: Any, want: int, limit: int, fits: Callable[[Any], bool] | None) -> list[int]:
    """The first ``want`` of ``ids`` that fit, looking at ``limit`` ids at most."""
    picked: list[int] = []
    for scanned, rid in enumerate(ids):
        if len(picked) >= want or scanned >= limit:
            break
        if fits is None or fits(created[rid]):
            picked.append(rid)
    return picked


def fetch_claimed(created: Any, jobs: Any, ids: list[int]) -> list[Any]:
    """The runs ``ids`` of a study's CREATED index, with their jobs, loaded in two batches.

    A claim reads each run and its job (parameters for staging): loaded one
    by one, that was two server round trips per run inside the claiming
    transaction, the longest part of a launcher's cycle.
    """
    runs = [created[rid] for rid in ids]
    prefetch(runs)
    jobs_by_id(jobs, (run.job_id for run in runs))
    return runs


def _down(tree: Any, start: int, stop: int) -> Iterator[int]:
    """Keys of ``tree`` from ``start`` down to ``stop`` (inclusive), one lookup each."""
    key = start
    while key >= stop:
        try:
            key = tree.maxKey(key)
        except ValueError:  # no key <= key
            return
        if key < stop:
            return
        yield key
        key -= 1

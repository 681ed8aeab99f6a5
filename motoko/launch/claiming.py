"""Which CREATED runs a launcher claims: its own part of the set, and only runs that fit.

Many launchers serve one database. Two launchers wanting the same run
conflict: one of them retries its whole cycle on fresh data. Launchers that
all started at the lowest id (or at random points, which pile up) met each
other on every claim. Here each launcher claims from *its own part* of the
CREATED ids: the live launchers serving a study are ranked by id, and the
launcher ranked ``i`` of ``n`` starts at ``i/n`` of the id range, taking ids
downward from the top of its part (then from the parts above). Parts change as launchers come and go, and a
launcher that emptied its part moves on into the next one: work is stolen,
never left waiting.

A pilot (a launcher inside a SLURM allocation) also has a deadline: it claims
only runs whose expected duration (``walltime``) fits in the time it has left,
minus a margin, and claims nothing once that time is too short.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from motoko.study.walltime import run_walltime

#: Runs looked at, per wanted run, before a walltime-limited claim gives up
#: (runs too long for a pilot are skipped; the scan stays bounded).
SCAN_PER_RUN = 50
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

    def current(self, records: Any) -> Share:
        """This launcher's share, given the database's launcher records (an OOBTree)."""
        if time.monotonic() - self._read_at < SHARE_REFRESH:
            return self._share
        self._read_at = time.monotonic()
        horizon = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(seconds=self.alive_for)
        live = sorted(
            key for key, record in records.items()
            if record.stopped is None and _aware(record.heartbeat) >= horizon
        )
        if self.launcher_id not in live:
            live = sorted([*live, self.launcher_id])
        self._share = Share(live.index(self.launcher_id), len(live))
        return self._share


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


def pick(created: Any, want: int, share: Share, fits: Callable[[Any], bool] | None = None) -> list[int]:
    """Up to ``want`` ids of CREATED runs, from this launcher's own part first.

    Within its part a launcher takes the *highest* ids first: removing a
    bucket's first key conflicts with any concurrent change to that bucket
    (see :mod:`motoko.study.run_index`), so launchers eat their parts from the
    top down and meet such keys only when a bucket empties.

    Args:
        created: The study's CREATED runs (an IOBTree run id → run).
        want: How many runs the launcher has room for.
        share: This launcher's rank among the live launchers.
        fits: A test a run must pass (walltime), or None.
    """
    if want <= 0 or not created:
        return []
    low, high = created.minKey(), created.maxKey()
    top = share.next().start(low, high) if share.index + 1 < share.count else high + 1
    picked: list[int] = []
    limit = want if fits is None else want * SCAN_PER_RUN
    for scanned, rid in enumerate(chain(_down(created, top - 1, low), _down(created, high, top))):
        if len(picked) >= want or scanned >= limit:
            break
        if fits is None or fits(created[rid]):
            picked.append(rid)
    return picked


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

"""How far ahead a launcher among others claims: learned from how long its runs take.

A launcher alone on its database claims many runs ahead and holds their
outcomes back, so that one commit claims, marks RUNNING and settles a dozen
short runs (see :mod:`motoko.launch.claims`). Among other launchers the same
queue was unsafe: a run queued behind a long one waits while another
launcher idles, and a deep queue at a study's end takes more than a fair
share. So each launcher committed about once per run, and every commit is
sent to every client of the server and may conflict with another claim.

Here a launcher learns the *typical duration* of its runs, per study (the
median of its last :data:`SAMPLES` successful runs, from start to exit),
and claims ahead only as much as its slots execute in
:data:`QUEUE_BUDGET` seconds:

* no claim ahead before :data:`MIN_SAMPLES` runs of every study with runs
  waiting have ended, nor when runs are long (a queued run then waits at
  most :data:`QUEUE_BUDGET` s behind the others: never a long run's time);
* never more than a fair part of what is left: the CREATED runs divided by
  the live launchers, so that the last runs of a study spread over all.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Iterable

#: Seconds of execution a launcher among others may hold claimed and not started.
#: 0.2 s made launchers with one slot commit every 4-5 runs; at 0.4 s they
#: commit about as rarely per run as one launcher with many slots, and the
#: wait of a queued run stays short (``benchmarks.launchers``).
QUEUE_BUDGET = 0.4
#: Seconds of an owner's work that a thief leaves to it (see :meth:`Pacing.leave`):
#: shorter than the queue budget, as those runs wait at a study's end.
LEAVE_WITHIN = 0.2
#: Runs claimed beyond the free slots at most, among other launchers (alone: claims.ALONE_AHEAD)...
#: 16 made eight one-slot launchers of trivial runs commit every ~8 runs,
#: each commit sent to all eight; 32 (as deep as a launcher alone) ran them
#: 1.09-1.25x faster in 3 alternated pairs, conflicts not more (64: no faster).
#: The queue budget still bounds it for runs longer than 12 ms.
MAX_AHEAD = 32
#: ...or this many rounds of its slots, for a launcher with many (a pilot on a whole node).
ROUNDS_AHEAD = 4
#: Runs at the end of another launcher's part that a thief leaves to it, at most.
LEAVE_MAX = 32
#: Ended runs of a study, per study, whose median is its typical duration.
SAMPLES = 16
#: Ended runs of a study before its duration counts as known.
MIN_SAMPLES = 3


class Pacing:
    """The typical duration of a launcher's runs, and the claim-ahead it allows.

    Args:
        slots: The launcher's executor slots (``max_parallel``).
        budget: Seconds of queued execution allowed (:data:`QUEUE_BUDGET`).
    """

    def __init__(self, slots: int, budget: float = QUEUE_BUDGET):
        self.slots = max(1, slots)
        self.budget = budget
        self._started: dict[tuple[str, int], float] = {}
        self._durations: dict[str, deque[float]] = {}

    def started(self, key: tuple[str, int]) -> None:
        """Note that the run ``key`` (study, run id) was handed to the executor now."""
        self._started[key] = time.monotonic()

    def ended(self, key: tuple[str, int], succeeded: bool, at: float | None = None) -> None:
        """Note that the run ``key`` ended (at monotonic time ``at``; default now).

        Only successful runs that this launcher started count: a run failing
        at once, or one adopted from a dead launcher, says nothing of how
        long the study's runs take.
        """
        began = self._started.pop(key, None)
        if began is None or not succeeded:
            return
        end = time.monotonic() if at is None else at
        samples = self._durations.setdefault(key[0], deque(maxlen=SAMPLES))
        samples.append(max(0.0, end - began))

    def typical(self, study: str) -> float | None:
        """The median duration of the study's last runs; None until :data:`MIN_SAMPLES` ended."""
        samples = self._durations.get(study)
        if samples is None or len(samples) < MIN_SAMPLES:
            return None
        return statistics.median(samples)

    def ahead(self, waiting: Iterable[str]) -> int:
        """Runs to claim beyond the free slots, for runs of the studies ``waiting``.

        The slowest of those studies decides; one whose duration is not yet
        known allows no claim ahead.
        """
        longest = -1.0  # nothing waiting: nothing to claim ahead
        for study in waiting:
            typical = self.typical(study)
            if typical is None:
                return 0
            longest = max(longest, typical)
        if longest < 0.0:
            return 0
        if longest == 0.0:
            return self.most
        return min(self.most, int(self.budget * self.slots / longest))

    def leave(self, study: str) -> int:
        """Runs of another launcher's part that a launcher stealing from it leaves to its owner.

        Why: at a study's end, launchers whose parts are empty used to steal
        the last runs of the others, meeting their owners on the same runs
        and buckets (most conflict retries left at 16 launchers came then).
        The runs an owner executes within :data:`LEAVE_WITHIN` anyway (with
        one slot, as far as this launcher knows) gain nothing by moving: a
        thief takes only what lies beyond them. Unknown or long durations
        leave nothing: a slow owner's runs are taken as before.
        """
        typical = self.typical(study)
        if typical is None:
            return 0
        if typical == 0.0:
            return LEAVE_MAX
        return min(LEAVE_MAX, int(LEAVE_WITHIN / typical))

    @property
    def most(self) -> int:
        """The deepest queue ahead: :data:`MAX_AHEAD`, or :data:`ROUNDS_AHEAD` rounds of many slots.

        A pilot on a whole node (8 slots and more) would otherwise refill its
        queue every two rounds: 300 trivial runs took 1.56 s with 16 ahead,
        1.32 s with 32 (``benchmarks.pilots``, same run).
        """
        return max(MAX_AHEAD, ROUNDS_AHEAD * self.slots)


def fair_ahead(ahead: int, remaining: int, launchers: int) -> int:
    """``ahead``, cut to a fair part of the ``remaining`` CREATED runs among ``launchers``.

    A launcher's queue holds at most ``remaining // launchers`` runs, so
    that at a study's end no launcher sits on runs that idle ones could take.
    """
    return max(0, min(ahead, remaining // max(1, launchers)))

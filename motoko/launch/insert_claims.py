"""Claims inside the insert: an embedded launcher takes its workflow's new runs in the insert's commit.

A hop between dependent runs used to cost three commits: the workflow's
insert, the launcher's claim, the launcher's settle. When ``motoko run``
embeds the launcher in the workflow's process, the claim can ride in the
insert's transaction: the workflow thread moves the new runs CREATED →
LAUNCHED there, through the one transition function (``Claims._claim_one``,
as the launcher's own cycle would), and the launcher starts them without a
commit of its own.

Exactly once still holds, for the same reason as every claim: no other
launcher can see a run before the insert commits, and a claim of a run
already claimed conflicts at commit (``Run._p_resolveConflict``). What the
workflow thread claimed in an attempt that met a conflict was rolled back
with it: each attempt starts its list afresh (:meth:`InsertClaim.__call__`),
so a claim is redone on fresh data, never doubled.

The claims are handed to the launcher by the commit itself: ZODB tells the
launcher's change-feed listener of the commit in the committing thread as
soon as the server took it (``FeedStorage.tpc_finish``), and the listener
takes the :class:`Handoff`'s runs (:meth:`Handoff.commit_landed`). The
launcher's loop then queues them (:meth:`Handoff.absorb`) and starts them
as slots are free; marking them RUNNING and settling them is its next
commit, as for any run. If the commit's notice never came (the server was
lost right in its commit and the retry had nothing left to write),
:meth:`InsertClaim.finish` hands them over once the insert returned.

Only what this launcher would take itself, and could start at once, is
claimed here: the runs of its own part of the study (its share among live
launchers; see :mod:`motoko.launch.claiming`), no more than its free
slots; never by a launcher that is stopping, not local (SLURM, Dask,
pilots: their runs wait in queues where a claim buys nothing), bounded by
``max_runs``, ``once`` or ``idle_exit`` (it may leave meanwhile), or not
registered yet. Everything else is left
CREATED for the launcher's own cycle, as before.

If the workflow's process dies (kill -9) right after the commit, its runs
are LAUNCHED by a launcher that stopped heart-beating. The next launcher's
lost-run detection finds them and asks its executor first: a run that never
started (no attempt fence) is requeued and runs once more, one that did is
adopted or settled from its recorded exit status; either way it executes
once (``tests/test_insert_claims.py``, kill -9 with real processes). The
claims go to the launcher only once their commit landed: a commit that meets
a conflict hands nothing over, and the retry claims again on fresh data. If
the server is lost during the commit itself, the retry cannot know whether
the earlier attempt landed: it finds that attempt's claims on record by
their own ``launched`` stamps and hands them over then (a stamp is unique to
one claim, so it never takes a run another claim made). If the insert fails
for good (the server gone), claims that did land stay on record as a dead
launcher's would, for the next launcher to settle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from motoko.launch.claiming import Shares, pick
from motoko.launch.handoff import Handoff
from motoko.study.states import CREATED, LAUNCHED

if TYPE_CHECKING:
    from motoko.launch.launcher import Launcher
    from motoko.study.database import Study, StudyDB
    from motoko.study.records import Run


class InsertClaim:
    """The workflow's side, for one insert: called inside its transaction with the inserted runs.

    Args:
        launcher: The embedded launcher serving the study, sharing ``db``'s client.
        db: The workflow's connection the insert commits through.
        covers: Whether ``db`` held no pending changes before the insert (its
            commit then carries nothing but the insert and these claims).
    """

    def __init__(self, launcher: Launcher, db: StudyDB, covers: bool):
        self.launcher = launcher
        self.db = db
        self.covers = covers
        self.handoff: Handoff = launcher.handoff

    def __call__(self, study: Study, runs: Sequence[Run]) -> None:
        """Claim, in the running transaction, what the launcher would take and start now."""
        handoff, launcher = self.handoff, self.launcher
        for (name, rid), stamp in handoff.begin().items():
            # An earlier attempt's claim found on record as made (its very
            # ``launched`` stamp): that commit landed, its notice lost with
            # the server. Nobody else can hand this run over: this attempt does.
            run = study.runs.get(rid) if name == study.name else None
            if run is not None and run.state == LAUNCHED and run.launcher == launcher.id and run.launched == stamp:
                self._claim(study, run)
        room = _room(launcher) - handoff.pending()
        created = study.ids_in_state(CREATED)
        records = self.db.conn.root().get("motoko_launchers")
        if room > 0 and created and records is not None and launcher.id in records:
            share = Shares(launcher.id, launcher.options.lost_after).current(records)
            for rid in pick(created, room, share, ceiling=study.run_counter.value, steal=False):
                self._claim(study, created[rid])
        # Runs left CREATED (or pending changes committed along) are news to the
        # launcher: its cycle claims them as before.
        handoff.covers(self.covers and not any(run.state == CREATED for run in runs))

    def _claim(self, study: Study, run: Run) -> None:
        if run._p_oid is None:  # new in this transaction: its oid now, as the commit would give it
            self.db.conn.add(run)
        item = self.launcher._claim_one(study, run)
        self.handoff.claimed(item, run.launched)

    def finish(self) -> None:
        """The insert returned: hand over what its commit's notice did not (see the module doc).

        Then, with runs handed over, this thread lets go of the GIL once.
        Why: the launcher's loop, woken by the commit, waited for the GIL
        while this thread went on to set up its wait for those very runs
        (0.3 ms of a hop on a quiet machine, more on a busy one). Let go,
        the loop starts the runs first; the wait is set up meanwhile, as
        the loop's staging and the host's fork release the GIL. In 14
        alternated pairs of 30-hop chains, the hop was shorter in 10 and
        longer in 2 (docs/performance.md).
        """
        self.handoff.finish()
        if self.handoff.pending():
            time.sleep(0)

    def drop(self) -> None:
        """The insert raised: nothing it claimed is handed over by it."""
        self.handoff.drop()


def _room(launcher: Launcher) -> int:
    """Runs the launcher could start now (free slots less its queue), 0 if it takes none here."""
    opts = launcher.options
    if launcher._stopping or launcher.handoff.wake is None or launcher.executor.name != "local":
        return 0
    if launcher._deadline is not None or opts.max_runs is not None or opts.once or opts.idle_exit is not None:
        return 0  # a launcher that may leave on its own could leave with runs claimed for it
    return launcher.executor.free_slots() - len(launcher._queue)


def insert_claim(launchers: Iterable[Any], db: StudyDB, study: str) -> InsertClaim | None:
    """The claim an embedded launcher makes in an insert into ``study`` through ``db``, if any.

    Only a launcher of this process sharing ``db``'s database client
    (``StudyDB.sibling``) and serving the study qualifies: its commits and
    ours are the same client's, so it hears of the insert in-process.
    """
    for launcher in launchers:
        handoff = getattr(launcher, "handoff", None)
        if not isinstance(handoff, Handoff) or launcher.db.db is not db.db or study not in launcher.studies:
            continue
        if _room(launcher) <= 0:
            return None
        covers = not len(db.journal) and not getattr(db.conn, "_registered_objects", None)
        return InsertClaim(launcher, db, covers)
    return None

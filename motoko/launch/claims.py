"""What a launcher claims: how many runs, which, and what it reads of each in the claim.

A claim moves a CREATED run to LAUNCHED inside the launcher's cycle
transaction (exactly once: see :mod:`motoko.launch.launcher`); how many
runs fit and which are fair to take is decided by
:mod:`motoko.launch.claiming`. What staging needs of a claimed run is read
in the same transaction, so the run is not read again before it starts.

A launcher alone on its database claims deep ahead (:data:`ALONE_AHEAD`
runs beyond its slots). When other launchers join, it gives back what it
queued beyond the fair, paced depth of a launcher among others
(LAUNCHED → CREATED, no attempt recorded): a second host's launcher
started a moment later found every run of a small study claimed by the
first, and idled while the first ran them one after another (seen in CI,
12 runs on two one-slot launchers).
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motoko.errors import MotokoError
from motoko.launch.claiming import Deadline, Shares, fetch_claimed, fits_within, pick
from motoko.launch.pacing import Pacing, fair_ahead
from motoko.launch.recording import Recording
from motoko.launch.serving import LauncherReport
from motoko.study.database import Study
from motoko.study.records import Run, now
from motoko.study.schema import StudySchema
from motoko.study.states import CREATED, LAUNCHED
from motoko.study.values import jsonable


@dataclass
class Claimed:
    """A run this launcher claimed, with what staging needs (read in the claim)."""

    study: str
    run_id: int
    oid: bytes
    values: dict[str, Any]
    run_json: dict[str, Any]
    nproc: int
    options: tuple[str, ...]


#: Runs a local launcher serving alone claims beyond its free slots (see ``claim_ahead``).
ALONE_AHEAD = 32


class Claims(Recording):
    """The launcher's claims (see the module docstring).

    Attributes:
        _low_water: Queued runs at or below which the next cycle claims
            more; until then outcomes are held back (see the launcher).
    """

    _queue: list[Claimed]
    _low_water: int
    _alone: bool = False  # the last claim room was reckoned for a launcher alone on its database
    _claimed_alone: bool = False  # its queue holds runs claimed while alone (deep): see _to_give_back
    _ahead: dict[tuple[str, int], Any]
    _deadline: Deadline | None
    _shares: Shares
    _chooser: random.Random
    _claimed_total: int
    _pacing: Pacing
    report: LauncherReport

    def _claim_room(self, topping_up: bool = False) -> int:
        if self._stopping or (self._deadline is not None and self._deadline.closed()):
            return 0
        opts = self.options
        self._alone = False
        ahead = self._default_ahead() if opts.claim_ahead is None else opts.claim_ahead
        slots = self.executor.max_parallel
        if ahead > slots:
            # A deep queue is refilled before it runs dry, so that no slot waits
            # for a claim's commit: at most max_parallel + ahead runs owned. A
            # launcher alone refills it at half its depth: with only a slot's
            # worth left, the runs started while the claim's commit travelled
            # emptied the slots until it came back (28 % of a trivial fan-out's
            # time, on a 2-core VM). Among others, the other launchers' slots
            # work meanwhile, and refilling early would double their commits.
            self._low_water = slots + (ahead - slots) // 2 if self._alone else slots
            if len(self._queue) > self._low_water:
                return 0
            room = slots + ahead - len(self.executor.running) - len(self._queue)
        else:
            self._low_water = slots
            room = self.executor.free_slots() - len(self._queue)
            # Topping up only below half the queue keeps claims batched (each one
            # rewrites a bucket of the CREATED index).
            if room <= 0 and not (topping_up and 2 * len(self._queue) < ahead):
                return 0
            room = max(room, 0) + ahead - len(self._queue)
        if opts.max_runs is not None:
            room = min(room, opts.max_runs - self._claimed_total)
        return max(0, room)

    def _default_ahead(self) -> int:
        """:data:`ALONE_AHEAD` for a local launcher alone on its database; else paced.

        Alone, a deeper queue means fewer commits per run and is unfair to
        nobody. Among others (and in a pilot, whose claims must fit its
        remaining time), a launcher claims ahead only what its slots execute
        in a moment, and only a fair part of what is left (see
        :mod:`motoko.launch.pacing`). Runs on a scheduler queue there, not here.
        """
        base = self.executor.max_parallel
        if not self.executor.shares_host:
            return base
        launchers = self._shares.current(self.db.launchers()).count
        # Alone only from its second cycle: in its first, launchers started
        # together have not seen each other register yet, and each claimed as
        # deep as if alone (16 launchers: 0.11-0.17 conflict retries per run).
        if launchers == 1 and self._deadline is None and self.report.cycles > 1:
            self._alone = True
            return max(base, ALONE_AHEAD)
        waiting: list[str] = []
        remaining = 0
        for name in self.studies:
            with contextlib.suppress(MotokoError):
                count = self.db.study(name).count(CREATED)  # a counter: O(1)
                if count:
                    waiting.append(name)
                    remaining += count
        return fair_ahead(self._pacing.ahead(waiting), remaining, launchers)

    def _to_give_back(self) -> list[Claimed]:
        """Take off the queue the runs claimed alone that a launcher among others gives back.

        Only once others joined, only what lies beyond the depth of a
        launcher among others (:meth:`_default_ahead` then), and never a
        run whose directory is being written ahead. They leave the queue
        now, so that the loop does not start them while the cycle's
        transaction gives them back (:meth:`_give_back`); the launcher
        puts those it kept after the commit back (see the cycle).
        """
        if not self._claimed_alone or self._stopping or self.options.claim_ahead is not None:
            return []
        if not self._queue:
            self._claimed_alone = False
            return []
        if self._shares.current(self.db.launchers()).count <= 1:
            return []
        self._claimed_alone = False
        keep = max(0, self.executor.max_parallel + self._default_ahead() - len(self.executor.running))
        staged = [item for item in self._queue[keep:] if (item.study, item.run_id) in self._ahead]
        given = [item for item in self._queue[keep:] if (item.study, item.run_id) not in self._ahead]
        self._queue[keep:] = staged
        return given

    def _give_back(self, items: list[Claimed]) -> list[Claimed]:
        """Give the runs ``items`` back to CREATED (in the cycle's transaction); return those given.

        A run changed meanwhile (a stop requested, deleted) stays this
        launcher's, handled as any other queued run.
        """
        given: list[Claimed] = []
        for item in items:
            study, run = self._run_of((item.study, item.run_id))
            if run is None or run.state != LAUNCHED or run.launcher != self.id or run.stop_requested:
                continue
            study.give_back(run)
            given.append(item)
        return given

    def _claimable(self) -> bool:
        for name in self.studies:
            with contextlib.suppress(MotokoError):
                if self.db.study(name).ids_in_state(CREATED):  # bool() is O(1), len() walks buckets
                    return True
        return False

    def _claim(self, want: int, steal: bool | int = True) -> list[Claimed]:
        claimed: list[Claimed] = []
        names = list(self.studies)
        random.shuffle(names)  # fairness between studies
        share = self._shares.current(self.db.launchers())
        for name in names:
            study = self.db.study(name)
            created = study.ids_in_state(CREATED)
            if not created:
                continue
            schema = self.studies[name]
            fits = fits_within(self._deadline, schema.walltime, "walltime" in schema.run_fields)
            ids = pick(
                created, want - len(claimed), share, fits, ceiling=study.run_counter.value,
                chooser=self._chooser, settled=self._shares.settled, steal=steal,
                leave=self._pacing.leave(name),
            )
            for run in fetch_claimed(created, study.jobs, ids):
                claimed.append(self._claim_one(study, run))
            if len(claimed) >= want:
                break
        return claimed

    def _claim_one(self, study: Study, run: Run) -> Claimed:
        rid = run.id
        schema = self.studies[study.name]
        run_dir = self._run_dir(schema, rid)
        study.transition(
            run,
            LAUNCHED,
            launcher=self.id,
            machine_name=self.options.machine_name,
            heartbeat=now(),
            run_path=str(run_dir),
            exec=schema.exec_file,
        )
        if self.options.workflow_file:
            run.workflow = self.options.workflow_file
        job = run.job
        values = {**job.params, **{k: getattr(run, k, None) for k in schema.run_fields}}
        values.update({"id": rid, "run_id": rid, "job_id": job.id})
        run_json = {"study": study.name, "job": job.to_dict(), "run": jsonable(run.fields())}
        options = tuple(schema.slurm_options) + tuple(getattr(run, "slurm_options", None) or ())
        assert run._p_oid is not None
        return Claimed(study.name, rid, run._p_oid, values, run_json, int(run.nproc or 1), options)

    def _run_dir(self, schema: StudySchema, rid: int) -> Path:
        base = self.options.runs_dir or schema.folder or Path.cwd()
        return Path(base) / f"BD-{schema.name}-runs" / f"run-{rid}"


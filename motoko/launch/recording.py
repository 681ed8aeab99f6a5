"""What a launcher records in its cycle's transaction, of its runs and of itself.

Runs it started are marked RUNNING and ended ones settled (FINISHED,
FAILED, CANCELLED, LOST); orphans of dead launchers are judged (adopted or
LOST); its own launcher record is registered, heart-beaten, annotated with
the executor's note and closed at stop. Nothing here commits but the lone
heartbeat a conflicted cycle needs: the cycle (:mod:`motoko.launch.launcher`)
calls these inside its one transaction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

from ZODB.POSException import ConflictError, POSError

from motoko.errors import MotokoError
from motoko.launch.adoption import Adoption
from motoko.launch.executors.base import Executor, Outcome
from motoko.launch.launcher_options import LauncherOptions
from motoko.launch.serving import Served
from motoko.study.database import LauncherRecord, Study
from motoko.study.prefetch import prefetch
from motoko.study.records import Run, now
from motoko.study.schema import StudySchema
from motoko.study.states import (
    ACTIVE,
    CANCELLED,
    FAILED,
    FINISHED,
    LAUNCHED,
    LOST,
    RUNNING,
)

#: Seconds a pilot holds back the end of a run killed by TERM or KILL before
#: recording it as FAILED: SLURM stopping the pilot signals the run and the
#: pilot at once, and the run's end may be heard before the pilot's own TERM.
PILOT_KILL_GRACE = 2.0
#: The signals SLURM ends a job's processes with (scancel, time limit, node end).
_SLURM_KILLS = frozenset({signal.SIGTERM, signal.SIGKILL})


class Recording(Served):
    """The launcher's writes of run states and of its own record (see the module docstring)."""

    id: str
    studies: dict[str, StudySchema]
    executor: Executor
    options: LauncherOptions
    _owned: dict[tuple[str, int], bytes]
    _adoption: Adoption
    _last_heartbeat: float
    _arrivals: frozenset[bytes] | None
    #: When a held pilot's run (see :meth:`_settleable_now`) is settled anyway.
    _held_until: float | None = None

    def _unregister(self) -> None:
        def change() -> None:
            record = self._record
            if record is not None:
                record.stopped = now()
                record.executed = self.report.executed
                record.conflicts = self.report.claims_conflicts
                record.cycles = self.report.cycles

        with contextlib.suppress(Exception):
            self.db.transact(change, what="record the launcher's stop", fresh=True)

    def _conflicted(self) -> None:
        """Count a conflict retry (shown by ``motoko launcher status``), heart-beat if due."""
        self.report.claims_conflicts += 1
        self._heartbeat_alone()

    def _run_of(self, key: tuple[str, int]) -> tuple[Study, Run | None]:
        study = self.db.study(key[0])
        return study, study.runs.get(key[1])

    def _mark_running(self, keys: list[tuple[str, int]], passing: frozenset[tuple[str, int]] = frozenset()) -> None:
        """Mark the runs ``keys`` RUNNING, but those ``passing`` through it (settled in the same cycle)."""
        for key in keys:
            if key in passing:
                continue
            study, run = self._run_of(key)
            if run is not None and run.state == LAUNCHED and run.launcher == self.id:
                # The pid (a job id for schedulers): how an orphan is found if we die.
                study.transition(run, RUNNING, executor_id=self.executor.running.get(key))

    def _warm(self, keys: list[tuple[str, int]]) -> None:
        """Load, while the runs ``keys`` just started execute, what the cycle settling them reads.

        Why: an embedded launcher's runs were inserted and claimed by its
        workflow's connection; the cycle marking one RUNNING and settling it
        first loaded it and its study's state records into the launcher's
        own, ~0.3 ms of a hop's path, while the launcher had nothing to do
        as the run executed. Only when no other process committed since (no
        server round trip); anything that goes wrong is left to the cycle.
        """
        if not keys or not self.db.catches_up_locally():
            return
        with contextlib.suppress(MotokoError, POSError):
            self.db.catch_up()
            for name in {study for study, _ in keys}:
                for record in self.db.study(name).state_records():
                    record._p_activate()
            for key in keys:
                _, run = self._run_of(key)
                if run is not None:
                    run._p_activate()

    def _settle(self, outcomes: list[Outcome], passing: frozenset[tuple[str, int]] = frozenset()) -> None:
        """Record the runs' outcomes; those ``passing`` are LAUNCHED still and go through RUNNING on the way.

        Why: a short run's start and end recorded by one cycle moved it
        LAUNCHED → RUNNING → its end, and the RUNNING index and counter
        were written twice for nothing (see :meth:`Study.transition`).
        """
        for outcome in outcomes:
            key = outcome.key
            study, run = self._run_of(key)
            if run is None or run.launcher != self.id:
                continue  # deleted, or declared lost and retried elsewhere
            run.exit_code = outcome.exit_code
            if run.state == LOST and run.launcher == self.id:
                # Declared lost (e.g. this launcher was starved) but it came back:
                # its real outcome wins.
                study.transition(run, FINISHED if outcome.succeeded else FAILED, error=None if outcome.succeeded else outcome.describe())
                continue
            if run.state not in ACTIVE:
                continue  # the run set its own final or user state
            # As _mark_running would have marked it: LAUNCHED, by us (its pid is gone with it).
            via: dict[str, Any] = (
                {"through": RUNNING, "executor_id": self.executor.running.get(key)}
                if key in passing and run.state == LAUNCHED
                else {}
            )
            if outcome.cancelled or run.stop_requested:  # stopped on request, on its own or by signal
                study.transition(run, CANCELLED, error=(outcome.reason if outcome.cancelled else None) or "cancelled on request", **via)
            elif outcome.lost:
                study.transition(run, LOST, error=outcome.describe(), **via)
            elif self._killed_with_pilot(outcome):
                study.transition(
                    run, LOST, error=f"its pilot (SLURM job {self.options.pilot_job}) was stopped: {outcome.describe()}", **via
                )
            elif outcome.succeeded:
                study.transition(run, FINISHED, **via)
            else:
                error = outcome.describe()
                if outcome.stderr_tail:
                    error += "\n" + outcome.stderr_tail
                study.transition(run, FAILED, error=error, failure=outcome.extra.get("failure"), **via)

    def _killed_with_pilot(self, outcome: Outcome) -> bool:
        """A pilot's run killed by a signal while SLURM stops the pilot (scancel, time limit).

        SLURM signals every process of the job: the run did not fail, its
        allocation went away, so it is LOST (and retried if allowed), as if
        the pilot had died at once.
        """
        code = outcome.exit_code
        killed = outcome.signal is not None or (code is not None and code > 128)
        return bool(self.options.pilot_job) and self._stopping and killed

    def _settleable_now(self, outcomes: list[Outcome]) -> int:
        """How many of ``outcomes`` (from the first) a pilot may settle now.

        Why: SLURM stopping a pilot (``scancel``, its time limit) sends TERM
        to the run and to the pilot at once. When the run's end was heard
        first, the pilot was not stopping yet and recorded the run FAILED,
        so it was never retried (seen in CI). A pilot's run killed by TERM or
        KILL is held up to :data:`PILOT_KILL_GRACE` seconds: if the pilot's
        own TERM comes meanwhile, it is LOST (see :meth:`_killed_with_pilot`);
        if not, it failed. Elsewhere, and once stopping, nothing is held.
        """
        self._held_until = None
        if not self.options.pilot_job or self._stopping:
            return len(outcomes)
        for index, outcome in enumerate(outcomes):
            if _slurm_kill(outcome):
                until = outcome.ended + PILOT_KILL_GRACE
                if until > time.monotonic():
                    self._held_until = until
                    return index
        return len(outcomes)

    def _register(self) -> None:
        record = LauncherRecord(self.id, self.options.machine_name, os.getpid(), self.executor.name, list(self.studies))
        record.pilot_job = self.options.pilot_job
        record.walltime_end = self.options.walltime_end
        self.db.launchers()[self.id] = record

    @property
    def _record(self) -> LauncherRecord | None:
        record: LauncherRecord | None = self.db.launchers().get(self.id)
        return record

    def _settles_all(self, outcomes: list[Outcome]) -> bool:
        """Whether ``outcomes`` end every run this launcher owns (it is idle after them)."""
        ending = {outcome.key for outcome in outcomes}
        return all(key in ending for key in self._owned)

    def _prefetch_state_records(self) -> None:
        """Ask at once for the counters and state indexes this cycle rewrites that others changed.

        Each launcher's commit rewrites them: with eight launchers, a
        cycle loaded about seven of them one round trip at a time. The
        studies' arrival counters are noted on the way (see ``_on_change``).
        """
        records: list[Any] = []
        arrivals: set[bytes] | None = set()
        for name in self.studies:
            try:
                study = self.db.study(name)
            except MotokoError:
                arrivals = None  # not created yet: every commit may bring its runs
                continue
            records += study.state_records()
            counter = study.arrivals
            if counter is None or counter._p_oid is None:
                arrivals = None
            elif arrivals is not None:
                arrivals.add(counter._p_oid)
        self._arrivals = None if arrivals is None else frozenset(arrivals)
        prefetch(records, least=2)

    def _heartbeat(self) -> None:
        stamp = now()
        record = self._record
        if record is not None:
            record.heartbeat = stamp
            # Counted with the heartbeat only: others re-read every record that changes.
            if record.conflicts != self.report.claims_conflicts:
                record.conflicts = self.report.claims_conflicts
            record.cycles = self.report.cycles
        for key in self._owned:
            _, run = self._run_of(key)
            if run is not None and run.state in ACTIVE and run.launcher == self.id:
                run.heartbeat = stamp

    def _show_note(self) -> None:
        """Put the executor's note (sbatch refusing jobs for now...) on our record, for ``motoko status``."""
        record = self._record
        if record is not None and record.note != self.executor.note:
            record.note = self.executor.note

    def _heartbeat_alone(self) -> None:
        """Commit the launcher's heartbeat by itself, while its cycle keeps meeting conflicts.

        Nobody else writes a launcher's record, so this commit cannot
        conflict; the runs it owns stay alive through it (see liveness).
        """
        if time.monotonic() - self._last_heartbeat < self.options.heartbeat:
            return
        record = self._record
        if record is None:
            return
        record.heartbeat = now()
        record.conflicts = self.report.claims_conflicts
        try:
            self.db.tm.commit()
        except ConflictError:
            self.db.tm.abort()
            return
        self._last_heartbeat = time.monotonic()

    def _detect_lost(self) -> None:
        """Adopt, or declare LOST, the active runs whose launcher stopped heart-beating."""
        lost_after = {name: schema.lost_after or self.options.lost_after for name, schema in self.studies.items()}
        self.report.lost_detected += self._adoption.judge(self.db, lost_after, observer=self.id)


def _slurm_kill(outcome: Outcome) -> bool:
    """Whether a run ended by a signal SLURM ends jobs with (directly, or its shell's child by it)."""
    if outcome.cancelled or outcome.lost:
        return False
    if outcome.signal is not None:
        return outcome.signal in _SLURM_KILLS
    code = outcome.exit_code
    return code is not None and code - 128 in _SLURM_KILLS

"""Running finished runs again: reruns, their descendants, and undoing the last rerun.

A rerun puts a finished run back to CREATED as a new attempt
(:meth:`Study.requeue <motoko.study.container.Study.requeue>` with
``keep_results``): its ``history`` keeps the ended attempt with its results
and fingerprint, and its fingerprint becomes the study's current one.

A run's descendants cannot be executed again at once: their inputs come from
their parents' *new* results, which do not exist yet. They are marked
``rerun_pending`` instead, and :func:`requeue_pending` (called by
``createTask``) requeues them when the workflow asks for them again, which is
after their parents finished. A pending run that the workflow no longer asks
for (its parameters changed with its parents' results, so ``createTask``
created a new run) is superseded: :func:`settle_pending` clears its mark at the
end of a successful execution.

``motoko rerun`` records what it did (in the database of the workflow's first
study), so that :func:`undo_last_rerun` can give the runs their previous
results back as long as none of the new attempts has started.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from motoko.errors import RerunUndoError
from motoko.flow.outdated import Key, is_done, provenance, runs_of
from motoko.flow.session import Session
from motoko.study.fingerprint import changed_files, study_fingerprint
from motoko.study.records import CREATED, Run, now

log = logging.getLogger(__name__)

#: Where the last ``motoko rerun`` is recorded (root of the first study's database).
LAST_RERUN = "motoko_last_rerun"


def requeue(workflow: Session, study: str, ids: Iterable[int], reason: str | dict[int, str]) -> list[int]:
    """Requeue done runs as new attempts, keeping their results in ``history``; one transaction.

    Runs that are not done (CREATED, executing, failed) are left alone.
    Returns the requeued ids.
    """
    wanted = list(ids)
    if not wanted:
        return []
    db = workflow.db_for(study)
    fingerprint = study_fingerprint(workflow.schemas[study])

    def change() -> list[int]:
        records = db.study(study)
        done = []
        for rid in wanted:
            run = records.runs.get(rid)
            if run is None or not is_done(run):
                continue
            why = reason[rid] if isinstance(reason, dict) else reason
            records.requeue(run, why, keep_results=True)
            run.fingerprint = fingerprint
            for mark in ("rerun_pending", "superseded", "outdated_kept"):
                if getattr(run, mark) is not None:
                    setattr(run, mark, None)
            done.append(rid)
        return done

    return db.transact(change, what=f"rerun runs of {study!r}")


def requeue_pending(workflow: Session, study: str, runs: Sequence[Run]) -> list[int]:
    """Requeue those of ``runs`` marked ``rerun_pending`` or ``superseded`` (createTask asked for them again).

    A superseded run was not asked for by an execution after a run it
    descends from was rerun: its inputs may be stale, so it is never reused.
    Runs waiting to execute (CREATED, e.g. failed runs requeued on resume)
    take the study's current fingerprint: they will be made from the
    current files. Returns the requeued ids.
    """
    pending = {run.id: f"rerun: {run.rerun_pending}" for run in runs if run.rerun_pending is not None}
    pending.update({run.id: f"rerun: {run.superseded}" for run in runs if run.superseded is not None and run.id not in pending})
    done = requeue(workflow, study, pending, pending)
    fingerprint = study_fingerprint(workflow.schemas[study])
    _warn_outdated(study, [run for run in runs if run.id not in done], fingerprint)
    waiting = [run.id for run in runs if run.state == CREATED and run.id not in done and run.fingerprint != fingerprint]
    if waiting:
        db = workflow.db_for(study)

        def change() -> None:
            records = db.study(study)
            for rid in waiting:
                run = records.runs[rid]
                if run.state == CREATED:
                    run.fingerprint = fingerprint
                    for mark in ("rerun_pending", "superseded"):
                        if getattr(run, mark) is not None:
                            setattr(run, mark, None)

        db.transact(change, what=f"record the fingerprint of waiting runs of {study!r}")
    return done


def _warn_outdated(study: str, runs: Sequence[Run], fingerprint: dict[str, Any] | None) -> None:
    """Say so when outdated runs are reused without a decision (a Python script, not `motoko run`)."""
    if fingerprint is None:
        return
    stale = [
        run.id for run in runs
        if is_done(run) and run.outdated_kept != fingerprint["digest"] and changed_files(run.fingerprint, fingerprint)
    ]
    if stale:
        log.warning(
            "reusing %d outdated run(s) of %s (its files changed since they were made): %s; "
            "`motoko run --rerun-outdated` or `motoko rerun` runs them again",
            len(stale), study, ", ".join(map(str, stale[:12])),
        )


def settle_pending(workflow: Session) -> int:
    """Mark superseded the pending runs this execution did not ask for; returns their number.

    Their parameters changed with their parents' new results, so the workflow
    created new runs instead: they are no longer part of its results, and are
    not reported as outdated any more (see :func:`requeue_pending`).
    """
    left = [(name, run.id) for name, run in runs_of(workflow, str(workflow.run_name)) if run.rerun_pending is not None]
    for name in {n for n, _ in left}:
        db = workflow.db_for(name)
        ids = [rid for n, rid in left if n == name]

        def change(db: Any = db, name: str = name, ids: list[int] = ids) -> None:
            records = db.study(name)
            for rid in ids:
                run = records.runs[rid]
                run.superseded = f"not asked for again after it was to be rerun ({run.rerun_pending})"
                run.rerun_pending = None

        db.transact(change, what="clear superseded rerun marks")
    return len(left)


# -- motoko rerun ------------------------------------------------------------------


@dataclass
class RerunPlan:
    """What ``motoko rerun`` does.

    Attributes:
        now: Study → ids requeued at once (matching runs none of whose ancestors is rerun).
        later: Study → ids marked to run again when the workflow next asks for them.
        skipped: How many matching runs were not done (queued, executing or failed).
    """

    now: dict[str, list[int]] = field(default_factory=dict)
    later: dict[str, list[int]] = field(default_factory=dict)
    skipped: int = 0

    @property
    def total(self) -> int:
        """How many runs are rerun, at once or later."""
        return sum(len(v) for v in self.now.values()) + sum(len(v) for v in self.later.values())

    def describe(self) -> list[str]:
        """One line per study and kind."""
        lines = [f"{study}: requeue {len(ids)} run(s) now: {', '.join(map(str, ids))}" for study, ids in self.now.items()]
        lines += [
            f"{study}: run {len(ids)} descendant(s) again when the workflow next asks for them: {', '.join(map(str, ids))}"
            for study, ids in self.later.items()
        ]
        return lines


def plan_rerun(workflow: Session, constraints: Sequence[str], studies: Sequence[str], with_descendants: bool) -> RerunPlan:
    """Which runs ``motoko rerun`` would requeue; reads only.

    Every constraint is checked (in every study) before anything is decided.
    """
    matched: list[Key] = []
    skipped = 0
    for name in studies:
        for run in workflow.db_for(name).select(name, list(constraints) or None):
            if is_done(run):
                matched.append((name, run.id))
            else:
                skipped += 1
    plan = RerunPlan(skipped=skipped)
    if not matched:
        return plan
    graph, runs = provenance(runs_of(workflow, None))
    chosen = set(matched)
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    below: set[Key] = set()
    for key in matched:
        below |= {child for child in nx.descendants(graph, key) if child in runs and is_done(runs[child])}
    # A matching run below another matching run waits for it, like any descendant.
    later = (below if with_descendants else below & chosen)
    for key in sorted(chosen - later):
        plan.now.setdefault(key[0], []).append(key[1])
    for key in sorted(later):
        plan.later.setdefault(key[0], []).append(key[1])
    return plan


def apply_rerun(workflow: Session, plan: RerunPlan) -> None:
    """Requeue ``plan.now``, mark ``plan.later`` pending, and record it for :func:`undo_last_rerun`."""
    requeued: list[list[Any]] = []
    for study, ids in plan.now.items():
        for rid in requeue(workflow, study, ids, "rerun (motoko rerun)"):
            requeued.append([study, rid, workflow.db_for(study).run(study, rid).attempt])
    pending: list[list[Any]] = []
    for study, ids in plan.later.items():
        db = workflow.db_for(study)

        def change(db: Any = db, study: str = study, ids: list[int] = ids) -> list[int]:
            records = db.study(study)
            marked = []
            for rid in ids:
                run = records.runs[rid]
                if run.rerun_pending is None:
                    run.rerun_pending = "a run it descends from was rerun (motoko rerun)"
                    marked.append(rid)
            return marked

        pending += [[study, rid, db.run(study, rid).attempt] for rid in db.transact(change, what="mark descendants")]
    record = {"when": now().isoformat(), "requeued": requeued, "pending": pending}
    main = workflow.main_db
    main.transact(lambda: main.conn.root().__setitem__(LAST_RERUN, record), what="record the rerun")


def last_rerun(workflow: Session) -> dict[str, Any] | None:
    """The record of the last ``motoko rerun`` not undone, or None."""
    record: dict[str, Any] | None = workflow.main_db.conn.root().get(LAST_RERUN)
    return record


def undo_last_rerun(workflow: Session) -> int:
    """Give the runs of the last rerun their previous results back; returns how many.

    Raises:
        RerunUndoError: no rerun is recorded, or one of its new attempts has
            started (nothing is changed then).
    """
    record = last_rerun(workflow)
    if record is None:
        raise RerunUndoError("there is no rerun to undo", hint="`motoko rerun CONSTRAINTS` records one")
    studies = sorted({str(entry[0]) for entry in record["requeued"] + record["pending"]})
    # Check everything first, then change each database in one transaction
    # that checks again (a launcher may claim a run in between).
    for study in studies:
        _check_undo(workflow.db_for(study).study(study), record)
    for study in studies:
        db = workflow.db_for(study)

        def change(db: Any = db, study: str = study) -> None:
            records = db.study(study)
            _check_undo(records, record)
            for name, rid, _ in record["requeued"]:
                if name == study:
                    records.restore(records.runs[rid])
            for name, rid, _ in record["pending"]:
                if name == study:
                    records.runs[rid].rerun_pending = None

        db.transact(change, what=f"undo the rerun of {study!r}")
    main = workflow.main_db
    main.transact(lambda: main.conn.root().pop(LAST_RERUN, None), what="forget the undone rerun")
    return len(record["requeued"]) + len(record["pending"])


def _check_undo(records: Any, record: dict[str, Any]) -> None:
    """Refuse to undo once a new attempt of the rerun started (or was requeued by a workflow)."""
    for study, rid, attempt in record["requeued"]:
        run = records.runs.get(rid) if study == records.name else None
        if study == records.name and (run is None or run.attempt != attempt or run.state != CREATED):
            state = run.state if run is not None else "deleted"
            raise RerunUndoError(
                f"cannot undo the last rerun: {study}.{rid} started its new attempt {attempt} (it is {state})",
                hint="its previous results stay in its history, see `motoko runs show`",
            )
    for study, rid, attempt in record["pending"]:
        run = records.runs.get(rid) if study == records.name else None
        if study == records.name and (run is None or run.attempt != attempt):
            raise RerunUndoError(
                f"cannot undo the last rerun: {study}.{rid} was already run again",
                hint="its previous results stay in its history, see `motoko runs show`",
            )

__all__ = ["RerunPlan", "apply_rerun", "last_rerun", "plan_rerun", "requeue", "requeue_pending", "settle_pending", "undo_last_rerun"]

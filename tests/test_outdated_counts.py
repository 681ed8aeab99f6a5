"""Outdated counts (motoko.study.outdated_counts) against a real ZEO server.

Each step changes runs the way motoko does (inserts, settling, user states,
reruns, kept marks, deletes, restores) and checks the counts twice: against
the figures expected by hand, and against the runs read one by one
(``study.check_indexes()``).
"""

from __future__ import annotations

import multiprocessing

import pytest

from motoko.study.database import StudyDB
from motoko.study.outdated_counts import counts_of
from motoko.study.records import FAILED, FINISHED, LAUNCHED, RUNNING
from motoko.study.schema import parse_schema
from motoko.study.space import expand

SCHEMA = "study: demo\njob: {x: float}\n"
OLD = {"files": {"doIt.py": "sha256:old"}, "digest": "d-old", "motoko": "test"}
NEW = {"files": {"doIt.py": "sha256:new"}, "digest": "d-new", "motoko": "test"}


@pytest.fixture
def db(address):
    database = StudyDB(address)
    database.create_study(parse_schema(SCHEMA, check_files=False))
    yield database
    database.close()


def insert(db: StudyDB, xs: list[int], fingerprint: dict, run_name: str = "r1") -> list[int]:
    points = expand(db.study("demo").schema, {"x": xs})
    pairs = db.insert("demo", points, {}, run_name=run_name, extra={"fingerprint": fingerprint})
    return [run.id for run, _ in pairs]


def finish(db: StudyDB, ids: list[int], state: str = FINISHED) -> None:
    def change() -> None:
        study = db.study("demo")
        for rid in ids:
            run = study.runs[rid]
            study.transition(run, LAUNCHED)
            study.transition(run, RUNNING)
            study.transition(run, state)

    db.transact(change)


def counts(db: StudyDB, run_name: str = "r1") -> dict[tuple[str, str], int]:
    db.begin()
    return {(digest, kept): n for digest, kept, n in counts_of(db.study("demo"), run_name)}


def exact(db: StudyDB) -> list[str]:
    db.begin()
    return db.study("demo").check_indexes()


def test_counts_follow_every_change_that_makes_a_run_outdated_or_not(db):
    ids = insert(db, [1, 2, 3, 4, 5], OLD)
    assert counts(db) == {} and exact(db) == []  # CREATED runs hold no result
    finish(db, ids[:4])
    finish(db, ids[4:], FAILED)  # a failure holds no result
    assert counts(db) == {("d-old", ""): 4} and exact(db) == []

    def forward() -> None:  # a user state entered after FINISHED still holds the result
        db.study("demo").runs[ids[0]].state = "FORWARDED"

    db.transact(forward)
    assert counts(db) == {("d-old", ""): 4} and exact(db) == []

    def mark() -> None:
        runs = db.study("demo").runs
        runs[ids[1]].outdated_kept = "d-new"  # kept for the new files
        runs[ids[2]].rerun_pending = "doIt.py changed"  # to be run again: not counted

    db.transact(mark)
    assert counts(db) == {("d-old", ""): 2, ("d-old", "d-new"): 1} and exact(db) == []

    def rerun() -> None:  # the pending one is requeued, then finishes with the new files
        study = db.study("demo")
        run = study.runs[ids[2]]
        study.requeue(run, "rerun", keep_results=True)
        run.rerun_pending = None
        run.fingerprint = NEW

    db.transact(rerun)
    assert counts(db) == {("d-old", ""): 2, ("d-old", "d-new"): 1} and exact(db) == []

    def restore_and_delete() -> None:
        study = db.study("demo")
        study.restore(study.runs[ids[2]])  # back to its previous attempt: FINISHED, old fingerprint
        study.delete(study.runs[ids[3]])

    db.transact(restore_and_delete)
    assert counts(db) == {("d-old", ""): 2, ("d-old", "d-new"): 1} and exact(db) == []
    db.transact(rerun)
    finish(db, [ids[2]])
    assert counts(db) == {("d-old", ""): 1, ("d-old", "d-new"): 1, ("d-new", ""): 1} and exact(db) == []
    assert counts(db, "other") == {}


def _settle(address: str, ids: list[int], ready: object, go: object) -> None:
    """Another process: finish runs in a transaction that overlaps the test's own."""
    db = StudyDB(address)
    study = db.study("demo")
    for rid in ids:
        run = study.runs[rid]
        study.transition(run, LAUNCHED)
        study.transition(run, RUNNING)
        study.transition(run, FINISHED)
    ready.set()  # type: ignore[attr-defined]
    go.wait(30)  # type: ignore[attr-defined]
    db.tm.commit()  # a conflict would raise here: no retry
    db.close()


def test_writers_settling_runs_of_one_fingerprint_at_once_do_not_conflict(db, address):
    finish(db, insert(db, [-1], OLD))  # the study's first FINISHED run makes the state's index (that would conflict)
    ids = insert(db, list(range(40)), NEW)  # their counter is made now, not by the first to finish
    context = multiprocessing.get_context("spawn")
    ready, go = context.Event(), context.Event()
    other = context.Process(target=_settle, args=(str(address), ids[20:40], ready, go))
    other.start()
    try:
        assert ready.wait(60)
        db.begin()
        study = db.study("demo")
        for rid in ids[:20]:
            run = study.runs[rid]
            study.transition(run, LAUNCHED)
            study.transition(run, RUNNING)
            study.transition(run, FINISHED)
        go.set()
        other.join(60)
        assert other.exitcode == 0, "the other writer's commit conflicted"
        db.tm.commit()  # resolved on the server: the counters add up, no ConflictError
    finally:
        if other.is_alive():
            other.kill()
            other.join()
    assert counts(db) == {("d-old", ""): 1, ("d-new", ""): 40} and exact(db) == []


def test_a_study_made_before_the_counts_keeps_none_and_reads_report_nothing(db):
    ids = insert(db, [1, 2], OLD)

    def old_layout() -> None:
        del db.study("demo").outdated_counts  # as a study stored by an older motoko

    db.transact(old_layout)
    finish(db, ids)
    db.begin()
    study = db.study("demo")
    assert study.outdated_counts is None and list(counts_of(study, "r1")) == []
    assert study.check_indexes() == []

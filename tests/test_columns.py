"""Columns of run attributes against a real ZEO server.

Every filter on a ``run:`` field or free attribute is answered from its column
and must give exactly what checking run by run gives (the corpus below
compares both on values of every kind); columns stay equal to the runs
through assignments, deletions, concurrent writers and migration.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import transaction
from ZODB.POSException import ConflictError

from motoko.errors import ConflictRetriesExhausted
from motoko.study.columns import MAX_TEXT, OTHER, PAGE_SIZE, ColumnPage
from motoko.study.database import StudyDB
from motoko.study.fields import BUILTIN_RUN_FIELDS
from motoko.study.planner import compile_for, plan_query
from motoko.study.records import FINISHED, LAUNCHED, MOTOKO_ATTRIBUTES
from motoko.study.schema import parse_schema

SCHEMA = "study: s\njob: {x: int}\nrun: {solver: str, tol: float}\nrun_params: {solver: cg, tol: 0.001}\n"

# Values of every kind a run attribute may hold, one per run (cycled).
VALUES: list[Any] = [
    1, 2, 2.5, -3, 0, True, False, "a", "b", "abc", "10", "", float("nan"),
    [1, 2], {"k": 1}, "x" * (MAX_TEXT + 1), None, 7, 100.0, "B",
]


@pytest.fixture
def db(address):
    database = StudyDB(address)
    database.create_study(parse_schema(SCHEMA, check_files=False))
    yield database
    database.close()


def _column(study: Any, name: str) -> dict[int, Any]:
    column = study.columns.get(name)
    return {} if column is None else {rid: v for page in column.values() for rid, v in page.values.items()}


def _expected(value: Any) -> Any:
    if value is None:
        return None
    if type(value) in (bool, int, float) or (type(value) is str and len(value) <= MAX_TEXT):
        return value
    return OTHER


def test_builtin_fields_have_no_columns():
    assert set(BUILTIN_RUN_FIELDS) <= MOTOKO_ATTRIBUTES
    assert {"history", "parents", "output", "stop_requested"} <= MOTOKO_ATTRIBUTES


def test_columns_follow_every_assignment_and_deletion(db):
    db.insert("s", [{"x": i} for i in range(PAGE_SIZE + 40)], {"solver": "cg", "tol": 0.001}, run_name="r")

    def assign() -> None:
        study = db.study("s")
        for rid, run in study.runs.items():
            run.score = VALUES[rid % len(VALUES)]
            if rid % 3 == 0:
                del run.score
            if rid % 5 == 0:
                run.solver = "gmres"
            run.heartbeat = None  # motoko's own attributes have no column

    db.transact(assign)
    study = db.study("s")
    scores = _column(study, "score")
    for rid, run in study.runs.items():
        value = run.__dict__.get("score")
        expected = _expected(value)
        if expected is None:
            assert rid not in scores
        elif isinstance(expected, float) and math.isnan(expected):
            assert math.isnan(scores[rid])
        else:
            assert scores[rid] == expected and type(scores[rid]) is type(expected)
    assert _column(study, "solver") == {rid: ("gmres" if rid % 5 == 0 else "cg") for rid in study.runs}
    assert "heartbeat" not in study.columns and "state" not in study.columns
    assert study.check_indexes() == []


def _brute_force(db: StudyDB, constraint: str) -> list[int]:
    study = db.study("s")
    query = compile_for(study, constraint)
    return [r.id for r in study.runs.values() if query.matches(r, r.job)]


CORPUS = [
    "runs.score > 0", "runs.score >= 2", "runs.score < 1", "runs.score <= 0", "runs.score = 2",
    "runs.score = 2.5", "runs.score != 2", "runs.score = a", "runs.score > a", "runs.score = '10'",
    "runs.score = 10", "runs.score ~ '^a'", "runs.score ~* '^A'", "runs.score !~ b", "runs.score in (1, a, 7)",
    "runs.score not in (1, 2)", "runs.score = null", "runs.score != null", "not runs.score > 0",
    "runs.score > 0 or runs.score = a", "runs.score > 0, x < 100", "runs.score > 0, state = FINISHED",
    "(runs.score = 1 or runs.score = 2) and not x > 200", "runs.solver = gmres", "runs.tol < 0.01",
    "runs.solver = gmres, runs.score > 1", "runs.never_set = 3", "runs.never_set != 3", "runs.score = true",
    "runs.score ~ '1'", "runs.score > -5, runs.score < 5", "not (runs.score = a or x > 10)",
]


@pytest.mark.parametrize("constraint", CORPUS)
def test_column_answers_equal_run_by_run_filtering(db, constraint):
    db.insert("s", [{"x": i} for i in range(300)], {"solver": "cg", "tol": 0.001}, run_name="r")

    def assign() -> None:
        study = db.study("s")
        for rid, run in study.runs.items():
            value = VALUES[rid % len(VALUES)]
            if value is not None:
                run.score = value
            if rid % 4 == 0:
                run.solver = "gmres"
            if rid % 7 == 0:
                study.transition(run, LAUNCHED)
                study.transition(run, FINISHED)

    db.transact(assign)
    assert [r.id for r in db.select("s", constraint)] == _brute_force(db, constraint), constraint


def test_plans_on_columns_are_exact_unless_values_are_not_copied(db):
    db.insert("s", [{"x": i} for i in range(10)], {"solver": "cg", "tol": 0.001}, run_name="r")

    def assign() -> None:
        for rid, run in db.study("s").runs.items():
            run.score = rid
        db.study("s").runs[3].other = [1, 2]

    db.transact(assign)
    study = db.study("s")
    assert plan_query(study, compile_for(study, "runs.score > 4").root).exact
    assert plan_query(study, compile_for(study, "not runs.score > 4").root).exact
    inexact = plan_query(study, compile_for(study, "runs.other = 1").root)
    assert not inexact.exact and list(inexact.ids) == [3]
    assert db.select("s", "runs.other = 1") == []


def test_a_cold_filter_on_a_free_attribute_loads_only_the_matching_runs(db, address):
    db.insert("s", [{"x": i} for i in range(3000)], {"solver": "cg", "tol": 0.001}, run_name="r")

    def assign() -> None:
        for rid, run in db.study("s").runs.items():
            run.score = rid if rid % 100 == 0 else -1

    db.transact(assign)
    with StudyDB(address) as cold:
        runs = cold.select("s", "runs.score > 0")
        assert [r.score for r in runs] == list(range(100, 3001, 100))
        loaded = cold.conn._cache.cache_non_ghost_count
        assert loaded < 300, f"{loaded} objects loaded to select 30 runs of 3000"


def test_concurrent_writers_of_one_page_merge_and_same_run_conflicts(db, address):
    db.insert("s", [{"x": i} for i in range(4)], {"solver": "cg", "tol": 0.001}, run_name="r")
    db.transact(lambda: setattr(db.study("s").runs[1], "score", 0))
    with StudyDB(address) as one, StudyDB(address) as two:
        one.study("s").runs[1].score = 10
        two.study("s").runs[2].score = 20
        one.commit()
        two.commit()  # same page, other run: merged on the server
        one.begin()
        assert _column(one.study("s"), "score") == {1: 10, 2: 20}
        two.begin()
        one.study("s").runs[3].score = 30
        two.study("s").runs[3].score = 31
        one.commit()
        with pytest.raises(ConflictRetriesExhausted, match="changed its score to 30 meanwhile"):
            two.commit()  # the replay finds 30 where 31 was to be the first value
        two.abort()
        assert _column(two.study("s"), "score") == {1: 10, 2: 20, 3: 30}
        assert two.study("s").check_indexes() == []


def test_page_conflict_resolution_rules():
    page = ColumnPage()
    old = {"values": {1: 1, 2: 2}}
    assert page._p_resolveConflict(old, {"values": {1: 5, 2: 2}}, {"values": {1: 1, 2: 6, 3: 7}}) == {
        "values": {1: 5, 2: 6, 3: 7}
    }
    assert page._p_resolveConflict(old, {"values": {2: 2}}, {"values": {1: 1}}) == {"values": {}}
    assert page._p_resolveConflict(old, {"values": {1: 9, 2: 2}}, {"values": {1: 9, 2: 2}})["values"] == {1: 9, 2: 2}
    with pytest.raises(ConflictError):
        page._p_resolveConflict(old, {"values": {1: 5, 2: 2}}, {"values": {1: 6, 2: 2}})
    with pytest.raises(ConflictError):  # 1 and 1.0 are different values
        page._p_resolveConflict(old, {"values": {1: True, 2: 2}}, {"values": {1: 1.0, 2: 2}})
    transaction.abort()

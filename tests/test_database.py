"""The study database against a real ZEO server: inserts, dedupe, indexes, states."""

from __future__ import annotations

import multiprocessing
import socket
import time

import pytest

from motoko.errors import (
    AddressError,
    ConflictRetriesExhausted,
    DatabaseError,
    RunNotFound,
    ServerError,
    StudyNotFound,
    TransitionError,
    UnknownNameError,
)
from motoko.study.database import SCHEMA_VERSION, StudyDB
from motoko.study.records import CANCELLED, CREATED, FAILED, FINISHED, LAUNCHED, LOST, RUNNING
from motoko.study.schema import parse_schema
from motoko.study.server import ensure_server, parse_address, server_status, stop_server
from motoko.study.space import expand

SCHEMA = """
study: demo
job: {x: float, name: str}
run: {compiler: str}
run_params: {compiler: gcc}
"""


def make_schema(text: str = SCHEMA):
    return parse_schema(text, check_files=False)


@pytest.fixture
def db(address):
    database = StudyDB(address)
    database.create_study(make_schema())
    yield database
    database.close()


def insert(db, n=None, run_name="r1", **params):
    schema = db.study("demo").schema
    points = expand(schema, params or {"x": list(range(n or 3)), "name": "a"})
    return db.insert("demo", points, {"compiler": "gcc"}, run_name=run_name)


def test_insert_returns_runs_and_jobs_with_typed_params(db):
    pairs = insert(db, x=[1, 2], name="a")
    assert [r.id for r, _ in pairs] == [1, 2]
    assert [j.x for _, j in pairs] == [1.0, 2.0]
    assert all(isinstance(j.x, float) for _, j in pairs)
    run = pairs[0][0]
    assert run.state == CREATED and run.run_name == "r1" and run.compiler == "gcc"
    assert run.created is not None and run.job.id == pairs[0][1].id


def test_insert_is_idempotent_and_dedupes_jobs(db):
    first = insert(db, x=[1, 2], name="a")
    again = insert(db, x=[1, 2], name="a")
    assert [r.id for r, _ in again] == [r.id for r, _ in first]
    other_name = insert(db, x=[1, 2], name="a", run_name="r2")
    assert {j.id for _, j in other_name} == {j.id for _, j in first}  # same jobs
    assert {r.id for r, _ in other_name}.isdisjoint({r.id for r, _ in first})  # new runs
    assert len(db.study("demo").jobs) == 2 and len(db.study("demo").runs) == 4


def test_an_insert_pauses_the_cycle_collector_and_restores_it_also_after_a_failure(db):
    import gc

    seen: list[bool] = []
    schema = db.study("demo").schema
    points = expand(schema, {"x": [1, 2], "name": "a"})
    db.insert("demo", points, {"compiler": "gcc"}, within=lambda study, runs: seen.append(gc.isenabled()))
    assert seen == [False] and gc.isenabled()

    def refuse(study, runs):
        raise ValueError("refused inside the insert")

    with pytest.raises(ValueError, match="refused inside"):
        db.insert("demo", expand(schema, {"x": [3], "name": "a"}), {"compiler": "gcc"}, within=refuse)
    assert gc.isenabled()
    gc.disable()  # a process that turned it off keeps it off
    try:
        db.insert("demo", expand(schema, {"x": [4], "name": "a"}), {"compiler": "gcc"})
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_state_index_stays_exact_through_transitions(db):
    pairs = insert(db, n=5)
    study = db.study("demo")

    def change():
        runs = [r for r, _ in pairs]
        study.transition(runs[0], LAUNCHED)
        study.transition(runs[0], RUNNING)
        study.transition(runs[0], FINISHED)
        study.transition(runs[1], LAUNCHED)
        study.transition(runs[1], FAILED, exit_code=3)
        runs[2].state = "FORWARDED"  # a user state, through the property
        study.cancel(runs[3])

    db.transact(change)
    db.refresh()
    study = db.study("demo")
    assert study.counts() == {FINISHED: 1, FAILED: 1, "FORWARDED": 1, CANCELLED: 1, CREATED: 1}
    assert study.check_indexes() == []
    assert [r.id for r in db.select("demo", "state = FINISHED")] == [pairs[0][0].id]
    run = db.run("demo", pairs[0][0].id)
    assert run.launched and run.started and run.finished


def test_forbidden_transition_is_refused_and_nothing_changes(db):
    run = insert(db, n=1)[0][0]
    study = db.study("demo")
    db.transact(lambda: (study.transition(run, LAUNCHED), study.transition(run, FINISHED)))
    with pytest.raises(TransitionError, match="cannot go from FINISHED to RUNNING"):
        db.transact(lambda: study.transition(db.run("demo", run.id), RUNNING))
    with pytest.raises(TransitionError, match="requeue"):
        db.run("demo", run.id).state = CREATED
    db.abort()
    assert db.run("demo", run.id).state == FINISHED
    assert db.study("demo").check_indexes() == []


def test_a_run_passing_through_running_rewrites_neither_its_index_nor_its_counter(db):
    run, other = (r for r, _ in insert(db, n=2))
    study = db.study("demo")
    # Another run RUNNING meanwhile: the RUNNING index and counter exist and hold it.
    db.transact(lambda: (study.transition(run, LAUNCHED), study.transition(other, LAUNCHED), study.transition(other, RUNNING)))
    serials = (study.by_state[RUNNING]._p_serial, study.state_counts[RUNNING]._p_serial)

    def settle():
        study.transition(run, FINISHED, through=RUNNING, executor_id="1234")
        assert study.by_state[RUNNING]._p_changed is False and study.state_counts[RUNNING]._p_changed is False

    db.transact(settle)
    db.refresh()
    study = db.study("demo")
    stored = db.run("demo", run.id)
    assert stored.state == FINISHED and stored.executor_id == "1234"
    assert stored.launched <= stored.started == stored.finished
    assert study.counts() == {FINISHED: 1, RUNNING: 1}
    assert study.check_indexes() == []
    # Not stored by the settle's commit: the same revisions as before it.
    assert (study.by_state[RUNNING]._p_serial, study.state_counts[RUNNING]._p_serial) == serials


def test_passing_through_a_state_checks_both_moves_and_changes_nothing_when_refused(db):
    run = insert(db, n=1)[0][0]
    study = db.study("demo")
    with pytest.raises(TransitionError, match="cannot go from CREATED to RUNNING"):
        db.transact(lambda: study.transition(run, FINISHED, through=RUNNING))
    db.abort()
    db.transact(lambda: study.transition(db.run("demo", run.id), LAUNCHED))
    with pytest.raises(TransitionError, match="cannot go from RUNNING to CREATED"):
        db.transact(lambda: study.transition(db.run("demo", run.id), CREATED, through=RUNNING))
    db.abort()
    stored = db.run("demo", run.id)
    assert stored.state == LAUNCHED and stored.started is None
    assert db.study("demo").check_indexes() == []
    # Through the state it is in, or the one it goes to: a plain transition.
    db.transact(lambda: study.transition(db.run("demo", run.id), RUNNING, through=RUNNING))
    db.transact(lambda: study.transition(db.run("demo", run.id), FAILED, through=RUNNING, exit_code=1))
    stored = db.run("demo", run.id)
    assert stored.state == FAILED and stored.started < stored.finished
    assert db.study("demo").counts() == {FAILED: 1}


def test_a_claimed_run_given_back_is_created_again_as_if_never_claimed(db):
    run, started = (r for r, _ in insert(db, n=2))
    study = db.study("demo")
    arrivals = study.arrivals.value

    def claim(r):
        study.transition(r, LAUNCHED, launcher="a:1:x", machine_name="a", run_path="/tmp/run", heartbeat=r.created)

    db.transact(lambda: (claim(run), claim(started), study.transition(started, RUNNING)))
    db.transact(lambda: study.give_back(db.run("demo", run.id)))
    db.refresh()
    study = db.study("demo")
    stored = db.run("demo", run.id)
    assert stored.state == CREATED and stored.attempt == 1 and stored.history == ()
    assert (stored.launcher, stored.machine_name, stored.run_path, stored.launched, stored.heartbeat) == (None,) * 5
    assert study.counts() == {CREATED: 1, RUNNING: 1} and study.check_indexes() == []
    assert study.arrivals.value == arrivals + 1, "launchers waiting for runs are woken by it"
    # Only a claim that never started is given back; a refusal changes nothing.
    for refused, state in ((started, RUNNING), (stored, CREATED)):
        with pytest.raises(TransitionError, match=f"is {state}: only a LAUNCHED run that never started can be given back"):
            db.transact(lambda r=refused: study.give_back(db.run("demo", r.id)))
        db.abort()
    assert db.study("demo").counts() == {CREATED: 1, RUNNING: 1}


def test_runs_claimed_in_their_insert_leave_the_created_records_as_stored(db):
    # An embedded launcher claims its workflow's new runs inside the insert: they
    # pass through CREATED, whose index and counters that commit need not store.
    insert(db, n=1)  # one run stays CREATED: its index and counter hold it
    study = db.study("demo")
    schema = study.schema

    def records(study):
        return [study.by_state[CREATED], study.state_counts[CREATED], study.arrivals]

    serials, arrivals = [r._p_serial for r in records(study)], study.arrivals.value

    def claim(count):
        def within(study, runs):
            for run in runs[:count]:
                study.transition(run, LAUNCHED, launcher="embedded")

        return within

    db.insert("demo", expand(schema, {"x": [7, 8], "name": "b"}), {"compiler": "gcc"}, run_name="r1", within=claim(2))
    db.refresh()
    study = db.study("demo")
    assert [r._p_serial for r in records(study)] == serials
    assert study.arrivals.value == arrivals  # no other launcher is woken for runs it could not take
    assert study.counts() == {CREATED: 1, LAUNCHED: 2} and study.check_indexes() == []
    # One of two left CREATED: the records change as with any insert.
    db.insert("demo", expand(schema, {"x": [9, 10], "name": "b"}), {"compiler": "gcc"}, run_name="r1", within=claim(1))
    db.refresh()
    study = db.study("demo")
    assert all(r._p_serial != serial for r, serial in zip(records(study), serials, strict=True))
    assert study.arrivals.value == arrivals + 1
    assert study.counts() == {CREATED: 2, LAUNCHED: 3} and study.check_indexes() == []
    assert sorted(r.id for r in db.select("demo", "state = CREATED")) == [1, 5]


def test_requeue_keeps_history_and_counts_attempts(db):
    run = insert(db, n=1)[0][0]
    study = db.study("demo")
    db.transact(lambda: (study.transition(run, LAUNCHED), study.transition(run, FAILED, exit_code=2)))
    db.transact(lambda: db.run("demo", run.id).requeue("try again"))
    run = db.run("demo", run.id)
    assert run.state == CREATED and run.attempt == 2
    assert run.history[0]["state"] == FAILED and run.history[0]["exit_code"] == 2
    assert run.exit_code is None


def test_retry_on_failure_requeues_until_attempts_exhausted(address):
    db = StudyDB(address)
    db.create_study(make_schema(SCHEMA + "retries: 1\nretry_on: [FAILED, LOST]\n"))
    run = insert(db, n=1)[0][0]
    study = db.study("demo")
    db.transact(lambda: (study.transition(run, LAUNCHED), study.transition(run, FAILED)))
    assert db.run("demo", run.id).state == CREATED  # retried
    db.transact(lambda: (study.transition(run, LAUNCHED), study.transition(run, LOST)))
    assert db.run("demo", run.id).state == LOST  # attempts exhausted
    assert db.run("demo", run.id).attempt == 2
    db.close()


def test_free_attributes_persist(db, address):
    run = insert(db, n=1)[0][0]
    run.y = [1.5, 2.5]
    run.dependencies = ["mult.1"]
    db.refresh()
    other = StudyDB(address)
    again = other.run("demo", run.id)
    assert again.y == [1.5, 2.5] and again["dependencies"] == ["mult.1"]
    other.close()


def test_quantities_roundtrip_as_dataframes(db, address):
    run = insert(db, n=1)[0][0]
    for step in range(3):
        run.push_quantity(step * 0.5, step, "energy")
        run.pushVectorQuantity([step, step + 1], step, "force")
    db.commit()
    other = StudyDB(address)
    again = other.run("demo", run.id)
    energy = again.get_quantity("energy")
    assert list(energy.columns) == ["step", "energy"] and list(energy["energy"]) == [0.0, 0.5, 1.0]
    force = again.getQuantity("force")
    assert list(force.columns) == ["step", "force[0]", "force[1]"] and force.iloc[2].tolist() == [2, 2, 3]
    assert sorted(again.list_quantities()) == ["energy", "force"]
    with pytest.raises(UnknownNameError, match="did you mean 'energy'"):
        again.get_quantity("enrgy")
    other.close()


def test_quantities_stored_under_their_former_module_still_load():
    # Databases written before quantities.py existed name the class motoko.study.records.Quantity;
    # an unpickler that cannot find it would give a Broken object and lose every pushed value.
    from ZODB.broken import find_global

    from motoko.study.quantities import Quantity

    assert find_global("motoko.study.records", "Quantity") is Quantity


def test_select_uses_indexes_and_filters(db):
    insert(db, x=[0, 1, 2, 3, 4], name=["a", "b"])
    assert len(db.select("demo")) == 10
    assert len(db.select("demo", "x > 2")) == 4
    assert len(db.select("demo", "x >= 1, x < 3, name = b")) == 2
    assert len(db.select("demo", "name ~ '^[ab]$' and x in (0, 4)")) == 4
    assert len(db.select("demo", "x = 1 or x = 3")) == 4
    assert len(db.select("demo", "not x > 2")) == 6
    assert len(db.select("demo", "state = CREATED, run_name = r1")) == 10
    assert len(db.select("demo", "run_name = nope")) == 0
    assert [r.id for r in db.select("demo", "id in (2, 3)")] == [2, 3]


def test_select_filters_free_attributes_and_metadata(db):
    pairs = insert(db, n=4)
    for i, (run, _) in enumerate(pairs):
        run.y = i * 10
        run.set_metadata({"group": "even" if i % 2 == 0 else "odd"})
    db.commit()
    assert [r.y for r in db.select("demo", "runs.y >= 20")] == [20, 30]
    assert len(db.select("demo", "meta.group = odd")) == 2


def test_concurrent_inserters_get_unique_ids(address):
    db = StudyDB(address)
    db.create_study(make_schema())
    db.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_insert_worker, [(str(address), w) for w in range(4)])
    ids = [i for chunk in results for i in chunk]
    assert len(ids) == 4 * 50 and len(set(ids)) == len(ids)
    db = StudyDB(address)
    study = db.study("demo")
    assert len(study.runs) == 200 and len(study.jobs) == 200
    assert sorted(study.runs.keys()) == sorted(ids)
    assert study.check_indexes() == []
    db.close()


def _insert_worker(address: str, worker: int) -> list[int]:
    db = StudyDB(address)
    ids = []
    for i in range(10):
        points = [{"x": float(worker * 1000 + i * 10 + k), "name": "w"} for k in range(5)]
        ids += [r.id for r, _ in db.insert("demo", points, {"compiler": "gcc"}, run_name="c")]
    db.close()
    return ids


def test_conflicting_claims_exactly_one_wins(address):
    """Two connections change the same run's state: the second commit conflicts."""
    a, b = StudyDB(address), StudyDB(address)
    a.create_study(make_schema())
    run_id = insert(a, n=1)[0][0].id
    b.refresh()
    run_a, run_b = a.run("demo", run_id), b.run("demo", run_id)
    a.study("demo").transition(run_a, LAUNCHED, launcher="A")
    b.study("demo").transition(run_b, LAUNCHED, launcher="B")
    a.commit()
    with pytest.raises(ConflictRetriesExhausted, match="another process changed the same value"):
        b.commit()  # state changes made through transition() are not replayed: a claim must lose
    b.abort()
    assert b.run("demo", run_id).launcher == "A"
    a.close(), b.close()


def test_changes_to_different_attributes_merge(address):
    a, b = StudyDB(address), StudyDB(address)
    a.create_study(make_schema())
    run_id = insert(a, n=1)[0][0].id
    b.refresh()
    a.run("demo", run_id).heartbeat = "beat"
    b.run("demo", run_id).y = 42
    a.commit()
    b.commit()  # merged on the server, no conflict
    a.refresh()
    run = a.run("demo", run_id)
    assert run.heartbeat == "beat" and run.y == 42
    a.close(), b.close()


def test_transact_gives_up_after_bounded_conflicts(db):
    from ZODB.POSException import ConflictError

    def always_conflicts():
        raise ConflictError("synthetic")

    with pytest.raises(ConflictRetriesExhausted, match="could not bump: other processes"):
        db.transact(always_conflicts, attempts=3, what="bump")


def test_transact_commits_a_heartbeat_between_conflicting_attempts(db, address):
    """A launcher whose cycle keeps conflicting must still look alive to the others."""
    from ZODB.POSException import ConflictError

    from motoko.study.database import LauncherRecord

    db.transact(lambda: db.launchers().__setitem__("L", LauncherRecord("L", "m", 1, "local", ["demo"])))
    attempts: list[int] = []
    beats: list[object] = []

    def conflicts_twice() -> str:
        attempts.append(1)
        if len(attempts) <= 2:
            raise ConflictError("synthetic")
        return "done"

    def beat() -> None:  # committed by itself, between attempts
        record = db.launchers()["L"]
        beats.append(record.heartbeat)
        record.heartbeat = record.heartbeat.replace(year=2100)
        db.tm.commit()

    assert db.transact(conflicts_twice, on_conflict=beat) == "done"
    assert len(attempts) == 3 and len(beats) == 2
    with StudyDB(address) as other:
        assert other.launchers()["L"].heartbeat.year == 2100


def test_unknown_study_and_run_have_helpful_errors(db):
    with pytest.raises(StudyNotFound, match="did you mean 'demo'"):
        db.study("dmeo")
    with pytest.raises(RunNotFound, match="no run with id 99 in study 'demo'"):
        db.run("demo", 99)


def test_other_schema_version_is_refused(db, address):
    db.transact(lambda: db.conn.root().__setitem__("motoko_version", SCHEMA_VERSION + 1))
    with pytest.raises(DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}"):
        StudyDB(address)


def test_version_1_database_is_migrated_on_open_and_nothing_is_lost(db, address, caplog):
    from BTrees.IIBTree import IITreeSet
    from BTrees.OOBTree import OOBTree

    pairs = insert(db, n=5)
    insert(db, n=2, run_name="other")
    db.run("demo", pairs[1][0].id).state = LAUNCHED
    db.run("demo", pairs[1][0].id).state = FINISHED
    pairs[2][0].y = "kept"
    db.commit()

    def make_version_1() -> None:  # the layout before runs sat in the indexes
        study = db.study("demo")
        for name in ("by_state", "by_run_name"):
            old = OOBTree()
            for key, runs in getattr(study, name).items():
                old[key] = IITreeSet(runs.keys())
            setattr(study, name, old)
        del study.columns
        db.conn.root()["motoko_version"] = 1

    db.transact(make_version_1)
    with caplog.at_level("WARNING"), StudyDB(address) as reopened:
        study = reopened.study("demo")
        assert reopened.conn.root()["motoko_version"] == SCHEMA_VERSION
        assert study.check_indexes() == []
        assert [r.id for r in reopened.select("demo", "state = FINISHED")] == [pairs[1][0].id]
        assert len(reopened.select("demo", "run_name = other")) == 2
        assert len(reopened.select("demo", "state = CREATED, run_name = r1")) == 4
        assert reopened.run("demo", pairs[2][0].id).y == "kept"
        assert [r.id for r in reopened.select("demo", "runs.y = kept")] == [pairs[2][0].id]
        assert "y" in study.columns and "compiler" in study.columns
        assert study.counts() == {CREATED: 6, FINISHED: 1}
    assert "migrated" in caplog.text and "study demo" in caplog.text


def test_version_2_database_gets_state_counters_and_run_indexes(db, address, caplog):
    from BTrees.IOBTree import IOBTree

    from motoko.study.run_index import RunIndex

    pairs = insert(db, n=4)
    db.run("demo", pairs[0][0].id).state = LAUNCHED
    db.run("demo", pairs[0][0].id).state = "FORWARDED"
    db.commit()

    def make_version_2() -> None:  # plain trees, no counters
        study = db.study("demo")
        for index in (study.by_state, study.by_run_name):
            for key, runs in list(index.items()):
                index[key] = IOBTree(runs)
        del study.state_counts
        db.conn.root()["motoko_version"] = 2

    db.transact(make_version_2)
    with caplog.at_level("WARNING"), StudyDB(address) as reopened:
        study = reopened.study("demo")
        assert reopened.conn.root()["motoko_version"] == SCHEMA_VERSION == 3
        assert study.counts() == {CREATED: 3, "FORWARDED": 1}
        assert all(isinstance(runs, RunIndex) for runs in study.by_state.values())
        assert study.check_indexes() == []
        reopened.transact(lambda: study.transition(reopened.run("demo", pairs[1][0].id), LAUNCHED))
        assert study.counts() == {CREATED: 2, LAUNCHED: 1, "FORWARDED": 1}
    assert "runs counted per state" in caplog.text


def test_unreachable_server_is_a_clear_error_not_a_hang(tmp_path):
    start = time.monotonic()
    with pytest.raises(ServerError, match="cannot reach the database server"):
        StudyDB(f"zeo://{tmp_path}/nothing.sock", wait_timeout=0.5)
    assert time.monotonic() - start < 10
    port = _free_port()
    with pytest.raises(ServerError):
        StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "text, message",
    [
        ("127.0.0.1:8100", "must start with zeo://"),
        ("zeo://", "nothing after zeo://"),
        ("zeo://host:99999", "port 99999 is out of range"),
        ("zeo://host:abc", "port is not a number"),
        ("http://x", "must start with zeo://"),
    ],
)
def test_malformed_addresses(text, message):
    with pytest.raises(AddressError, match=message):
        parse_address(text)


def test_addresses_parse(tmp_path):
    assert parse_address("zeo://127.0.0.1:8100").zeo() == ("127.0.0.1", 8100)
    assert parse_address("zeo://db.sock", tmp_path).zeo() == str(tmp_path / "db.sock")
    assert str(parse_address("zeo:///abs/x.sock")) == "zeo:///abs/x.sock"


def test_server_lifecycle_is_idempotent_and_cleans_stale_files(workdir):
    first = ensure_server(workdir)
    assert ensure_server(workdir) == first
    status = server_status(workdir)
    assert status.running and status.pid
    state = workdir / ".motoko"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "data.fs").stat().st_mode & 0o777) == "0o600"
    # kill -9: pid and socket files stay behind, the next start cleans them
    import os
    import signal

    os.kill(status.pid, signal.SIGKILL)
    time.sleep(0.3)
    assert not server_status(workdir).running
    again = ensure_server(workdir)
    assert server_status(workdir).running and again == first
    assert stop_server(workdir) is True
    assert stop_server(workdir) is False


def test_range_queries_on_job_fields_are_exact_at_the_bounds(db):
    insert(db, x=[0, 1, 2, 3, 4], name="a")
    cases = {
        "x > 1, x < 3": [2.0], "x >= 1, x <= 3": [1.0, 2.0, 3.0], "x > 1, x >= 2, x < 4, x <= 3": [2.0, 3.0],
        "x >= 2, x <= 2": [2.0], "x > 2, x < 2": [], "x < 1": [0.0], "x <= 0": [0.0], "x > 3": [4.0],
    }
    for query, expected in cases.items():
        assert sorted(r.job.x for r in db.select("demo", query)) == expected, query


def test_a_sibling_connection_waits_for_a_lost_server_as_long_as_its_parent(address, monkeypatch):
    """MOTOKO_SERVER_WAIT holds for an embedded launcher's connection too (it used to wait 120 s)."""
    monkeypatch.setenv("MOTOKO_SERVER_WAIT", "3")
    parent = StudyDB(address)
    sibling = parent.sibling()
    try:
        assert parent.reconnect_timeout == sibling.reconnect_timeout == 3
    finally:
        sibling.close()
        parent.close()


def test_a_process_waits_for_its_server_no_longer_than_motoko_server_wait(monkeypatch):
    """ZEO's own 10 s wait per call is capped by MOTOKO_SERVER_WAIT (Ctrl-C with a lost server: 20 s -> 12 s)."""
    port = _free_port()
    monkeypatch.setenv("MOTOKO_SERVER_WAIT", "1")
    with pytest.raises(ServerError) as refused:
        StudyDB(f"zeo://127.0.0.1:{port}")
    assert f"cannot reach the database server at zeo://127.0.0.1:{port} within 1 s" in str(refused.value)

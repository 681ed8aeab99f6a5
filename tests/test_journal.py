"""A workflow's uncommitted run changes survive conflicts, and true conflicts are reported.

Two real connections to a real ZEO server play a workflow (``wf``) and a
launcher or another workflow (``other``); ``other`` commits first, so that
``wf``'s commit meets the conflict.
"""

from __future__ import annotations

import pytest

from motoko.errors import ConflictRetriesExhausted
from motoko.study.database import StudyDB
from motoko.study.records import FAILED, FINISHED, LAUNCHED, RUNNING
from motoko.study.schema import parse_schema
from motoko.study.server import ensure_server


@pytest.fixture
def address(address):
    """The server, with study ``s``: runs 1-4 RUNNING, then 1 FINISHED and 4 FAILED."""
    with StudyDB(address) as db:
        db.create_study(parse_schema("study: s\njob: {x: int}\n", check_files=False))
        db.insert("s", [{"x": i} for i in range(6)], {}, run_name="r")

        def start() -> None:
            study = db.study("s")
            for rid in (1, 2, 3, 4):
                study.transition(study.runs[rid], LAUNCHED)
                study.transition(study.runs[rid], RUNNING)
            study.transition(study.runs[1], FINISHED)
            study.transition(study.runs[4], FAILED)

        db.transact(start)
    return address


@pytest.fixture
def pair(address):
    with StudyDB(address) as wf, StudyDB(address) as other:
        yield wf, other


def test_a_forwarded_run_survives_a_launcher_settling_another(pair):
    wf, other = pair
    run = wf.study("s").runs[1]
    run.state = "FORWARDED"  # takes run 1 out of the FINISHED index bucket...
    run.note = "forwarded by the workflow"
    study = other.study("s")
    study.transition(study.runs[2], FINISHED, exit_code=0)  # ...which this adds run 2 to
    other.commit()
    wf.refresh()  # the first commit conflicts on the index bucket; the journal replays
    other.begin()
    runs = other.study("s").runs
    assert (runs[1].state, runs[1].note, runs[2].state) == ("FORWARDED", "forwarded by the workflow", FINISHED)
    assert other.study("s").check_indexes() == []
    assert len(wf.journal) == 0


def test_changes_to_other_attributes_of_the_same_run_merge_with_the_replay(pair):
    wf, other = pair
    wf.study("s").runs[1].state = "FORWARDED"
    wf.study("s").runs[1].y = 1
    del_me = wf.study("s").runs[3]
    del_me.tmp = "x"
    wf.commit()
    del del_me.tmp
    wf.study("s").runs[1].y = 2
    study = other.study("s")
    study.runs[1].z = 5
    study.transition(study.runs[2], FINISHED)
    other.commit()
    wf.refresh()
    other.begin()
    runs = other.study("s").runs
    assert (runs[1].state, runs[1].y, runs[1].z) == ("FORWARDED", 2, 5)
    assert not hasattr(runs[3], "tmp")
    assert other.study("s").check_indexes() == []


def test_the_same_value_changed_elsewhere_is_reported_not_overwritten(pair):
    wf, other = pair
    wf.study("s").runs[1].y = "mine"
    other.study("s").runs[1].y = "theirs"
    other.commit()
    with pytest.raises(ConflictRetriesExhausted, match=r"run s.1: another process changed its y to 'theirs' meanwhile"):
        wf.refresh()
    other.begin()
    assert other.study("s").runs[1].y == "theirs"
    assert len(wf.journal) == 0


def test_a_state_changed_elsewhere_is_reported(pair):
    wf, other = pair
    wf.study("s").runs[1].state = "FORWARDED"
    other.study("s").runs[1].state = "ARCHIVED"
    other.commit()
    with pytest.raises(ConflictRetriesExhausted, match="changed its state to 'ARCHIVED'"):
        wf.refresh()


def test_a_requeue_is_replayed_once_even_if_another_process_also_requeued(pair):
    wf, other = pair
    wf.study("s").runs[4].requeue("again")
    other.study("s").runs[4].requeue("also again")
    other.commit()
    wf.refresh()  # the other requeue already did it: not requeued twice
    other.begin()
    run = other.study("s").runs[4]
    assert (run.state, run.attempt, len(run.history)) == ("CREATED", 2, 1)
    assert other.study("s").check_indexes() == []


def test_transact_keeps_the_pending_changes_it_commits_through_a_conflict(pair):
    wf, other = pair
    wf.study("s").runs[1].state = "FORWARDED"  # pending, outside transact
    study = other.study("s")
    study.transition(study.runs[2], FINISHED)
    other.commit()
    wf.transact(lambda: setattr(wf.study("s").runs[5], "tag", "t"))
    other.begin()
    runs = other.study("s").runs
    assert (runs[1].state, runs[5].tag) == ("FORWARDED", "t")


def test_begin_drops_pending_changes_and_their_journal(pair):
    wf, _ = pair
    wf.study("s").runs[1].y = 9
    assert len(wf.journal) == 1
    wf.begin()
    assert len(wf.journal) == 0 and not hasattr(wf.study("s").runs[1], "y")


def test_changes_made_while_the_server_is_away_are_saved_once_it_is_back(workdir, address):
    import os
    import signal
    import time

    wf = StudyDB(address)
    try:
        wf.study("s").runs[1].state = "FORWARDED"
        wf.study("s").runs[1].y = [1.0, 2.0]
        os.kill(int((workdir / ".motoko" / "zeo.pid").read_text()), signal.SIGKILL)
        time.sleep(0.5)
        ensure_server(workdir)  # a stale pid and socket are cleaned, a new server starts
        wf.refresh()  # waits for the reconnection, then replays
        with StudyDB(address) as other:
            run = other.study("s").runs[1]
            assert (run.state, run.y) == ("FORWARDED", [1.0, 2.0])
            assert other.study("s").check_indexes() == []
    finally:
        wf.close()

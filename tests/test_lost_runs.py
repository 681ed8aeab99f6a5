"""Reading a workflow has no side effect; waiting declares LOST what no launcher is left to declare.

``Workflow.refresh()`` and every read through a workflow (``rl.status()``,
``tm.runs[...]``, selections) only commit the workflow's own changes and see
the others'. Declaring a silent run LOST, and stopping its process, is the
explicit step a wait takes (:mod:`motoko.flow.lost_runs`). A real ZEO server;
the run's launcher is gone (no record, heartbeat an hour old).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from launch_support import create_runs, make_study

from motoko import RunList, RunsFailed, Workflow
from motoko.study.database import StudyDB
from motoko.study.records import LAUNCHED, LOST

CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 1\n"


def _launched_by_a_dead_launcher(db: StudyDB, rid: int) -> None:
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)

    def change() -> None:
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, LAUNCHED, launcher="gone", heartbeat=hour_ago)
        run.launched = run.created = hour_ago

    db.transact(change)


def test_reads_declare_nothing_and_a_wait_declares_the_silent_run_lost(workdir):
    _, db = make_study(workdir, CONFIG)
    try:
        (rid,) = create_runs(db, x=1)
        _launched_by_a_dead_launcher(db, rid)
        with Workflow(workdir, run_name="t") as wf:
            # Connected for longer than lost_after: the run's silence counts (see liveness.silent_runs).
            wf.db_for("s").db.storage.connected_at -= dt.timedelta(seconds=5)
            time.sleep(0.5)  # past lost_after / 4: a wait would look for silent runs now
            rl = RunList.from_ids(wf, "s", [rid])  # observes: never requeues what it finds LOST
            wf.refresh()
            assert wf.s.runs[rid].state == LAUNCHED
            assert rl.status() == {LAUNCHED: 1} and not rl.done() and rl.failed() == []
            assert len(wf.s.select("state = LAUNCHED", run_name=None)) == 1
            db.abort()
            assert db.run("s", rid).state == LAUNCHED  # nothing was committed by reading
            with pytest.raises(RunsFailed) as raised:
                rl.result(timeout=30)
        ((study, found, state, _, error),) = raised.value.failures
        assert (study, found, state) == ("s", rid, LOST)
        assert "launcher gone" in error and "stopped heart-beating" in error and "workflow t noticed" in error
        db.abort()
        assert db.run("s", rid).state == LOST
    finally:
        db.close()

"""Handles read the database as of the read, not as of the last refresh.

Real server, real launcher (a thread of this process), real runs. Nothing in
these tests calls ``wf.refresh()``, ``rl.status()`` or waits through the
workflow before reading: before live reads, each read below kept returning
the snapshot of the workflow's last transaction (RUNNING, progress None).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config, write_study

from motoko.study.database import StudyDB
from motoko.study.records import CREATED, FINISHED, LAUNCHED, RUNNING

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 30
launcher: {executor: local, max_parallel: 2, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

DOIT = """\
from motoko import current_run

run, job = current_run()
run.push_quantity(2 * job.x, step=0, name="energy")
run.set_progress(1.0)
run.set_output({"y": 2 * job.x})
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float}", DOIT)
    write_config(workdir, ["calc"], FAST)
    return workdir


def finished_elsewhere(workflow: Any, rid: int, timeout: float = 60) -> None:
    """Wait on *another* connection (another 'process') until the run is FINISHED."""
    with StudyDB(workflow.address_of("calc")) as other:
        waiter = other.feed.waiter()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                other.abort()
                if other.run("calc", rid).state == FINISHED:
                    return
                waiter.wait(0.2)
        finally:
            waiter.close()
    raise AssertionError(f"run {rid} did not finish within {timeout} s")


def eventually(read: Callable[[], Any], expected: Any, timeout: float = 10) -> Any:
    """Read until ``expected`` (the commit's invalidation travels for a few ms); return the last value.

    A stale read never changes, whatever the wait: before live reads, these
    loops ran out of time.
    """
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.01)
        value = read()
    return value


def test_a_finished_run_reads_finished_without_a_refresh(wf, launcher):
    rl = wf.calc.createTask(x=1.0)
    held = rl.run  # read before it ran, kept by the script
    assert held.state in (CREATED, LAUNCHED, RUNNING) and held.progress is None  # not run yet
    finished_elsewhere(wf, held.id)
    assert eventually(lambda: rl.run.state, FINISHED) == FINISHED
    assert rl.run.progress == 1.0 and rl.run.output == {"y": 2.0}
    assert [(run.state, job.x) for run, job in rl] == [(FINISHED, 1.0)]  # iterating
    assert rl[0][0].state == FINISHED and rl.runs[0][0].state == FINISHED
    assert wf.calc.runs[held.id].state == FINISHED  # tm.runs[id]


def test_to_dict_and_get_quantity_of_a_held_run_are_live(wf, launcher):
    (held, _), = wf.calc.createTask(x=3.0)
    assert held.to_dict()["state"] in (CREATED, LAUNCHED, RUNNING) and held.list_quantities() == []
    finished_elsewhere(wf, held.id)
    assert eventually(lambda: held.to_dict()["state"], FINISHED) == FINISHED
    assert held.to_dict()["progress"] == 1.0
    assert held.get_quantity("energy")["energy"].tolist() == [6.0]
    assert held.state == FINISHED  # the held object itself was refreshed


def test_tm_runs_of_a_run_created_elsewhere(wf):
    with StudyDB(wf.address_of("calc")) as other:
        from motoko.study.space import expand

        schema = wf.calc.schema
        (run, _), = other.insert("calc", expand(schema, {"x": 9.0}, ()), {}, run_name="elsewhere")
        rid = run.id
    assert eventually(lambda: rid in wf.calc.runs, True) is True
    assert wf.calc.runs[rid].run_name == "elsewhere" and len(wf.calc.runs) == 1


def test_live_reads_inside_an_async_step(wf, launcher):
    rl = wf.calc.createTask(x=2.0)

    async def step() -> str:
        deadline = asyncio.get_running_loop().time() + 60
        while rl.run.state != FINISHED and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)  # not a motoko awaitable: nothing refreshes but the read itself
        return rl.run.state

    assert asyncio.run(step()) == FINISHED


def test_sync_is_a_no_op_without_commits_and_never_commits_pending_changes(wf):
    db = wf.db_for("calc")
    rl = wf.calc.createTask(x=1.0)
    db.sync()
    assert db.sync() is False and db.sync() is False  # nothing committed since: no round trip
    run = rl.run
    run.note = "pending"  # uncommitted change of the workflow
    with StudyDB(wf.address_of("calc")) as other:
        seen = db.feed.commits_seen
        other.transact(lambda: setattr(other.run("calc", run.id), "tag", "from elsewhere"))
        assert eventually(lambda: db.feed.commits_seen > seen, True) is True
        assert db.sync() is False  # pending changes keep their snapshot: nothing is committed for them
        other.abort()
        assert other.run("calc", run.id).get("note") is None
        assert rl.run.note == "pending" and rl.run.get("tag") is None
        wf.refresh()  # the next refresh (or await) commits them
        other.abort()
        assert other.run("calc", run.id).note == "pending"
    assert rl.run.tag == "from elsewhere"
    other_commit = StudyDB(wf.address_of("calc"))
    try:
        seen = db.feed.commits_seen
        other_commit.transact(lambda: setattr(other_commit.run("calc", run.id), "tag", "again"))
        eventually(lambda: db.feed.commits_seen > seen, True)
        assert db.sync() is True and db.sync() is False
        assert rl.run.tag == "again"
    finally:
        other_commit.close()

"""The short path of a hop and of a fan-out: fewer server round trips and commits per run.

Real ZEO servers, real launchers and real run processes; what is asserted is
which commits and round trips happen, never how long they take.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config, write_study
from launch_support import Background, create_runs, make_study, run_of, serve, wait_until

from motoko.flow.workflow import Workflow
from motoko.launch import launcher as launcher_module
from motoko.launch.claims import ALONE_AHEAD
from motoko.launch.service import EmbeddedLauncher
from motoko.study.database import StudyDB
from motoko.study.server import ensure_server
from motoko.study.states import CREATED, FINISHED, LAUNCHED, RUNNING

SLOW_POLL = "poll: {initial: 30, factor: 2, maximum: 60}\nlost_after: 5\nlauncher: {poll: 30, heartbeat: 1}\n"


def recorded(db: StudyDB, what: str = "catch_up") -> list[Any]:
    """Record what each call of ``db.<what>`` returned (the real method still does the work)."""
    results: list[Any] = []
    method = getattr(db, what)

    def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        results.append(result)
        return result

    setattr(db, what, call)
    return results


def test_catch_up_sees_this_process_commits_at_once_and_asks_the_server_for_others(workdir):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    address = ensure_server(workdir)
    db = StudyDB(address)
    sibling = db.sibling()
    other = StudyDB(address)  # another client: as another process
    try:
        assert sibling.catch_up() is True  # never began with the server yet
        db.transact(lambda: db.conn.root().__setitem__("hop", 1))
        # the commit is this process's own, already in the shared client: no round trip
        assert sibling.catch_up() is False
        assert sibling.conn.root()["hop"] == 1
        seen = db.feed.commits_seen
        other.transact(lambda: other.conn.root().__setitem__("hop", 2))
        wait_until(lambda: db.feed.commits_seen > seen, 10, "the server's notice of the other client's commit")
        assert sibling.catch_up() is True  # another client committed: ask the server
        assert sibling.conn.root()["hop"] == 2
        assert sibling.catch_up() is False
    finally:
        sibling.close()
        db.close()
        other.close()


def test_an_embedded_launcher_and_its_workflow_skip_the_server_round_trip_for_each_others_commits(workdir):
    # Polls of 30 s: awaits resolving in seconds prove that each side was told in-process.
    write_study(workdir, "s", "{x: int}", "pass\n", launch="#!/bin/bash\nexit 0\n")
    write_config(workdir, ["s"], SLOW_POLL)
    workflow = Workflow(workdir, run_name="hop")
    embedded = EmbeddedLauncher(workflow.config, databases={str(db.address): db for db in workflow.databases}).start()
    try:
        (launcher,) = embedded.launchers
        launcher_calls = recorded(launcher.db)
        workflow_calls = recorded(workflow.main_db)

        async def flow() -> None:
            await workflow.s.createTask(x=0)  # the launcher's first cycles meet the server once
            launcher_calls.clear()
            workflow_calls.clear()
            for x in range(1, 4):
                await workflow.s.createTask(x=x)

        asyncio.run(flow())
        assert len(launcher_calls) >= 3 and not any(launcher_calls)  # each insert claimed without a round trip
        assert False in workflow_calls  # each wait woken by a settle re-checked without one
        assert [run.state for run, _ in workflow.s.select()] == [FINISHED] * 4
    finally:
        embedded.stop()
        workflow.close()


def test_a_run_that_ends_at_once_is_marked_running_and_settled_in_one_commit(workdir, monkeypatch):
    # A window long enough for any machine: the run surely ends within it.
    monkeypatch.setattr(launcher_module, "START_WINDOW", 30.0)
    config, db = make_study(workdir, "launcher: {poll: 30}\n", launch="#!/bin/bash\nexit 0\n")
    observer = StudyDB(db.address)
    try:
        commits: list[frozenset[bytes] | None] = []
        observer.feed.subscribe(commits.append)
        (rid,) = create_runs(db, x=1)
        oid = db.run("s", rid)._p_oid
        report = serve(config, once=True)
        assert report.finished == 1
        run = run_of(observer, rid)  # a round trip: every notice before it has arrived
        assert run.state == FINISHED and run.started is not None and run.started <= run.finished
        touching = [oids for oids in commits if oids and oid in oids]
        assert len(touching) == 3  # the insert, the claim, then RUNNING and FINISHED together
        # Through RUNNING in that one move: its index and counter are not rewritten.
        study = observer.study("s")
        running = [study.state_counts[RUNNING], study.by_state.get(RUNNING)]
        assert not {record._p_oid for record in running if record is not None} & touching[-1]
        assert study.counts() == {FINISHED: 1} and study.check_indexes() == []
    finally:
        observer.close()
        db.close()


def test_a_local_launcher_alone_claims_ahead_and_executes_every_run_once(workdir):
    release = workdir / "release"
    ran = workdir / "ran"
    launch = f'#!/bin/bash\necho "$MOTOKO_RUN_ID" >> {ran}\nwhile [ ! -e {release} ]; do sleep 0.02; done\n'
    config, db = make_study(workdir, "launcher: {poll: 30}\n", launch=launch)
    runs = 2 * ALONE_AHEAD
    create_runs(db, x=list(range(runs)))
    background = Background(config, once=True, max_parallel=1)
    try:

        def active() -> int:
            db.abort()
            study = db.study("s")
            return len(study.ids_in_state(LAUNCHED)) + len(study.ids_in_state(RUNNING))

        wait_until(lambda: active() == 1 + ALONE_AHEAD, 60, f"{1 + ALONE_AHEAD} runs claimed")
        assert len(db.study("s").ids_in_state(CREATED)) == runs - 1 - ALONE_AHEAD
    finally:
        release.touch()
    report = background.join(120)
    assert report.executed == runs and report.finished == runs
    db.abort()
    assert len(db.study("s").ids_in_state(FINISHED)) == runs
    assert sorted(int(line) for line in ran.read_text().split()) == sorted(db.study("s").runs.keys())
    db.close()


@pytest.mark.parametrize("fails", [False, True])
def test_a_local_runs_shell_writes_its_output_files(workdir, fails):
    launch = "#!/bin/bash\necho out\necho err >&2\n" + ("exit 3\n" if fails else "")
    config, db = make_study(workdir, "", launch=launch)
    (rid,) = create_runs(db, x=1)
    serve(config, once=True)
    run = run_of(db, rid)
    folder = Path(run.run_path)
    assert (folder / "stdout").read_text() == "out\n" and (folder / "stderr").read_text() == "err\n"
    assert run.state == ("FAILED" if fails else FINISHED)
    if fails:
        assert run.error.splitlines() == ["exit code 3", "err"]
    db.close()



def test_a_run_whose_process_cannot_start_fails_with_the_reason_and_the_launcher_goes_on(workdir):
    # Values each short enough for a variable, too long together for an environment
    # (Linux: 2 MiB of arguments and environment): the kernel refuses to start it.
    fields = [f"t{i}" for i in range(24)]
    job = "{x: int, " + ", ".join(f"{name}: str" for name in fields) + "}"
    config, db = make_study(workdir, "", job=job, launch="#!/bin/bash\nexit 0\n")
    (huge,) = create_runs(db, x=1, **{name: "y" * 120_000 for name in fields})
    (small,) = create_runs(db, x=2, **{name: "y" for name in fields})
    report = serve(config, once=True)
    assert (report.executed, report.finished, report.failed) == (2, 1, 1)
    failed = run_of(db, huge)
    assert failed.state == "FAILED"
    assert failed.error == "could not start: [Errno 7] Argument list too long: '/bin/bash'"
    assert run_of(db, small).state == FINISHED
    db.close()

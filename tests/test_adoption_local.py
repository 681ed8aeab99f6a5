"""A local run outliving its killed launcher is adopted by the next launcher, never run twice.

The command runs under a small shell that records its exit status in
``exit.<attempt>``, so the adopting launcher settles the run with its real
exit code; a process still running is found by its environment markers
(even when its pid was never recorded) and watched to its end. Retries are
allowed (``retries: 2, retry_on: [LOST]``): a run wrongly given up would run
twice, and the ``done`` file would show it.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from launch_support import (
    create_runs,
    kill_launcher,
    make_study,
    run_of,
    serve,
    start_launcher,
    wait_until,
)
from ZODB.POSException import ConflictError

from motoko.config import load_config
from motoko.launch import attempts
from motoko.study.container import LauncherRecord
from motoko.study.database import StudyDB
from motoko.study.records import FAILED, FINISHED, LAUNCHED, LOST, RUNNING, now

pytestmark = pytest.mark.slow

CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.3, heartbeat: 0.5, cancel_grace: 1}\n"
RETRIES = "retries: 2\nretry_on: [LOST]\n"


def test_killed_launchers_running_process_is_adopted_and_settled_once(workdir):
    done = workdir / "done"
    launch = f'#!/bin/bash\nsleep 4\necho "$MOTOKO_RUN_ID" >> {done}\n[ "$MOTOKO_PARAM_x" = 2 ] && exit 3\nexit 0\n'
    _, db = make_study(workdir, CONFIG, launch=launch, extra=RETRIES)
    ids = create_runs(db, x=[1, 2])
    first = start_launcher(workdir)
    try:
        wait_until(lambda: all(run_of(db, r).state == RUNNING for r in ids), 30, "the runs to start")
    finally:
        kill_launcher(first)  # the launcher alone: its runs' processes live on
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(60)
    finally:
        kill_launcher(second)
    ok, bad = (run_of(db, r) for r in ids)
    assert (ok.state, ok.attempt, ok.exit_code) == (FINISHED, 1, 0)
    assert (bad.state, bad.attempt, bad.exit_code) == (FAILED, 1, 3) and "exit code 3" in bad.error
    assert sorted(int(x) for x in done.read_text().split()) == sorted(ids)  # each run's work once
    assert (workdir / "second.log").read_text().count("adopted run s.") == 2


def test_a_run_that_ended_after_its_launcher_died_is_settled_from_its_exit_file(workdir):
    _, db = make_study(workdir, CONFIG, launch="#!/bin/bash\nsleep 1\nexit 5\n", extra=RETRIES)
    (rid,) = create_runs(db, x=1)
    first = start_launcher(workdir)
    try:
        wait_until(lambda: run_of(db, rid).state == RUNNING, 30, "the run to start")
    finally:
        kill_launcher(first)
    run_dir, launcher = Path(run_of(db, rid).run_path), run_of(db, rid).launcher
    wait_until(lambda: attempts.recorded_status(run_dir, rid, 1, launcher) is not None, 30, "the orphan to end")
    report = serve(load_config(workdir), idle_exit=4)
    run = run_of(db, rid)
    assert (run.state, run.attempt, run.exit_code) == (FAILED, 1, 5)  # its real outcome, not LOST and retried
    assert report.failed == 1 and report.lost_detected == 0


def test_a_process_whose_pid_was_never_recorded_is_found_by_its_environment(workdir):
    """The launcher died between starting the process and committing its pid."""
    _, db = make_study(workdir, CONFIG, extra=RETRIES)
    (rid,) = create_runs(db, x=1)
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_dir = workdir / "orphan-run"
    run_dir.mkdir()

    def started_by_a_dead_launcher() -> None:
        record = LauncherRecord("dead-launcher", "here", dead.pid, "local", ["s"])
        record.heartbeat = hour_ago
        db.launchers()["dead-launcher"] = record
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, "LAUNCHED", launcher="dead-launcher", heartbeat=hour_ago, run_path=str(run_dir))
        run.launched = run.created = hour_ago

    db.transact(started_by_a_dead_launcher)
    markers = {"MOTOKO_STUDY": "s", "MOTOKO_RUN_ID": str(rid), "MOTOKO_ATTEMPT": "1", "MOTOKO_LAUNCHER": "dead-launcher"}
    attempts.write_fence(run_dir, 1)
    command = attempts.recorded(1, ("sleep", "4"))
    orphan = subprocess.Popen(command, cwd=run_dir, env={**os.environ, **markers}, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], env={**os.environ, **markers, "MOTOKO_RUN_ID": "999"}, start_new_session=True)
    try:
        report = serve(load_config(workdir), idle_exit=3)  # judged once its connection is older than lost_after
        assert orphan.wait(10) == 0
        assert stranger.poll() is None  # another run's process is never touched
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()
    run = run_of(db, rid)
    assert (run.state, run.attempt, run.exit_code) == (FINISHED, 1, 0)
    assert report.finished == 1 and report.lost_detected == 0


def test_a_claimed_run_that_never_started_runs_once_more_even_without_retries(workdir):
    """Its launcher died between the claim and starting the process: the fence was never written."""
    done = workdir / "done"
    _, db = make_study(workdir, CONFIG, launch=f'#!/bin/bash\necho "$MOTOKO_RUN_ID" >> {done}\n')
    (rid,) = create_runs(db, x=1)
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    dead = subprocess.Popen(["true"])
    dead.wait()

    def claimed_by_a_dead_launcher() -> None:
        record = LauncherRecord("dead-launcher", "here", dead.pid, "local", ["s"])
        record.heartbeat = hour_ago
        db.launchers()["dead-launcher"] = record
        study = db.study("s")
        run = study.runs[rid]
        run_dir = workdir / "studies" / "s" / "BD-s-runs" / f"run-{rid}"
        study.transition(run, "LAUNCHED", launcher="dead-launcher", heartbeat=hour_ago, run_path=str(run_dir))
        run.launched = run.created = hour_ago

    db.transact(claimed_by_a_dead_launcher)
    report = serve(load_config(workdir), idle_exit=3)
    run = run_of(db, rid)
    assert (run.state, run.attempt) == (FINISHED, 2) and report.finished == 1
    assert run.history[0]["reason"] == "attempt 1 never ran: requeued"
    assert done.read_text().split() == [str(rid)]


def test_an_adoption_and_a_lost_declaration_of_the_same_run_never_both_commit(workdir):
    """One connection adopts (launcher), another declares LOST (state): the second to commit conflicts."""
    _, db = make_study(workdir, "lost_after: 2\n")
    (rid,) = create_runs(db, x=1)
    db.transact(lambda: db.study("s").transition(db.study("s").runs[rid], LAUNCHED))
    other = StudyDB(db.address)
    try:
        db.abort()
        other.abort()
        adopted = db.study("s").runs[rid]
        adopted.launcher = "adopter"
        adopted.heartbeat = now()
        declared = other.study("s").runs[rid]
        other.study("s").transition(declared, LOST, error="silent")
        db.commit(attempts=1)
        with pytest.raises(ConflictError):
            other.tm.commit()
        other.abort()
        stored = run_of(db, rid)
        assert (stored.state, stored.launcher) == (LAUNCHED, "adopter")
    finally:
        other.close()


def test_runs_whose_directories_were_written_ahead_run_once_after_their_launcher_is_killed(workdir):
    """A launcher writes the directories of its next queued runs before a slot frees; it opens
    them to their attempt (the fence) only when it starts them. Killed with SIGKILL meanwhile:
    the run executing is adopted, those written ahead never started and run once more, none
    LOST (no retries are allowed here: a LOST run would stay LOST)."""
    done = workdir / "done"
    _, db = make_study(workdir, CONFIG, launch=f'#!/bin/bash\nsleep 3\necho "$MOTOKO_RUN_ID" >> {done}\n')
    ids = create_runs(db, x=[1, 2, 3, 4])
    first = start_launcher(workdir, "--max-parallel", "1")
    tree = workdir / "studies" / "s" / "BD-s-runs"
    try:
        wait_until(lambda: any(run_of(db, r).state == RUNNING for r in ids), 30, "a run to start")
        running = next(r for r in ids if run_of(db, r).state == RUNNING)
        def written_ahead() -> list[int]:
            return [r for r in ids if r != running and (tree / f"run-{r}" / "run.json").exists()]

        wait_until(written_ahead, 10, "a directory written ahead")
        ahead = written_ahead()
        assert ahead and not any((tree / f"run-{r}" / attempts.FENCE_FILE).exists() for r in ahead)
    finally:
        kill_launcher(first)
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(90)
    finally:
        kill_launcher(second)
    runs = {r: run_of(db, r) for r in ids}
    assert {r: run.state for r, run in runs.items()} == dict.fromkeys(ids, FINISHED)
    assert runs[running].attempt == 1 and all(runs[r].attempt == 2 for r in ahead)
    assert all("never ran" in runs[r].history[0]["reason"] for r in ahead)
    assert sorted(int(x) for x in done.read_text().split()) == sorted(ids)  # each run's work once

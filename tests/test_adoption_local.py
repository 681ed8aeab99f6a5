"""A local run outliving its killed launcher: stopped, and waited for, before the run is LOST and retried.

Its exit status died with its launcher (only a parent learns it), so a
local run is not adopted; what matters is that its retry never runs next
to it, even when the launcher died before recording the process's pid.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess

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

from motoko.config import load_config
from motoko.study.container import LauncherRecord
from motoko.study.records import FINISHED, LOST, RUNNING

pytestmark = pytest.mark.slow

CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.3, heartbeat: 0.5, cancel_grace: 1}\n"
#: Attempt 1 works long and notes when it is stopped; attempt 2 is quick. Both log their start.
LAUNCH = """#!/bin/bash
echo "start $MOTOKO_ATTEMPT" >> {log}
if [ "$MOTOKO_ATTEMPT" = 1 ]; then
  trap 'echo "stopped $MOTOKO_ATTEMPT" >> {log}; exit 143' TERM
  sleep 60 & wait
fi
"""


def test_killed_launchers_process_is_stopped_before_its_retry_starts(workdir):
    log = workdir / "log"
    _, db = make_study(workdir, CONFIG, launch=LAUNCH.format(log=log), extra="retries: 1\nretry_on: [LOST]\n")
    (rid,) = create_runs(db, x=1)
    first = start_launcher(workdir)
    try:
        wait_until(lambda: run_of(db, rid).state == RUNNING and log.exists(), 30, "the run to start")
    finally:
        kill_launcher(first)  # the launcher alone: its run's process lives on
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(60)
    finally:
        kill_launcher(second)
    run = run_of(db, rid)
    assert (run.state, run.attempt) == (FINISHED, 2)
    assert run.history[0]["state"] == LOST and "was stopped before any retry" in run.history[0]["error"]
    assert log.read_text().split("\n")[:3] == ["start 1", "stopped 1", "start 2"]


def test_a_process_whose_pid_was_never_recorded_is_found_by_its_environment(workdir):
    """The launcher died between starting the process and committing its pid."""
    _, db = make_study(workdir, CONFIG)
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
    orphan = subprocess.Popen(["sleep", "60"], env={**os.environ, **markers}, start_new_session=True)
    stranger = subprocess.Popen(["sleep", "60"], env={**os.environ, **markers, "MOTOKO_RUN_ID": "999"}, start_new_session=True)
    try:
        # Judged once the new launcher's connection is older than lost_after (2 s).
        report = serve(load_config(workdir), idle_exit=4)
        assert orphan.wait(10) == -signal.SIGTERM
        assert stranger.poll() is None  # another run's process is never touched
    finally:
        for proc in (orphan, stranger):
            proc.kill()
            proc.wait()
    run = run_of(db, rid)
    assert run.state == LOST and report.lost_detected == 1
    assert f"its process {orphan.pid} outlived its launcher and was stopped before any retry" in run.error

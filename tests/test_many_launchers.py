"""Many real launcher processes on one database: every run once, fair shares, counters exact.

Also the walltime-aware claiming of a launcher with a deadline (a pilot's),
driven in-process through its bounded modes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import launch_support
from conftest import motoko
from launch_support import create_runs, make_study

from motoko.study.records import CREATED, FAILED, FINISHED, LOST

COUNTING = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_FILE"\n'


def test_many_launcher_processes_share_the_runs_once_each_and_show_their_conflicts(workdir: Path):
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n", launch=COUNTING)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--executor", "local", "-j", "1", "--idle-exit", "15"],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COUNT_FILE": str(workdir / "executions")},
        )
        for _ in range(6)
    ]
    try:
        # Runs come once every launcher is serving: each can then take a share.
        deadline = time.monotonic() + 60
        while len([r for r in db.launchers().values() if r.stopped is None]) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
            db.abort()
        ids = create_runs(db, x=list(range(120)))
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            db.abort()
            finished = db.study("s").count(FINISHED)
            # Asked while the launchers live (idle, they stay 15 s): all 120
            # runs may end between two looks.
            if status is None and finished > 30:
                status = motoko("launcher", "status", cwd=workdir)
            if finished == len(ids):
                break
            time.sleep(0.2)
        outputs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(p.returncode == 0 for p in procs), outputs
    db.abort()
    executions = (workdir / "executions").read_text().split()
    assert sorted(executions, key=int) == [str(i) for i in ids], "every run executed exactly once"
    study = db.study("s")
    assert study.counts() == {FINISHED: len(ids)} and study.check_indexes() == []
    records = [r for r in db.launchers().values() if "s" in r.studies]
    assert len(records) == 6 and sum(r.executed for r in records) == len(ids)
    # Most launchers take a share. An exactly even share is not asserted: on a
    # busy CI machine a launcher whose process is slow to get the CPU took 0 of
    # 120 (shares 14, 66, 28, 0, 4, 8). Fairness is measured, not asserted, by
    # benchmarks/launchers.py (issue 16 keeps it open).
    assert sum(r.executed > 0 for r in records) >= 4, [r.executed for r in records]
    assert all("conflict retries" in out for out in outputs)
    assert status is not None and status.returncode == 0, status
    header = next(line for line in status.stdout.splitlines() if line.startswith("host"))
    assert header.split() == ["host", "pid", "executor", "pilot", "job", "runs", "conflict", "retries", "per", "run"]


def test_a_launcher_with_a_deadline_claims_only_what_fits_then_leaves(workdir: Path):
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 0.5}\n", extra="run: {walltime: float}\n")
    schema = db.study("s").schema
    from motoko.study.space import expand

    short = [r.id for r, _ in db.insert("s", expand(schema, {"x": [1, 2]}), {"walltime": 1.0}, run_name="t")]
    long = [r.id for r, _ in db.insert("s", expand(schema, {"x": [3]}), {"walltime": 600.0}, run_name="t")]
    started = time.monotonic()
    report = launch_support.serve(config, "local", walltime_end=time.time() + 12, walltime_margin=5, idle_exit=60)
    # It left once its remaining time fit no run: long before idle_exit.
    assert time.monotonic() - started < 45
    assert report.executed == 2
    db.abort()
    assert [launch_support.run_of(db, rid).state for rid in short] == [FINISHED, FINISHED]
    assert launch_support.run_of(db, long[0]).state == CREATED


def test_a_one_slot_launcher_claims_its_next_run_while_the_current_one_executes(workdir: Path):
    # The cycle that settles a run (or marks one RUNNING) also claims the next:
    # the slot never waits for a claim's own commit, one commit per run.
    config, db = make_study(workdir, "launcher: {heartbeat: 5, poll: 1}\n", launch="#!/bin/bash\nsleep 1\n")
    ids = create_runs(db, x=list(range(5)))
    report = launch_support.serve(config, "local", once=True, max_parallel=1, claim_ahead=1)
    assert report.finished == len(ids)
    db.abort()
    runs = sorted((launch_support.run_of(db, rid) for rid in ids), key=lambda run: run.started)
    overlapping = [later.launched < run.finished for run, later in zip(runs[1:], runs[2:], strict=False)]
    assert overlapping == [True] * (len(ids) - 2), "each next run was claimed before the running one ended"


#: A run that SLURM's TERM reaches: it says it started, then dies of TERM.
KILLED_BY_TERM = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_FILE"\nkill -TERM $$\nsleep 30\n'


def _pilot(workdir: Path) -> subprocess.Popen[str]:
    """A launcher as a pilot starts it (a SLURM job id and a deadline), without SLURM."""
    return subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--executor", "local", "-j", "1",
         "--idle-exit", "3", "--walltime-end", f"{time.time() + 600:.0f}"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "COUNT_FILE": str(workdir / "executions"), "SLURM_JOB_ID": "4242"},
    )


def _started(workdir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (workdir / "executions").exists():
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.005)


def test_a_pilot_whose_run_ends_by_term_just_before_its_own_term_records_it_lost(workdir: Path):
    # scancel signals the run and the pilot at once; the run's end was heard
    # first and the pilot, not stopping yet, recorded it FAILED: never retried.
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n", launch=KILLED_BY_TERM)
    pilot = _pilot(workdir)
    try:
        [rid] = create_runs(db, x=[1])
        _started(workdir)
        time.sleep(0.2)  # its end is heard well before the pilot's TERM
        pilot.send_signal(signal.SIGTERM)
        output = pilot.communicate(timeout=60)[0]
    finally:
        if pilot.poll() is None:
            os.killpg(pilot.pid, signal.SIGKILL)
            pilot.wait()
    assert pilot.returncode == 0, output
    run = launch_support.run_of(db, rid)
    assert run.state == LOST, (run.state, run.error)
    assert str(run.error).startswith("its pilot (SLURM job 4242) was stopped: killed by SIGTERM"), run.error


def test_a_pilots_run_killed_by_term_while_the_pilot_goes_on_is_failed_after_a_grace(workdir: Path):
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n", launch=KILLED_BY_TERM)
    pilot = _pilot(workdir)
    try:
        [rid] = create_runs(db, x=[1])
        output = pilot.communicate(timeout=60)[0]  # it leaves after --idle-exit
    finally:
        if pilot.poll() is None:
            os.killpg(pilot.pid, signal.SIGKILL)
            pilot.wait()
    assert pilot.returncode == 0, output
    assert "1 failed" in output, output
    run = launch_support.run_of(db, rid)
    assert run.state == FAILED and str(run.error).startswith("killed by SIGTERM"), (run.state, run.error)
    assert (workdir / "executions").read_text().split() == [str(rid)], "held, never run again"


def test_a_launcher_that_claimed_alone_gives_its_queue_back_when_another_joins(workdir: Path):
    # Alone, a launcher claims 32 runs ahead; a second one started a moment
    # later found them all claimed and idled (seen in CI with two hosts).
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 0.5}\n", launch=COUNTING + "sleep 0.4\n")
    env = {**os.environ, "COUNT_FILE": str(workdir / "executions")}

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--executor", "local", "-j", "1",
             "--idle-exit", "3", "--machine-name", name],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
        )

    procs = [start("first")]
    try:
        ids = create_runs(db, x=list(range(12)))
        deadline = time.monotonic() + 60
        while db.study("s").count(CREATED):  # all claimed by the first, alone
            assert time.monotonic() < deadline, "the first launcher never claimed every run"
            time.sleep(0.05)
            db.abort()
        procs.append(start("second"))
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "given back to launchers that joined" in outputs[0], outputs
    db.abort()
    study = db.study("s")
    assert study.counts() == {FINISHED: len(ids)} and study.check_indexes() == []
    runs = list(study.runs.values())
    assert all(run.attempt == 1 and run.history == () for run in runs), "a run given back is no attempt"
    by = {name: sum(run.machine_name == name for run in runs) for name in ("first", "second")}
    assert by["second"] >= 3, by
    executions = (workdir / "executions").read_text().split()
    assert sorted(executions, key=int) == [str(i) for i in ids], "every run executed exactly once"


def test_only_runs_still_claimed_and_not_asked_to_stop_are_given_back(workdir: Path):
    from motoko.launch.service import build_launcher
    from motoko.study.records import LAUNCHED

    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n")
    ids = create_runs(db, x=[1, 2, 3])
    launcher = build_launcher(config, executor="local")
    try:
        claimed = launcher.db.transact(lambda: launcher._claim(3))
        assert sorted(item.run_id for item in claimed) == ids
        stopped, kept, gone = (item.run_id for item in claimed)
        # Meanwhile, another process asks one to stop and deletes another.
        db.abort()
        db.transact(lambda: setattr(db.run("s", stopped), "stop_requested", True))
        db.transact(lambda: db.study("s").delete(db.run("s", gone)))
        launcher.db.catch_up()
        given = launcher.db.transact(lambda: launcher._give_back(claimed))
    finally:
        launcher.db.close()
    assert [item.run_id for item in given] == [kept]
    db.abort()
    study = db.study("s")
    assert db.run("s", kept).state == CREATED and db.run("s", kept).launcher is None
    assert db.run("s", stopped).state == LAUNCHED, "a run asked to stop stays its launcher's, to be cancelled"
    assert study.check_indexes() == []

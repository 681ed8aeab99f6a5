"""Runs outlive their SLURM launcher: adopted by the next one, never run twice, never thrown away.

Against the real single-node SLURM (tests/engines/start-slurm.sh). Every
run's script appends its id to a shared ``done`` file at the end of its
work, so "exactly once" is counted, not assumed; retries are allowed
(``retries: 2, retry_on: [LOST]``), so a run wrongly declared LOST would
show up twice.
"""

from __future__ import annotations

import asyncio
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
from test_executor_slurm import slurm  # noqa: F401 (the session fixture)

from motoko.config import load_config
from motoko.launch import attempts
from motoko.launch.executors.base import Launch, Orphan
from motoko.launch.executors.slurm import SlurmExecutor
from motoko.launch.executors.slurm_scripts import _write_run_script, script_path
from motoko.study.container import LauncherRecord
from motoko.study.records import FINISHED

pytestmark = pytest.mark.slow

CONFIG = (
    "poll: {initial: 0.05, factor: 2, maximum: 0.5}\n"
    "lost_after: 2\n"
    "launcher: {executor: slurm, poll: 0.3, heartbeat: 0.5, cancel_grace: 1, bundle_size: %d}\n"
)
RETRIES = "retries: 2\nretry_on: [LOST]\n"
#: Works for a while, then says it is done (once per execution).
WORK = '#!/bin/bash\nsleep %s\necho "$MOTOKO_RUN_ID" >> %s\n'


def _queued(jobs: set[str]) -> list[str]:
    """Those of ``jobs`` SLURM still queues or runs (other users' jobs are not ours to judge)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%F"], capture_output=True, text=True).stdout
    return [line for line in out.split() if line.split("|")[1] in jobs]


def _done(path: Path) -> list[int]:
    return sorted(int(line) for line in path.read_text().split()) if path.exists() else []


@pytest.mark.parametrize("bundle", [1, 3])
def test_killed_launchers_jobs_are_adopted_and_each_run_works_once(slurm, workdir, bundle):  # noqa: F811
    done = workdir / "done"
    config, db = make_study(workdir, CONFIG % bundle, launch=WORK % (4, done), extra=RETRIES)
    ids = create_runs(db, x=list(range(6)))
    first = start_launcher(workdir)
    try:
        # Killed while every run is queued or running and its job id recorded.
        wait_until(lambda: all(run_of(db, r).executor_id for r in ids), 60, "every job to be submitted")
    finally:
        kill_launcher(first)
    assert _done(done) == []
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(120)
    finally:
        kill_launcher(second)
    for rid in ids:
        run = run_of(db, rid)
        assert (run.state, run.attempt, run.exit_code) == (FINISHED, 1, 0), (rid, run.state, run.error)
    assert _done(done) == sorted(ids)  # each run's work exactly once
    assert "adopted run s." in (workdir / "second.log").read_text()
    assert _queued({run_of(db, r).executor_id.split("_")[0] for r in ids}) == []  # no job of ours left


def test_a_finished_job_of_a_dead_launcher_is_settled_from_its_exit_status(slurm, workdir):  # noqa: F811
    done = workdir / "done"
    launch = f'#!/bin/bash\nsleep 1\necho "$MOTOKO_RUN_ID" >> {done}\n[ "$MOTOKO_PARAM_x" = 1 ] && exit 5\nexit 0\n'
    config, db = make_study(workdir, CONFIG % 1, launch=launch, extra=RETRIES)
    ids = create_runs(db, x=[0, 1])
    first = start_launcher(workdir)
    try:
        wait_until(lambda: all(run_of(db, r).executor_id for r in ids), 60, "every job to be submitted")
    finally:
        kill_launcher(first)
    wait_until(lambda: len(_done(done)) == 2, 60, "both jobs to end without their launcher")
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(120)
    finally:
        kill_launcher(second)
    ok, bad = (run_of(db, r) for r in ids)
    assert (ok.state, ok.exit_code, ok.attempt) == (FINISHED, 0, 1)
    assert (bad.state, bad.exit_code, bad.attempt) == ("FAILED", 5, 1) and "exit code 5" in bad.error
    assert _done(done) == sorted(ids)


def _orphan(run_dir: Path, attempt: int, executor_id: str | None = None) -> Orphan:
    return Orphan("s", 1, attempt, run_dir, "gone", None, executor_id)


def _launch(run_dir: Path, attempt: int, done: Path) -> Launch:
    return Launch("s", 1, run_dir, ("bash", "-c", f"echo {attempt} >> {done}"), dict(os.environ), attempt=attempt)


def _sbatch(script: Path, *options: str) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", "--job-name=motoko-fence-test", f"--output={script.parent}/slurm-%j.out", *options, str(script)],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.strip().split(";")[0]


def _ended(job: str) -> bool:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip() in ("COMPLETED", "FAILED", "CANCELLED", "")


def test_a_stale_task_of_an_earlier_attempt_never_runs(slurm, tmp_path):  # noqa: F811
    """Attempt 1's job waits in the queue while the run moves on to attempt 2: it exits doing nothing."""
    done = tmp_path / "done"
    old = _launch(tmp_path, 1, done)
    _write_run_script(old)
    job = _sbatch(script_path(old), "--hold")
    try:
        _write_run_script(_launch(tmp_path, 2, done))  # the retry's fence
        subprocess.run(["scontrol", "release", job], check=True)
        wait_until(lambda: _ended(job), 60, "the stale job to end")
    finally:
        subprocess.run(["scancel", job], check=False)
    assert not done.exists() and attempts.read_exit(tmp_path, 1) is None
    assert not attempts.started_file(tmp_path, 1).exists()
    assert "attempt 1 of s run 1 is stale" in (tmp_path / f"slurm-{job}.out").read_text()


def test_an_unrecorded_queued_job_is_revoked_before_the_run_is_given_up(slurm, tmp_path):  # noqa: F811
    """Its launcher died between sbatch and recording the job id: the job must not run after the run is LOST."""
    done = tmp_path / "done"
    launch = _launch(tmp_path, 1, done)
    _write_run_script(launch)
    job = _sbatch(script_path(launch), "--hold")
    try:
        verdict = asyncio.run(SlurmExecutor(1).inspect(_orphan(tmp_path, 1)))
        assert not verdict.adopt and "attempt 1 left no trace of a SLURM job" in verdict.reason
        assert attempts.fence(tmp_path) == "revoked 1"
        subprocess.run(["scontrol", "release", job], check=True)
        wait_until(lambda: _ended(job), 60, "the revoked job to end")
    finally:
        subprocess.run(["scancel", job], check=False)
    assert not done.exists()


def test_inspect_adopts_what_left_an_exit_status_or_a_job_id(slurm, tmp_path):  # noqa: F811
    executor = SlurmExecutor(1)
    attempts.write_fence(tmp_path, 3)
    attempts.record_exit(tmp_path, 3, 0)
    assert asyncio.run(executor.inspect(_orphan(tmp_path, 3))).adopt
    attempts.write_fence(tmp_path, 4)
    verdict = asyncio.run(executor.inspect(_orphan(tmp_path, 4, executor_id="123_4")))
    assert verdict.adopt and "123_4" in verdict.reason
    attempts.write_started(tmp_path, 5, "456")
    verdict = asyncio.run(executor.inspect(_orphan(tmp_path, 5, executor_id="queued")))
    assert verdict.adopt and "456" in verdict.reason


def test_a_retry_waits_until_slurm_ended_the_earlier_attempt(slurm, workdir):  # noqa: F811
    """Attempt 1 still runs (its run was declared LOST by someone): it is cancelled before attempt 2 starts."""
    done = workdir / "done"
    first = Launch("s", 1, workdir, ("bash", "-c", f"touch running; sleep 30; echo 1 >> {done}"), dict(os.environ), attempt=1)
    _write_run_script(first)
    job = _sbatch(script_path(first))
    try:
        wait_until(lambda: (workdir / "running").exists(), 60, "attempt 1's command to start")

        async def retry() -> None:
            executor = SlurmExecutor(1, poll=0.2)
            await executor.submit(_launch(workdir, 2, done))
            outcome = await asyncio.wait_for(executor.outcomes.get(), 120)
            assert outcome.succeeded, outcome.describe()
            await executor.close()

        asyncio.run(retry())
    finally:
        subprocess.run(["scancel", job], check=False)
    assert done.read_text() == "2\n"  # attempt 1 never reached its end
    state = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    assert state.stdout.strip() == "CANCELLED"


def test_a_claimed_run_that_never_reached_slurm_is_queued_again_without_a_retry(slurm, workdir):  # noqa: F811
    """Its launcher died between the claim and sbatch: nothing ran, so it runs once more even with retries: 0."""
    done = workdir / "done"
    _, db = make_study(workdir, CONFIG % 1, launch=WORK % (0, done))
    (rid,) = create_runs(db, x=1)
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    run_dir = workdir / "studies" / "s" / "BD-s-runs" / f"run-{rid}"

    def claimed_by_a_dead_launcher() -> None:
        record = LauncherRecord("dead-launcher", "here", 999_999_999, "slurm", ["s"])
        record.heartbeat = hour_ago
        db.launchers()["dead-launcher"] = record
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, "LAUNCHED", launcher="dead-launcher", heartbeat=hour_ago, run_path=str(run_dir))
        run.launched = run.created = hour_ago

    db.transact(claimed_by_a_dead_launcher)
    report = serve(load_config(workdir), "slurm", idle_exit=4)
    run = run_of(db, rid)
    assert (run.state, run.attempt) == (FINISHED, 2) and report.finished == 1
    assert run.history[0]["state"] == "LOST" and run.history[0]["reason"] == "attempt 1 never ran: requeued"
    assert "left no trace of a SLURM job" in run.history[0]["error"]
    assert _done(done) == [rid]

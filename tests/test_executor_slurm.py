"""The SLURM executor against a real single-node SLURM (tests/engines/start-slurm.sh).

Nothing is mocked: runs are submitted with sbatch, tracked with squeue, and
reach the test's ZEO server from inside their SLURM jobs. When SLURM is not
running, the session fixture starts it, and fails (never skips) if it cannot.

SLURM counts time limits in whole minutes and checks them every 30 s, so the
time-limit run starts when this module starts and is checked by the module's
last test, while the others run.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import launch_support
import pytest
from conftest import REPO, motoko
from launch_support import create_runs, make_study, run_of

from motoko.config import WorkflowConfig
from motoko.errors import ConfigError
from motoko.launch.executors.base import Launch
from motoko.launch.executors.slurm import SlurmError, SlurmExecutor
from motoko.launch.executors.slurm_scripts import run_script
from motoko.launch.serving import LauncherReport
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, FAILED, FINISHED, LAUNCHED
from motoko.study.server import stop_server

pytestmark = pytest.mark.slow

FAST = (
    "poll: {initial: 0.05, factor: 2, maximum: 0.5}\n"
    "launcher: {executor: slurm, poll: 0.5, heartbeat: 1, cancel_grace: 1%s}\n"
)

#: doIt.py recording what SLURM told the run, through the run's own database connection.
RECORD_SLURM = """
import os
from motoko import current_run
run, job = current_run()
run.slurm_job = os.environ.get("SLURM_JOB_ID")
run.slurm_array = os.environ.get("SLURM_ARRAY_JOB_ID")
run.slurm_task = os.environ.get("SLURM_ARRAY_TASK_ID")
run.y = 2 * job.x
print("x is", job.x)
"""

SLEEPER = "#!/bin/bash\ntouch started\nexec sleep %d\n"


@pytest.fixture(scope="session")
def slurm() -> str:
    """A running SLURM: started by tests/engines/start-slurm.sh unless it already runs."""
    script = REPO / "tests" / "engines" / "start-slurm.sh"
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/engines/start-slurm.sh did not finish within 600 s")
    if proc.returncode != 0:
        pytest.fail(f"SLURM could not be started by {script}:\n{proc.stderr[-3000:]}")
    exports = [line for line in proc.stdout.splitlines() if line.startswith("export SLURM_CONF=")]
    if not exports:
        pytest.fail(f"{script} printed no `export SLURM_CONF=...`:\n{proc.stdout}")
    os.environ["SLURM_CONF"] = exports[-1].split("=", 1)[1]
    return os.environ["SLURM_CONF"]


def setup(
    root: Path, *, launch: str | None = None, doit: str = "pass\n", launcher: str = "", extra: str = "", job: str = "{x: int}"
) -> tuple[WorkflowConfig, StudyDB]:
    return make_study(root, FAST % launcher, job=job, doit=doit, launch=launch, extra=extra)


def serve(config: WorkflowConfig, **options: object) -> LauncherReport:
    return launch_support.serve(config, "slurm", **options)


def Background(config: WorkflowConfig, **options: object) -> launch_support.Background:  # noqa: N802
    return launch_support.Background(config, "slurm", **options)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


# -- the time-limit run: started with the module, checked by its last test ----------------


@pytest.fixture(scope="module", autouse=True)
def time_limited(slurm, tmp_path_factory):
    """A run with ``--time=00:00:05`` (one minute to SLURM) sleeping 120 s on its first attempt, serving meanwhile.

    Its study retries a TIMEOUT with the time doubled; the second attempt is quick.
    """
    root = tmp_path_factory.mktemp("timelimit") / "wf"
    root.mkdir()
    config, db = setup(
        root,
        launch='#!/bin/bash\nif [ "$MOTOKO_ATTEMPT" = 1 ]; then exec sleep 120; fi\n',
        # the study's option comes after motoko.yaml's, so it wins
        launcher=", slurm_options: ['--time=00:10:00']",
        extra="slurm_options: ['--time=00:00:05']\nretries: 1\nretry_on: []\nretry: {TIMEOUT: {time: x2, max_time: '00:00:08'}}\n",
    )
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    yield background, db, rid
    background.thread.join(150)
    db.close()
    stop_server(root, grace=5)


# -- tests ---------------------------------------------------------------------------------


def test_single_jobs_finish_with_outputs_and_exit_codes(slurm, workdir):
    config, db = setup(workdir, doit=RECORD_SLURM)
    ids = create_runs(db, x=[1, 2, 3])
    report = serve(config, once=True)
    assert report.finished == 3 and report.failed == 0
    jobs = set()
    for rid in ids:
        run = run_of(db, rid)
        assert run.state == FINISHED and run.exit_code == 0
        assert run.y == 2 * run.job.x
        run_dir = Path(run.run_path)
        assert (run_dir / "stdout").read_text() == f"x is {run.job.x}\n"
        assert (run_dir / "exit.1").read_text() == "0\n" and (run_dir / ".motoko-attempt").read_text() == "1\n"
        assert (run_dir / f"slurm-{run.slurm_job}.out").exists()
        assert run.slurm_array is None
        jobs.add(run.slurm_job)
    assert len(jobs) == 3  # one SLURM job per run


def test_bundles_become_job_arrays(slurm, workdir):
    config, db = setup(workdir, doit=RECORD_SLURM, launcher=", bundle_size: 5")
    ids = create_runs(db, x=list(range(12)))
    report = serve(config, once=True)
    assert report.finished == 12
    arrays: dict[str, set[int]] = {}
    for rid in ids:
        run = run_of(db, rid)
        assert run.state == FINISHED and run.y == 2 * run.job.x
        assert run.slurm_array is not None, "the run did not execute as an array task"
        arrays.setdefault(run.slurm_array, set()).add(int(run.slurm_task))
    assert sorted(map(sorted, arrays.values())) == [[0, 1], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    # SLURM itself knows them as arrays of that size.
    for array, tasks in arrays.items():
        state = subprocess.run(
            ["squeue", "--states=all", "-h", "-j", array, "-o", "%F %K %T"], capture_output=True, text=True
        ).stdout.split("\n")
        assert len([line for line in state if line.startswith(f"{array} ") and line.endswith("COMPLETED")]) == len(tasks)
    scripts = list((workdir / "studies" / "s" / "BD-s-runs" / "slurm-arrays").glob("*/array.sh"))
    assert len(scripts) == 3


def test_failed_run_records_exit_code_and_stderr(slurm, workdir):
    config, db = setup(workdir, launch="#!/bin/bash\necho 'solver diverged' >&2\nexit 3\n")
    (rid,) = create_runs(db, x=1)
    report = serve(config, once=True)
    assert report.failed == 1
    run = run_of(db, rid)
    assert run.state == FAILED and run.exit_code == 3
    assert "exit code 3" in run.error and "solver diverged" in run.error


def test_values_reach_the_run_unchanged_and_uninterpreted(slurm, workdir):
    launch = '#!/bin/bash\nprintf "%s" "$MOTOKO_PARAM_s" > got\n'
    config, db = setup(workdir, launch=launch, job="{x: int, s: str}")
    value = "a'b\"c $(touch PWNED) `touch PWNED2` ; $HOME \\n\nline two"
    (rid,) = [r.id for r, _ in db.insert("s", [{"x": 1, "s": value}], {}, run_name="t")]
    serve(config, once=True)
    run = run_of(db, rid)
    assert run.state == FINISHED
    run_dir = Path(run.run_path)
    assert (run_dir / "got").read_text() == value
    assert not (run_dir / "PWNED").exists() and not (run_dir / "PWNED2").exists()


def test_cancel_through_motoko_scancels_the_job(slurm, workdir):
    config, db = setup(workdir, launch=SLEEPER % 30)
    (rid,) = create_runs(db, x=1)
    started = time.monotonic()
    background = Background(config, once=True)
    wait_for(lambda: run_of(db, rid).run_path and (Path(run_of(db, rid).run_path) / "started").exists(), 30, "the job to start")
    db.transact(lambda: db.study("s").cancel(db.run("s", rid)), fresh=True)
    report = background.join(30)
    assert report.cancelled == 1
    run = run_of(db, rid)
    assert run.state == CANCELLED
    assert time.monotonic() - started < 25, "the sleep 30 was not interrupted"
    (log,) = Path(run.run_path).glob("slurm-*.out")
    assert squeue_state(log.stem.removeprefix("slurm-")) == "CANCELLED"


def test_job_cancelled_behind_motokos_back_is_not_left_running(slurm, workdir):
    config, db = setup(workdir, launch=SLEEPER % 30)
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    wait_for(lambda: run_of(db, rid).run_path and (Path(run_of(db, rid).run_path) / "started").exists(), 30, "the job to start")
    (log,) = Path(run_of(db, rid).run_path).glob("slurm-*.out")
    job = log.stem.removeprefix("slurm-")
    subprocess.run(["scancel", job], check=True)
    report = background.join(30)
    run = run_of(db, rid)
    assert run.state == CANCELLED and report.cancelled == 1  # never LOST: a retry would undo the user's scancel
    assert f"SLURM job {job}" in run.error and "cancelled outside motoko (scancel)" in run.error


def test_queued_array_tasks_cancelled_behind_motokos_back_end_cancelled(slurm, workdir):
    """A pending array task that is scancelled simply leaves squeue's range row: CANCELLED, not LOST."""
    config, db = setup(workdir, launcher=", bundle_size: 3", extra="slurm_options: ['--hold']\nretries: 1\nretry_on: [LOST]\n")
    ids = create_runs(db, x=[1, 2, 3])
    background = Background(config, once=True)
    wait_for(lambda: all(run_of(db, r).executor_id for r in ids), 30, "the array to be submitted")
    by_task = {run_of(db, r).executor_id: r for r in ids}
    victim = next(ident for ident in by_task if ident.endswith("_1"))  # a task in the middle of an array
    jobs = {ident.split("_")[0] for ident in by_task}
    try:
        subprocess.run(["scancel", victim], check=True)
        wait_for(lambda: run_of(db, by_task[victim]).state == CANCELLED, 60, "the cancelled task's run to end")
        assert {run_of(db, r).state for i, r in by_task.items() if i != victim} == {LAUNCHED}
        subprocess.run(["scancel", *jobs], check=True)  # the rest, still queued
        report = background.join(30)
    finally:
        subprocess.run(["scancel", *jobs], check=False)
    assert report.cancelled == 3
    for rid in ids:
        run = run_of(db, rid)
        assert (run.state, run.attempt) == (CANCELLED, 1) and "cancelled outside motoko (scancel)" in run.error


def test_sbatch_refusal_fails_the_run_with_sbatch_words(slurm, workdir):
    config, db = setup(workdir, extra="slurm_options: ['--partition=nosuchpartition']\n")
    (rid,) = create_runs(db, x=1)
    serve(config, once=True)
    run = run_of(db, rid)
    assert run.state == FAILED
    assert "could not submit to SLURM: sbatch failed" in run.error and "partition" in run.error.lower()


def test_example_pipeline_through_the_cli_on_slurm(slurm, example):
    result = motoko("run", "workflows/pipeline.py", "--executor", "slurm", cwd=example, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stderr


def test_run_script_quotes_every_value():
    launch = Launch("s", 1, Path("/tmp/run dir"), ("/bin/echo", "a b", "$(x)"), {**os.environ, "MOTOKO_X": "it's $(here)"})
    script = run_script(launch)
    assert "export MOTOKO_X='it'\"'\"'s $(here)'" in script
    assert "cd -- '/tmp/run dir' || exit 97" in script
    assert "/bin/echo 'a b' '$(x)' </dev/null >stdout 2>stderr" in script
    assert "export SLURM_" not in script and "unset SLURM_" not in script  # the job's own, not the launcher's
    assert "motoko-slurm" not in script and 'if [[ "$(cat .motoko-attempt 2>/dev/null)" != 1 ]]' in script


def test_errors_say_what_to_do(monkeypatch):
    error = SlurmError(["sbatch", "x.sh"], "sbatch: error: invalid partition specified: nope\n")
    assert str(error).startswith("sbatch failed: sbatch: error: invalid partition specified: nope")
    assert "slurm_options" in str(error)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="sbatch not found.*use `executor: local`"):
        SlurmExecutor(4)


def test_time_limit_fails_the_attempt_and_the_retry_gets_more_time(time_limited):
    """Late in the module: SLURM needs one minute, plus up to 30 s, to enforce it."""
    background, db, rid = time_limited
    report = background.join(150)
    assert report.failed == 1 and report.finished == 1
    run = run_of(db, rid)
    assert (run.state, run.attempt) == (FINISHED, 2)
    first = run.history[0]
    assert first["state"] == FAILED and first["failure"] == "TIMEOUT"
    assert "TIMEOUT" in first["error"] and "time limit" in first["error"]
    assert first["reason"] == "retry after FAILED (TIMEOUT)"
    assert first["slurm_options"] == ["--time=00:00:05"]  # each attempt keeps its own options
    assert run.slurm_options == ["--time=00:00:08"]  # doubled, then capped


def test_a_queued_job_stays_launched_until_slurm_starts_it(slurm, workdir):
    config, db = setup(workdir, extra="slurm_options: ['--hold']\n")
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    held: list[str] = []

    def find_held() -> bool:
        out = subprocess.run(["squeue", "-h", "-t", "PENDING", "-o", "%i|%r"], capture_output=True, text=True).stdout
        held[:] = [line.split("|")[0] for line in out.split() if line.endswith("|JobHeldUser")]
        return bool(held)

    wait_for(find_held, 30, "the held job in SLURM's queue")
    time.sleep(2.0)  # several polls see it PENDING
    waiting = run_of(db, rid)
    assert (waiting.state, waiting.started) == (LAUNCHED, None)
    subprocess.run(["scontrol", "release", *held], check=True)
    report = background.join(60)
    assert report.finished == 1
    run = run_of(db, rid)
    assert run.state == FINISHED
    assert run.started is not None and waiting.launched < run.started <= run.finished

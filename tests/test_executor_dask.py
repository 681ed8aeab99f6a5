"""The Dask executor against real Dask clusters: a LocalCluster it owns, and a
separately started ``dask scheduler`` + ``dask worker`` on 127.0.0.1.

Nothing is mocked: runs execute as subprocesses of real worker processes and
reach the test's ZEO server themselves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import launch_support
import pytest
from conftest import motoko
from launch_support import create_runs, make_study, run_of

from motoko.config import WorkflowConfig
from motoko.launch.executors.dask import DaskError, DaskExecutor
from motoko.launch.serving import LauncherReport
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, FAILED, FINISHED, LOST

pytestmark = pytest.mark.slow

FAST = (
    "poll: {initial: 0.05, factor: 2, maximum: 0.5}\n"
    "launcher: {executor: dask, poll: 0.5, heartbeat: 1, cancel_grace: 1%s}\n"
)
#: Records the worker process (the command's parent), then sleeps.
SLEEPER = "#!/bin/bash\necho $PPID > worker_pid\ntouch started\nexec sleep %d\n"
DOIT = """
from motoko import current_run
run, job = current_run()
run.y = 3 * job.x
print("x is", job.x)
"""


def setup(root: Path, *, launch: str | None = None, doit: str = DOIT, launcher: str = "") -> tuple[WorkflowConfig, StudyDB]:
    return make_study(root, FAST % launcher, doit=doit, launch=launch)


def serve(config: WorkflowConfig, **options: object) -> LauncherReport:
    return launch_support.serve(config, "dask", **options)


def Background(config: WorkflowConfig, **options: object) -> launch_support.Background:  # noqa: N802
    return launch_support.Background(config, "dask", **options)


def started(db: StudyDB, rid: int) -> Path | None:
    path = run_of(db, rid).run_path
    return Path(path) if path and (Path(path) / "started").exists() else None


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dask_scheduler(tmp_path: Path) -> Iterator[str]:
    """``dask scheduler`` and one ``dask worker --no-nanny`` on 127.0.0.1, stopped afterwards."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    procs = []
    try:
        procs.append(_spawn(["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], logs / "scheduler.log"))
        procs.append(
            _spawn(["worker", address, "--nthreads", "2", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], logs / "worker.log")
        )
        _wait_for_workers(address, 1, timeout=30, logs=logs)
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


def _wait_for_workers(address: str, n: int, timeout: float, logs: Path) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Client(address, timeout=2) as client:
                client.wait_for_workers(n, timeout=max(1, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                text = "\n".join(p.read_text()[-1500:] for p in logs.iterdir())
                pytest.fail(f"the Dask cluster did not start at {address}: {exc}\n{text}")
            time.sleep(0.2)


# -- tests ---------------------------------------------------------------------------------


def test_local_cluster_runs_finish_and_fail_with_exit_codes(workdir):
    launch = '#!/bin/bash\nif [ "$MOTOKO_PARAM_x" = 3 ]; then echo "bad x" >&2; exit 4; fi\nexec "$MOTOKO_PYTHON" doIt.py\n'
    config, db = setup(workdir, launch=launch, launcher=", max_parallel: 2")
    ids = create_runs(db, x=[1, 2, 3, 4])
    report = serve(config, once=True)
    assert report.finished == 3 and report.failed == 1
    for rid in ids:
        run = run_of(db, rid)
        if run.job.x == 3:
            assert run.state == FAILED and run.exit_code == 4 and "bad x" in run.error
            continue
        assert run.state == FINISHED and run.exit_code == 0 and run.y == 3 * run.job.x
        assert (Path(run.run_path) / "stdout").read_text() == f"x is {run.job.x}\n"


def test_separate_scheduler_and_worker(workdir, dask_scheduler):
    config, db = setup(workdir, launcher=f", scheduler: '{dask_scheduler}'")
    ids = create_runs(db, x=list(range(6)))
    report = serve(config, once=True)
    assert report.finished == 6
    assert {run_of(db, rid).state for rid in ids} == {FINISHED}


def test_cancel_terminates_a_running_run(workdir):
    config, db = setup(workdir, launch=SLEEPER % 30, launcher=", max_parallel: 1")
    (rid,) = create_runs(db, x=1)
    begun = time.monotonic()
    background = Background(config, once=True)
    wait_for(lambda: started(db, rid), 30, "the run to start")
    run_dir = started(db, rid)
    assert run_dir is not None
    db.transact(lambda: db.study("s").cancel(db.run("s", rid)), fresh=True)
    report = background.join(30)
    assert report.cancelled == 1 and run_of(db, rid).state == CANCELLED
    assert time.monotonic() - begun < 25, "the sleep 30 was not interrupted"


def test_a_run_outliving_its_killed_worker_is_watched_to_its_real_end(workdir, dask_scheduler):
    """The worker dies, the run's process does not: it is settled from the exit status it records."""
    launch = "#!/bin/bash\necho $PPID > worker_pid\ntouch started\nsleep 3\necho x >> ran\nexit 4\n"
    config, db = setup(workdir, launch=launch, launcher=f", scheduler: '{dask_scheduler}'")
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    wait_for(lambda: started(db, rid), 30, "the run to start")
    run_dir = started(db, rid)
    assert run_dir is not None
    shell = int((run_dir / "worker_pid").read_text())  # the shell recording the exit status
    worker = int(Path(f"/proc/{shell}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGKILL)
    background.join(60)
    run = run_of(db, rid)
    assert (run.state, run.exit_code, run.attempt) == (FAILED, 4, 1)
    assert (run_dir / "ran").read_text() == "x\n"


def test_worker_and_process_killed_make_the_run_lost(workdir, dask_scheduler):
    config, db = setup(workdir, launch=SLEEPER % 30, launcher=f", scheduler: '{dask_scheduler}'")
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    wait_for(lambda: started(db, rid), 30, "the run to start")
    run_dir = started(db, rid)
    assert run_dir is not None
    shell = int((run_dir / "worker_pid").read_text())
    worker = int(Path(f"/proc/{shell}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.killpg(shell, signal.SIGKILL)  # the run's session: it records nothing
    os.kill(worker, signal.SIGKILL)
    background.join(30)
    run = run_of(db, rid)
    assert run.state == LOST and "Dask worker" in run.error and "died while running it" in run.error


def test_local_cluster_worker_killed_and_restarted_does_not_run_twice(workdir):
    launch = "#!/bin/bash\necho $PPID > worker_pid\ntouch started\necho x >> ran\nsleep 3\n"
    config, db = setup(workdir, launch=launch, launcher=", max_parallel: 1")
    (rid,) = create_runs(db, x=1)
    background = Background(config, once=True)
    wait_for(lambda: started(db, rid), 30, "the run to start")
    run_dir = started(db, rid)
    assert run_dir is not None
    shell = int((run_dir / "worker_pid").read_text())
    os.kill(int(Path(f"/proc/{shell}/stat").read_text().rsplit(")", 1)[1].split()[1]), signal.SIGKILL)
    background.join(60)
    run = run_of(db, rid)
    assert (run.state, run.attempt) == (FINISHED, 1)
    assert (run_dir / "ran").read_text() == "x\n"  # the restarted worker did not run it again


def test_example_pipeline_through_the_cli_on_dask(example):
    result = motoko("run", "workflows/pipeline.py", "--executor", "dask", cwd=example, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "finished" in result.stderr


def test_unreachable_scheduler_says_how_to_fix_it():
    executor = DaskExecutor(2, scheduler=f"tcp://127.0.0.1:{free_port()}", connect_timeout=1)
    with pytest.raises(DaskError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:.*dask scheduler"):
        asyncio.run(executor.start())


# -- adoption: runs outlive their launcher ----------------------------------------------------


def test_killed_launchers_dask_runs_are_adopted_and_each_runs_once(workdir, dask_scheduler):
    """Running runs are adopted and settled from their exit status; queued ones are given up and retried."""
    from launch_support import kill_launcher, start_launcher, wait_until

    done = workdir / "done"
    launch = f'#!/bin/bash\nsleep 3\necho "$MOTOKO_RUN_ID" >> {done}\n'
    config = FAST % f", scheduler: '{dask_scheduler}'" + "lost_after: 2\n"
    _, db = make_study(workdir, config, launch=launch, extra="retries: 2\nretry_on: [LOST]\n")
    ids = create_runs(db, x=[1, 2, 3, 4])
    first = start_launcher(workdir)
    try:
        wait_until(lambda: sum(run_of(db, r).state == "RUNNING" for r in ids) == 2, 60, "two runs to start")
    finally:
        kill_launcher(first)
    running = [r for r in ids if run_of(db, r).state == "RUNNING"]
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(120)
    finally:
        kill_launcher(second)
    for rid in ids:
        run = run_of(db, rid)
        assert run.state == FINISHED, (rid, run.state, run.error, (workdir / "second.log").read_text()[-2000:])
    assert {run_of(db, r).attempt for r in running} == {1}  # adopted, not retried
    assert sorted(int(x) for x in done.read_text().split()) == sorted(ids)  # each run's work once
    assert "adopted run s." in (workdir / "second.log").read_text()


def test_a_run_is_running_only_once_a_worker_starts_it(workdir, dask_scheduler):
    """Two worker threads, four runs: never more than two handed out, never more than two RUNNING."""
    launch = "#!/bin/bash\nsleep 1\n"
    config, db = setup(workdir, launch=launch, launcher=f", scheduler: '{dask_scheduler}'")
    ids = create_runs(db, x=[1, 2, 3, 4])
    background = Background(config, once=True)
    most = 0
    while background.thread.is_alive():
        states = [run_of(db, r).state for r in ids]
        most = max(most, states.count("RUNNING"))
        time.sleep(0.05)
    report = background.join(5)
    assert report.finished == 4 and 1 <= most <= 2
    runs = [run_of(db, r) for r in ids]
    starts = sorted(run.started for run in runs)
    assert starts[2] >= min(run.finished for run in runs)  # the third started after one ended

"""Launchers against a real ZEO server and real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import motoko
from launch_support import create_runs, make_study, run_hosts_of, serve

from motoko.errors import NotInRunError
from motoko.launch.service import build_launcher
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, FAILED, FINISHED, LOST, RUNNING

FAST = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.5, heartbeat: 0.2, cancel_grace: 1}\n"


def setup(workdir: Path, launch: str | None = None, doit: str = "", job: str = "{x: int}", extra: str = "", config: str = FAST):
    return make_study(workdir, config, job=job, doit=doit or "pass\n", launch=launch, extra=extra)


def states(db: StudyDB) -> dict[int, str]:
    db.abort()
    return {rid: run.state for rid, run in db.study("s").runs.items()}


def test_runs_finish_and_outputs_land_in_run_directories(workdir):
    cfg, db = setup(workdir, launch='#!/bin/bash\necho "x=$MOTOKO_PARAM_x id=$MOTOKO_RUN_ID"\n')
    ids = create_runs(db, x=[1, 2, 3])
    report = serve(cfg, once=True, max_parallel=2)
    assert report.finished == 3 and report.failed == 0
    assert set(states(db).values()) == {FINISHED}
    for rid in ids:
        run = db.run("s", rid)
        out = (Path(run.run_path) / "stdout").read_text()
        assert out == f"x={run.job.x} id={rid}\n"
        assert Path(run.run_path).name == f"run-{rid}" and Path(run.run_path).parent.name == "BD-s-runs"
        assert run.exit_code == 0 and run.started and run.finished and run.machine_name


def test_failed_run_records_exit_code_and_stderr_tail(workdir):
    cfg, db = setup(workdir, launch="#!/bin/bash\necho 'first line' >&2\necho 'solver diverged' >&2\nexit 3\n")
    (rid,) = create_runs(db, x=1)
    serve(cfg, once=True)
    run = db.run("s", (db.abort(), rid)[1])
    assert run.state == FAILED and run.exit_code == 3
    assert "exit code 3" in run.error and "solver diverged" in run.error


def test_run_killed_by_a_signal_names_it(workdir):
    cfg, db = setup(workdir, launch="#!/bin/bash\nkill -9 $$\n")
    (rid,) = create_runs(db, x=1)
    serve(cfg, once=True)
    db.abort()
    run = db.run("s", rid)
    assert run.state == FAILED and "SIGKILL" in run.error


def test_run_may_set_its_own_final_state(workdir):
    doit = """
    from motoko import current_run
    run, job = current_run()
    if job.x == 1:
        run.fail("bad input")
    else:
        run.state = "CONVERGED"
    """
    cfg, db = setup(workdir, doit=doit)
    ids = create_runs(db, x=[1, 2])
    serve(cfg, once=True)
    db.abort()
    first, second = (db.run("s", i) for i in ids)
    assert first.state == FAILED and first.error == "bad input"
    assert second.state == "CONVERGED" and second.exit_code == 0


def test_run_side_api_from_a_real_process(workdir):
    doit = """
    from motoko import current_run
    run, job = current_run()
    assert run.state == "RUNNING" or run.state == "LAUNCHED"
    run.start()
    run.y = [2.0 * job.x]
    for step in range(5):
        run.push_quantity(step * job.x, step=step, name="energy")
    run.pushVectorQuantity([1, 2], 0, "force")
    run.set_progress(0.5)
    run.set_status("half way")
    run.set_output({"answer": 42})
    run.set_metadata({"solver": "cg"})
    assert run.should_stop() is False
    """
    cfg, db = setup(workdir, doit=doit)
    (rid,) = create_runs(db, x=3)
    serve(cfg, once=True)
    db.abort()
    run = db.run("s", rid)
    assert run.state == FINISHED, run.error
    assert run.y == [6.0] and run.progress == 0.5 and run.status == "half way"
    assert run.output == {"answer": 42} and run.get_metadata() == {"solver": "cg"}
    assert list(run.get_quantity("energy")["energy"]) == [0, 3, 6, 9, 12]
    assert (Path(run.run_path) / "run.json").exists()


def test_current_run_outside_a_run_says_how_runs_are_found(monkeypatch):
    for name in ("MOTOKO_DB", "MOTOKO_STUDY", "MOTOKO_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    from motoko import current_run

    with pytest.raises(NotInRunError, match="only available inside a run launched by motoko") as info:
        current_run()
    assert "MOTOKO_RUN_ID" in str(info.value)


def test_old_style_doit_runs_with_only_its_import_changed(workdir):
    doit = """
    import motoko as BD
    run, job = BD.getRunFromScript()
    run.pushScalarQuantity(job['x'] * 2, 0, "double")
    run['note'] = "ok"
    """
    cfg, db = setup(workdir, doit=doit)
    (rid,) = create_runs(db, x=4)
    serve(cfg, once=True)
    db.abort()
    run = db.run("s", rid)
    assert run.state == FINISHED, run.error
    assert run.getQuantity("double")["double"].tolist() == [8] and run.note == "ok"


def test_cancel_created_and_running_runs(workdir):
    cfg, db = setup(workdir, launch="#!/bin/bash\nif [ \"$MOTOKO_PARAM_x\" = 1 ]; then sleep 30; fi\n")
    first, second = create_runs(db, x=[1, 2])
    study = db.study("s")
    db.transact(lambda: study.cancel(study.runs[second]))
    assert db.run("s", second).state == CANCELLED
    launcher = build_launcher(cfg, once=True)
    import threading

    thread = threading.Thread(target=launcher.serve)
    thread.start()
    _wait_state(db, first, RUNNING)
    start = time.monotonic()
    db.transact(lambda: db.study("s").cancel(db.run("s", first)), fresh=True)
    thread.join(20)
    assert not thread.is_alive()
    assert time.monotonic() - start < 10
    run = db.run("s", (db.abort(), first)[1])
    assert run.state == CANCELLED and run.error == "cancelled on request"
    launcher.db.close()


def _wait_state(db: StudyDB, rid: int, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.abort()
        if db.run("s", rid).state == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {rid} never reached {state}: {db.run('s', rid).state}")


def test_heartbeat_is_refreshed_while_a_run_executes(workdir):
    cfg, db = setup(workdir, launch="#!/bin/bash\nsleep 1.2\n")
    (rid,) = create_runs(db, x=1)
    serve(cfg, once=True)
    db.abort()
    run = db.run("s", rid)
    assert run.state == FINISHED and run.heartbeat > run.started


@pytest.mark.slow
def test_four_launchers_execute_500_runs_exactly_once(workdir):
    log = workdir / "executions.log"
    cfg, db = setup(workdir, launch=f'#!/bin/bash\necho "$MOTOKO_RUN_ID" >> {log}\n')
    ids = create_runs(db, x=list(range(500)))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--idle-exit", "1.5", "-j", "2"],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    lines = log.read_text().split()
    assert len(lines) == 500, f"{len(lines)} executions for 500 runs"
    assert sorted(map(int, lines)) == sorted(ids)
    assert set(states(db).values()) == {FINISHED}
    assert db.study("s").check_indexes() == []
    executed = [int(o.split("launcher exited: ")[1].split(" ")[0]) for o in outputs]
    assert sum(executed) == 500


def test_launcher_cli_start_detached_status_and_stop(workdir):
    setup(workdir)
    result = motoko("launcher", "start", "--detach", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "launcher started in the background" in result.stdout
    status = motoko("launcher", "status", cwd=workdir)
    assert "local" in status.stdout and "all" in status.stdout
    pid = int(status.stdout.splitlines()[1].split()[0])
    cpu_before = _cpu_seconds(pid)
    time.sleep(3)
    cpu_used = _cpu_seconds(pid) - cpu_before
    assert cpu_used < 0.1, f"an idle launcher used {cpu_used:.3f} s of CPU in 3 s"
    stop = motoko("launcher", "stop", cwd=workdir)
    assert stop.returncode == 0 and "1 launcher(s) stopped" in stop.stdout
    assert "no launcher running" in motoko("launcher", "status", cwd=workdir).stdout
    assert "no launcher was running" in motoko("launcher", "stop", cwd=workdir).stdout


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def test_launcher_cli_rejects_bad_options(workdir):
    setup(workdir)
    for args, message in (
        (["launcher", "start", "--max-parallel", "0"], "0 is not in the range x>=1"),
        (["launcher", "start", "--idle-exit", "-1"], "must be greater than 0"),
        (["launcher", "start", "--study", "nope"], "unknown study 'nope'"),
        (["launcher", "start", "--executor", "pbs"], "'pbs' is not one of"),
    ):
        result = motoko(*args, cwd=workdir)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and result.stderr.startswith("motoko: error:")
        assert "Traceback" not in result.stderr


def test_killed_launcher_leaves_a_lost_run_that_another_launcher_detects(workdir):
    """The run's process died with its launcher and its run host, and recorded no exit status: LOST, found by another launcher."""
    cfg, db = setup(workdir, launch="#!/bin/bash\necho $$ > pid\nexec sleep 60\n")
    (rid,) = create_runs(db, x=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start"], cwd=workdir,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    _wait_state(db, rid, RUNNING)
    run_dir = Path(db.run("s", rid).run_path)
    deadline = time.monotonic() + 10
    while not (run_dir / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    session = os.getpgid(int((run_dir / "pid").read_text()))
    (host,) = run_hosts_of(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher
    os.kill(host, signal.SIGKILL)  # its run host, the run's parent
    os.killpg(session, signal.SIGKILL)  # and its run's session: nothing records an exit status
    proc.wait()
    start = time.monotonic()
    report = serve(cfg, idle_exit=4)
    db.abort()
    run = db.run("s", rid)
    assert run.state == LOST and "stopped heart-beating" in run.error
    assert "no process of it runs on this host and it recorded no exit status" in run.error
    assert report.lost_detected == 1 and time.monotonic() - start < 2 + 5 + 2
    assert run.executor_id is not None  # the wrapper's pid: how an adopter would have found it


def test_only_a_process_naming_the_run_and_its_launcher_is_stopped():
    from motoko.launch.processes import stop_orphans
    from motoko.study.liveness import OrphanProcess as Orphan
    from motoko.study.server import pid_alive

    env = {**os.environ, "MOTOKO_RUN_ID": "7", "MOTOKO_STUDY": "s", "MOTOKO_LAUNCHER": "other"}
    stranger = subprocess.Popen(["sleep", "30"], env=env, start_new_session=True)
    orphan = subprocess.Popen(["sleep", "30"], env={**env, "MOTOKO_LAUNCHER": "dead"}, start_new_session=True)
    try:
        for proc in (stranger, orphan):  # until exec, /proc shows the parent's environment
            deadline = time.monotonic() + 30
            while not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sleep"):
                assert time.monotonic() < deadline, "sleep never started"
                time.sleep(0.01)
        assert stop_orphans([Orphan(stranger.pid, "s", 7, "dead")]) == 0  # another launcher's
        assert stop_orphans([Orphan(orphan.pid, "s", 8, "dead")]) == 0  # another run's
        assert stop_orphans([Orphan(999_999_999, "s", 7, "dead")]) == 0  # no such process
        assert stranger.poll() is None and orphan.poll() is None
        assert stop_orphans([Orphan(orphan.pid, "s", 7, "dead")]) == 1
        assert orphan.wait(10) == -signal.SIGTERM
        assert pid_alive(stranger.pid)
    finally:
        stranger.kill(), orphan.kill()
        stranger.wait(), orphan.wait()


def _requeue_as_lost(db: StudyDB, rid: int) -> None:
    """What a new workflow execution does to a run whose launcher died."""

    def change() -> None:
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, LOST, error="launcher stopped heart-beating")
        study.requeue(run, "resumed by a new execution of the workflow")

    db.transact(change, fresh=True)


def test_a_process_that_outlived_its_attempt_cannot_write_into_the_next(workdir):
    from motoko.errors import RunSuperseded
    from motoko.launch.runtime import RunHandle, RunSession

    _, db = setup(workdir)
    (rid,) = create_runs(db, x=1)
    db.transact(lambda: db.study("s").transition(db.study("s").runs[rid], "LAUNCHED"))
    with StudyDB(db.address) as orphan_db:
        session = RunSession(orphan_db, "s", rid, attempt=1)
        handle = RunHandle(session)
        handle.y = "from attempt 1, before the requeue"
        handle.commit()
        assert not handle.should_stop()
        _requeue_as_lost(db, rid)
        handle.y = "from attempt 1, after the requeue"
        with pytest.raises(RunSuperseded, match=rf"run s.{rid} is now attempt 2, this process ran attempt 1"):
            handle.push_quantity(1.0, step=0, name="energy")
        assert handle.should_stop()
        session.close()
    db.abort()
    run = db.run("s", rid)
    assert run.y == "from attempt 1, before the requeue" and run.list_quantities() == []
    assert (run.attempt, run.state, run.history[-1]["state"]) == (2, "CREATED", LOST)


def test_an_orphaned_run_process_exits_saying_its_changes_were_dropped(workdir):
    _, db = setup(workdir)
    (rid,) = create_runs(db, x=1)
    db.transact(lambda: db.study("s").transition(db.study("s").runs[rid], "LAUNCHED"))
    _requeue_as_lost(db, rid)
    env = {**os.environ, "MOTOKO_DB": str(db.address), "MOTOKO_STUDY": "s", "MOTOKO_RUN_ID": str(rid), "MOTOKO_ATTEMPT": "1"}
    code = "from motoko import current_run\nrun, job = current_run()\nrun.y = 'stale'\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"motoko: run s.{rid} is now attempt 2, this process ran attempt 1: its changes are not saved")
    db.abort()
    assert db.run("s", rid).get("y") is None


def test_the_runs_shared_environment_follows_changes_to_the_launcher_s_own(workdir, monkeypatch):
    """A launcher builds its runs' shared environment once, not once per run, and again when
    its process's environment changed (a workflow setting a variable between two steps)."""
    cfg, _ = setup(workdir)
    launcher = build_launcher(cfg, once=True)
    try:
        monkeypatch.setenv("MOTOKO_TEST_SHARED", "one")
        first = launcher._shared_env()
        assert first["MOTOKO_TEST_SHARED"] == "one" and first["MOTOKO_LAUNCHER"] == launcher.id
        assert launcher._shared_env() is first
        monkeypatch.setenv("MOTOKO_TEST_SHARED", "two")
        second = launcher._shared_env()
        assert second is not first and second["MOTOKO_TEST_SHARED"] == "two"
        monkeypatch.delenv("MOTOKO_TEST_SHARED")
        assert "MOTOKO_TEST_SHARED" not in launcher._shared_env()
    finally:
        launcher.db.close()

"""Crash recovery with real processes killed by SIGKILL, and concurrency at scale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.study.database import StudyDB
from motoko.study.server import default_address

FAST = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 3\nlauncher: {poll: 0.5, heartbeat: 0.3, cancel_grace: 1}\n"


def _start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", *args], cwd=cwd,
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )


def _wait_finished(workdir: Path, study: str, count: int, timeout: float = 60) -> None:
    """Wait (polling the database) until at least ``count`` runs are FINISHED."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sum(state == "FINISHED" for _, state, _, _ in _all_runs(workdir, study)) >= count:
                return
        except Exception:  # the study may not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} runs finished in {timeout} s")


def _all_runs(workdir: Path, study: str) -> list:
    db = StudyDB(default_address(workdir))
    runs = list(db.study(study).runs.values())
    data = [(r.id, r.state, r.get_quantity("q")["q"].tolist() if "q" in r.list_quantities() else [], r.error) for r in runs]
    db.close()
    return data


@pytest.mark.slow
def test_four_launchers_and_an_orchestrator_500_runs_writing_quantities(workdir):
    log = workdir / "executions.log"
    doit = f"""
    import os
    from motoko import current_run
    run, job = current_run()
    with open({str(log)!r}, "a") as out:
        out.write(os.environ["MOTOKO_RUN_ID"] + "\\n")
    for step in range(4):
        run.push_quantity(job.x * 10 + step, step=step, name="q")
    run.y = job.x
    """
    write_study(workdir, "s", "{x: int}", doit)
    write_config(workdir, ["s"], FAST)
    (workdir / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def fan_out(workflow):
            runs = await workflow.s.createTask(x=list(range(500)))
            return len(runs)
    """))
    assert motoko("server", "start", cwd=workdir).returncode == 0
    launchers = [_start(["launcher", "start", "-j", "2", "--idle-exit", "3"], workdir, workdir / f"l{i}.log") for i in range(4)]
    result = motoko("run", "wf.py", "--no-launcher", cwd=workdir, timeout=400)
    for proc in launchers:
        proc.wait(timeout=60)
    outputs = [(workdir / f"l{i}.log").read_text() for i in range(4)]
    assert result.returncode == 0, result.stderr
    assert "fan_out: 500" in result.stdout
    executions = log.read_text().split()
    assert len(executions) == 500 and len(set(executions)) == 500, "a run executed twice or not at all"
    runs = _all_runs(workdir, "s")
    assert len(runs) == 500
    assert all(state == "FINISHED" for _, state, _, _ in runs), [r for r in runs if r[1] != "FINISHED"][:3]
    points = sum(len(q) for _, _, q, _ in runs)
    assert points == 2000, f"{2000 - points} quantity points lost"
    text = result.stdout + result.stderr + "".join(outputs)
    assert "ConflictError" not in text and "Traceback" not in text


def test_zeo_server_killed_and_restarted_while_a_workflow_awaits(workdir):
    doit = """
    import time
    from motoko import current_run
    run, job = current_run()
    time.sleep(0.3)
    run.push_quantity(job.x, step=0, name="q")
    run.y = job.x * 2
    """
    write_study(workdir, "s", "{x: int}", doit)
    write_config(workdir, ["s"], FAST)
    (workdir / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def first(workflow):
            return await workflow.s.createTask(x=list(range(6)))

        @step
        async def second(workflow, first):
            runs = await workflow.s.createTask(x=[run.y + 100 for run, _ in first])
            return sorted(run.y for run, _ in runs)
    """))
    assert motoko("server", "start", cwd=workdir).returncode == 0
    proc = _start(["run", "wf.py", "-j", "2"], workdir, workdir / "run.log")
    _wait_finished(workdir, "s", 2)  # some runs finished, others executing or waiting
    pid = int((workdir / ".motoko" / "zeo.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    assert motoko("server", "start", cwd=workdir).returncode == 0
    proc.wait(timeout=120)
    output = (workdir / "run.log").read_text()
    assert proc.returncode == 0, output
    expected = sorted((x * 2 + 100) * 2 for x in range(6))
    assert f"second: {expected}" in output
    runs = _all_runs(workdir, "s")
    assert len(runs) == 12 and {state for _, state, _, _ in runs} == {"FINISHED"}
    assert all(len(q) == 1 for _, _, q, _ in runs)
    check = motoko("db", "check", cwd=workdir)
    assert check.returncode == 0 and "database ok" in check.stdout


def test_killed_orchestrator_resumes_without_duplicates(workdir):
    doit = """
    import time
    from motoko import current_run
    run, job = current_run()
    time.sleep(0.5 if job.x < 100 else 0.0)
    run.y = job.x + 1
    """
    write_study(workdir, "s", "{x: int}", doit)
    write_config(workdir, ["s"], FAST)
    (workdir / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def first(workflow):
            return await workflow.s.createTask(x=list(range(8)))

        @step
        async def second(workflow, first):
            runs = await workflow.s.createTask(x=[run.y + 100 for run, _ in first])
            return sorted(run.y for run, _ in runs)
    """))
    proc = _start(["run", "wf.py", "-j", "2"], workdir, workdir / "run1.log")
    _wait_finished(workdir, "s", 1)
    os.killpg(proc.pid, signal.SIGKILL)  # the orchestrator, its embedded launcher and runs
    proc.wait()
    before = _all_runs(workdir, "s")
    finished_before = {rid for rid, state, _, _ in before if state == "FINISHED"}
    assert 0 < len(finished_before) < 8
    result = motoko("run", "wf.py", "-j", "2", cwd=workdir, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"second: {sorted(x + 1 + 100 + 1 for x in range(8))}" in result.stdout
    after = _all_runs(workdir, "s")
    assert len(after) == 16, "duplicate or missing runs after resuming"
    states = {rid: state for rid, state, _, _ in after}
    assert all(states[rid] == "FINISHED" for rid in finished_before)  # reused, not redone
    lost = [rid for rid, state, _, _ in after if state != "FINISHED"]
    assert lost == [], after


def test_killed_launcher_run_is_lost_then_retried_and_the_workflow_never_sticks(workdir):
    """Every launcher dies: the awaiting workflow itself declares the run LOST; a retry finishes it."""
    marker = workdir / "attempts"
    launch = f'#!/bin/bash\necho x >> {marker}\nif [ $(wc -l < {marker}) -eq 1 ]; then sleep 60; fi\n'
    write_study(workdir, "s", "{x: int}", "pass\n", extra="retries: 1\nretry_on: [LOST]\nlost_after: 2\n", launch=launch)
    write_config(workdir, ["s"], FAST)
    (workdir / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def only(workflow):
            runs = await workflow.s.createTask(x=1)
            run = runs[0][0]
            return [run.attempt, run.history[0]["state"]]
    """))
    assert motoko("server", "start", cwd=workdir).returncode == 0
    launcher = _start(["launcher", "start"], workdir, workdir / "l1.log")
    orchestrator = _start(["run", "wf.py", "--no-launcher"], workdir, workdir / "run.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.1)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and its run
    launcher.wait()
    start = time.monotonic()
    time.sleep(4)  # the run is LOST now (found by the workflow) and re-queued
    second = _start(["launcher", "start", "--idle-exit", "3"], workdir, workdir / "l2.log")
    orchestrator.wait(timeout=60)
    second.wait(timeout=60)
    output = (workdir / "run.log").read_text()
    assert orchestrator.returncode == 0, output
    assert "only: [2, 'LOST']" in output
    assert time.monotonic() - start < 30
    assert marker.read_text().count("x") == 2


def test_silences_are_counted_from_the_observers_connection_not_before(workdir):
    """After a server restart every heartbeat is old: nobody could write one meanwhile."""
    import datetime as dt

    from launch_support import create_runs, make_study

    from motoko.study.liveness import declare_lost

    _, db = make_study(workdir, FAST)
    (rid,) = create_runs(db, x=1)
    hour_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)

    def launched_an_hour_ago() -> None:
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, "LAUNCHED", launcher="gone", heartbeat=hour_ago)
        run.launched = run.created = hour_ago

    db.transact(launched_an_hour_ago)
    with StudyDB(db.address) as observer:
        study = observer.study("s")
        assert observer.transact(lambda: declare_lost(observer, study, 3, observer="test")) == 0
        assert study.runs[rid].state == "LAUNCHED"
        # Once connected for longer than lost_after, the silence counts.
        observer.db.storage.connected_at -= dt.timedelta(seconds=5)
        assert observer.transact(lambda: declare_lost(observer, study, 3, observer="test")) == 1
        assert study.runs[rid].state == "LOST"
        assert "launcher gone" in study.runs[rid].error
    db.close()

"""Issue 17, item 3: ``motoko run`` ends when its database server is gone for good.

The server is killed with SIGKILL and not restarted. ``motoko run`` waits for
it at most ``MOTOKO_SERVER_WAIT`` seconds (120 by default, documented in
docs/reliability.md), then exits with one line naming the address; Ctrl-C
ends it at any time, also while it waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import error_lines, motoko, write_config, write_study

from motoko.study.database import StudyDB
from motoko.study.server import default_address

FAST = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 3\nlauncher: {poll: 0.5, heartbeat: 0.3, cancel_grace: 1}\n"
#: Seconds motoko waits for a lost server in these tests.
SERVER_WAIT = 3
#: What the test allows ``motoko run`` beyond SERVER_WAIT to wind down (launcher stop, cancel grace).
WIND_DOWN = 45


def _start_run(workdir: Path, server_wait: float = SERVER_WAIT) -> subprocess.Popen[str]:
    doit = f"""
    import time
    from motoko import current_run
    run, job = current_run()
    with open({str(workdir / "executions.log")!r}, "a") as log:
        log.write(f"{{run.id}}\\n")
    time.sleep(8)
    """
    write_study(workdir, "s", "{x: int}", doit)
    write_config(workdir, ["s"], FAST)
    (workdir / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def first(workflow):
            return len(await workflow.s.createTask(x=[1, 2]))
    """))
    assert motoko("server", "start", cwd=workdir).returncode == 0
    env = dict(os.environ, MOTOKO_SERVER_WAIT=str(server_wait))
    proc = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "run", "wf.py"], cwd=workdir, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        db = StudyDB(default_address(workdir))
        try:
            if "s" in db.studies() and db.study("s").counts().get("RUNNING", 0):
                return proc
        finally:
            db.close()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("no run started")


def _kill_server(workdir: Path) -> None:
    os.kill(int((workdir / ".motoko" / "zeo.pid").read_text()), signal.SIGKILL)


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"motoko run did not end within {timeout} s:\n{err[-3000:]}") from None


@pytest.mark.slow
def test_run_ends_with_one_line_when_its_server_is_gone_for_good(workdir):
    proc = _start_run(workdir)
    _kill_server(workdir)
    _, err = _finish(proc, SERVER_WAIT + WIND_DOWN)
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("motoko: error: lost the database server at zeo://"), err
    assert f"for more than {SERVER_WAIT} s" in last and "motoko server start" in last
    assert "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_ends_run_while_its_server_is_gone(workdir):
    proc = _start_run(workdir)
    _kill_server(workdir)
    time.sleep(1.0)  # it now waits for the server
    os.kill(proc.pid, signal.SIGINT)
    _, err = _finish(proc, WIND_DOWN)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "motoko: interrupted"
    assert "Traceback" not in err


@pytest.mark.slow
def test_runs_left_by_a_launcher_stopped_without_its_server_are_settled_once_later(workdir):
    """Ctrl-C while the server is gone: the runs, left on record, finish once; motoko run again adopts them."""
    proc = _start_run(workdir)
    _kill_server(workdir)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    _finish(proc, WIND_DOWN)
    again = motoko("run", "wf.py", cwd=workdir, timeout=120)  # starts the server again
    assert again.returncode == 0, again.stderr
    assert "first: 2" in again.stdout
    db = StudyDB(default_address(workdir))
    try:
        runs = list(db.study("s").runs.values())
        assert [(r.state, r.attempt) for r in runs] == [("FINISHED", 1), ("FINISHED", 1)]
    finally:
        db.close()
    assert sorted((workdir / "executions.log").read_text().split()) == ["1", "2"]  # each executed once


@pytest.mark.slow
def test_a_server_loss_motoko_recovers_from_prints_no_traceback(workdir):
    """Item 10: the server is killed and restarted; the run completes and stderr holds no ZODB traceback."""
    proc = _start_run(workdir, server_wait=120)
    _kill_server(workdir)
    time.sleep(1.0)
    assert motoko("server", "start", cwd=workdir).returncode == 0
    out, err = _finish(proc, 120)
    assert proc.returncode == 0, err
    assert "first: 2" in out
    assert "Traceback" not in err and "Traceback" not in out, err


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf"])
def test_a_bad_server_wait_is_one_line(workdir, value):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    done = motoko("info", cwd=workdir, env={"MOTOKO_SERVER_WAIT": value})
    assert done.returncode == 2, done.stderr
    assert error_lines(done.stderr) == [
        f"motoko: error: MOTOKO_SERVER_WAIT={value!r} is not a positive number of seconds "
        "(set it to e.g. 120, or unset it (default 120 s))"
    ]

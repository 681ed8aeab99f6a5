"""What a newcomer sees in the first hour, asserted as text, through the real CLI.

Every test runs the real ``motoko`` command in a subprocess (stdout and
stderr are then pipes, not a terminal: what a batch job, ``nohup`` or CI
sees) against a real ZEO server in a temporary workflow directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 5
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

CALC_DOIT = """\
import time

from motoko import current_run

run, job = current_run()
run.set_progress(0.5)
time.sleep(job.sleep)
if job.x > 1.5:
    raise ValueError(f"x was {job.x}")
run.y = 2 * job.x
run.set_progress(1.0)
"""

FAILING = """\
from motoko import step


@step
async def calc(workflow):
    return await workflow.calc.createTask(x=[1.0, 2.0, 3.0, 4.0], sleep=[0.0])
"""


@pytest.fixture
def calc_files(workdir: Path) -> Path:
    """A workflow with one study ``calc`` (x > 1.5 fails) and fast polls; no server yet."""
    write_study(workdir, "calc", "{x: float, sleep: float}", CALC_DOIT, extra="job_space: {sleep: 0.0}\n")
    write_config(workdir, ["calc"], FAST)
    (workdir / "workflows").mkdir()
    return workdir


@pytest.fixture
def calc_dir(calc_files: Path) -> Path:
    """``calc_files`` with its server running (so commands do not announce starting it)."""
    from motoko.study.server import ensure_server

    ensure_server(calc_files)
    return calc_files


# -- the failure summary -------------------------------------------------------------------


def test_the_failure_summary_counts_every_failed_run_and_names_a_real_one(calc_dir: Path):
    (calc_dir / "workflows" / "failing.py").write_text(FAILING)
    result = motoko("run", "workflows/failing.py", cwd=calc_dir)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"motoko: error: 3 runs failed: calc\.(\d) FAILED \(exit code 1\): ValueError: x was 2\.0; "
        r"calc\.\d FAILED \(exit code 1\): ValueError: x was 3\.0; calc\.\d FAILED \(exit code 1\): ValueError: x was 4\.0 "
        r"\(see the run's stderr with `motoko runs tail (calc\.\d) --file stderr`\)",
        last,
    )
    assert match, last
    assert f"calc.{match.group(1)}" == match.group(2)
    tail = motoko("runs", "tail", match.group(2), "--file", "stderr", cwd=calc_dir)
    assert tail.returncode == 0, tail.stderr
    assert "ValueError: x was 2.0" in tail.stdout


# -- misspelt states -----------------------------------------------------------------------


def test_a_misspelt_state_warns_with_a_did_you_mean(calc_dir: Path):
    (calc_dir / "workflows" / "failing.py").write_text(FAILING)
    assert motoko("run", "workflows/failing.py", cwd=calc_dir).returncode == 1
    result = motoko("select", "state = FINISHD", cwd=calc_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "calc: 0 run(s)\n"
    assert result.stderr == "motoko: warning: no run is in state 'FINISHD' (did you mean 'FINISHED'?)\n"
    result = motoko("select", "state in (failed, FINISHED), x < 1.5", "--format", "csv", cwd=calc_dir)
    assert result.stderr == "motoko: warning: no run is in state 'failed' (did you mean 'FAILED'?)\n"
    assert len(result.stdout.splitlines()) == 2  # the header and calc.1
    # Right states, and a workflow's own state far from any other, pass silently.
    for constraint in ("state = FINISHED", "state != LOST", "state = FORWARDED", "state ~ FINI"):
        result = motoko("select", constraint, cwd=calc_dir)
        assert (result.returncode, result.stderr) == (0, ""), constraint


# -- errors in workflow code -----------------------------------------------------------------

TYPO = """\
from motoko import step


@step
async def calc(workflow):
    return await workflow.clac.createTask(x=[1.0])
"""

BAD_CONSTRAINT = """\
from motoko import step


@step
async def calc(workflow):
    await workflow.calc.createTask(x=[1.0])
    return await workflow.calc.select("x >")
"""


def test_a_typo_in_workflow_code_is_one_line_naming_file_and_line_exit_2(calc_dir: Path):
    path = calc_dir / "workflows" / "typo.py"
    path.write_text(TYPO)
    result = motoko("run", "workflows/typo.py", cwd=calc_dir)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"motoko: error: {path}:6: workflow has no study or attribute 'clac' (did you mean 'calc'?)\n"
    )
    debug = motoko("--debug", "run", "workflows/typo.py", cwd=calc_dir)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert f'File "{path}", line 6, in calc' in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == (
        f"motoko.errors.UnknownAttributeError: {path}:6: workflow has no study or attribute 'clac' (did you mean 'calc'?)"
    )


def test_a_bad_constraint_in_workflow_code_keeps_its_column(calc_dir: Path):
    path = calc_dir / "workflows" / "bad.py"
    path.write_text(BAD_CONSTRAINT)
    result = motoko("run", "workflows/bad.py", cwd=calc_dir)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"motoko: error: {path}:7, constraint 'x >', column 4: expected a value after '>'"
    )


def test_unknown_attribute_error_is_an_attribute_error_with_a_did_you_mean():
    from motoko.errors import UnknownAttributeError

    error = UnknownAttributeError("workflow has no study or attribute 'slo'", "slo", hint="did you mean 'slow'?")
    assert str(error) == "workflow has no study or attribute 'slo' (did you mean 'slow'?)"
    assert isinstance(error, AttributeError) and error.name == "slo" and error.exit_code == 2


# -- progress ------------------------------------------------------------------------------

SLOW = """\
from motoko import step


@step
async def calc(workflow):
    return await workflow.calc.createTask(x=[0.1, 0.2, 0.3, 0.4], sleep=[1.5])
"""

PLAIN_LINE = re.compile(r"\[\d\d:\d\d\] calc: (\d)/4 finished \(\d+%\)(, \d running(: .*)?)?( \| eta \d\d:\d\d)?")


def test_run_prints_plain_progress_lines_when_not_on_a_terminal(calc_dir: Path):
    (calc_dir / "workflows" / "slow.py").write_text(SLOW)
    result = motoko("run", "--progress-every", "0.3", "workflows/slow.py", cwd=calc_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("workflow workflows/slow.py finished (run name slow) in ")
    progress = lines[:-1]
    assert len(progress) >= 3, result.stderr
    assert all(PLAIN_LINE.fullmatch(line) for line in progress), result.stderr
    assert "\r" not in result.stderr and "\033" not in result.stderr  # nothing redrawn in a log
    # The runs' own set_progress(0.5) while they sleep, then the counts move on.
    assert re.search(r"running: calc\.\d 50%", result.stderr), result.stderr
    finished = [int(PLAIN_LINE.fullmatch(line).group(1)) for line in progress]  # type: ignore[union-attr]
    assert finished == sorted(finished)


def test_the_interval_of_plain_lines_comes_from_the_environment(calc_dir: Path):
    (calc_dir / "workflows" / "slow.py").write_text(SLOW)
    quiet = motoko("run", "workflows/slow.py", cwd=calc_dir, env={"MOTOKO_PROGRESS_EVERY": "600"})
    assert quiet.returncode == 0, quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if PLAIN_LINE.fullmatch(line)] == []
    chatty = motoko("run", "--fresh", "workflows/slow.py", cwd=calc_dir, env={"MOTOKO_PROGRESS_EVERY": "0.3"})
    assert len([line for line in chatty.stderr.splitlines() if PLAIN_LINE.fullmatch(line)]) >= 3, chatty.stderr


def on_a_terminal(args: list[str], cwd: Path, stream: str = "stderr") -> str:
    """Run the CLI with ``stream`` on a pseudo-terminal (160 columns); return what it wrote there."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a new pty has 0 columns
    try:
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: slave}
        process = subprocess.Popen([sys.executable, "-m", "motoko.cli.main", *args], cwd=cwd,
                                   stdin=subprocess.DEVNULL, **streams)  # type: ignore[call-overload]
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the terminal's last writer closed it
                break
            if not data:
                break
            chunks.append(data)
        process.communicate(timeout=60)
        assert process.returncode == 0
    finally:
        os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_run_draws_bars_on_a_terminal(calc_dir: Path):
    (calc_dir / "workflows" / "slow.py").write_text(SLOW)
    screen = on_a_terminal(["run", "workflows/slow.py"], calc_dir)
    assert "\r" in screen  # redrawn in place
    assert re.search(r"calc: 100%\|█+\| 4/4 finished \(100%\) \[\d\d:\d\d<00:00\]", screen), screen
    assert re.search(r"calc: +\d+%\|.*\| 0/4 finished \(0%\), \d running: calc\.\d 50%", screen), screen


# -- no launcher alive -------------------------------------------------------------------------

HINT = "4 runs waiting, no launcher alive: `motoko launcher start`"

SCRIPT = """\
from motoko import Workflow

with Workflow("motoko.yaml", run_name="script") as wf:
    rl = wf.calc.createTask(x=[5.0, 6.0, 7.0, 8.0])
    try:
        rl.result(timeout=4)
    except TimeoutError as exc:
        print(exc)
"""


def launcher_records(root: Path) -> list[str]:
    """The ids of the launcher records in ``root``'s database (a read-only look)."""
    from ZEO.ClientStorage import ClientStorage
    from ZODB.DB import DB

    from motoko.study.server import default_address

    db = DB(ClientStorage(default_address(root).zeo()))
    try:
        with db.transaction() as conn:
            tree = conn.root().get("motoko_launchers")
            return [] if tree is None else [k for k, r in tree.items() if r.stopped is None]
    finally:
        db.close()


def test_run_without_launcher_says_no_launcher_is_alive(calc_dir: Path):
    import signal
    import subprocess
    import sys
    import time

    (calc_dir / "workflows" / "slow.py").write_text(SLOW)
    process = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "run", "--no-launcher", "--progress-every", "600", "workflows/slow.py"],
        cwd=calc_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        said = process.stderr.readline()  # within seconds, not at a timeout
        if said.startswith("motoko: started the database server"):
            said = process.stderr.readline()
        assert said == f"motoko: {HINT}\n"
        status = motoko("status", cwd=calc_dir)
        assert status.returncode == 0
        assert f"\n{HINT}\n" in status.stdout
        assert json.loads(motoko("status", "--format", "json", cwd=calc_dir).stdout)["unserved"] == HINT
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    # With a launcher alive nothing is said (its record heart-beats).
    assert motoko("launcher", "start", "--detach", cwd=calc_dir).returncode == 0
    try:
        deadline = time.monotonic() + 30
        while not launcher_records(calc_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        served = motoko("run", "--no-launcher", "--progress-every", "600", "--fresh", "workflows/slow.py", cwd=calc_dir)
        assert served.returncode == 0, served.stderr
        assert "no launcher alive" not in served.stderr
        assert "no launcher alive" not in motoko("status", cwd=calc_dir).stdout
    finally:
        motoko("launcher", "stop", cwd=calc_dir)


def test_runs_wait_without_launcher_says_so_then_times_out_saying_why(calc_dir: Path):
    from motoko.flow.workflow import Workflow

    with Workflow(calc_dir / "motoko.yaml", run_name="r1") as workflow:
        workflow.calc.createTask(x=[1.0, 1.2])
    result = motoko("runs", "wait", "--no-progress", "--timeout", "4", cwd=calc_dir)
    assert (result.returncode, result.stdout) == (1, "")
    two = "2 runs waiting, no launcher alive: `motoko launcher start`"
    assert result.stderr == (
        f"motoko: {two}\n"  # after 2 s, not only at the timeout
        f"motoko: error: 2 run(s) not done after 4 s: calc.1 (CREATED), calc.2 (CREATED) ({two})\n"
    )


def test_a_script_waiting_without_launcher_is_told_and_its_timeout_says_why(calc_dir: Path):
    import subprocess
    import sys

    (calc_dir / "script.py").write_text(SCRIPT)
    result = subprocess.run([sys.executable, "script.py"], cwd=calc_dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"{HINT}\n"  # logged (WARNING) once, well before the timeout
    assert re.fullmatch(r"4 run\(s\) not done after 4 s: calc\.1 \(CREATED\), calc\.2 \(CREATED\), calc\.3 \(CREATED\), "
                        r"calc\.4 \(CREATED\) \(" + re.escape(HINT) + r"\)\n", result.stdout), result.stdout
    # Read-only: looking for launchers created no launcher table.
    assert launcher_records(calc_dir) == []


# -- servers: announced, and stopped once idle --------------------------------------------------


def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_a_server_started_on_the_way_is_announced_and_stops_once_idle(calc_files: Path):
    from motoko.study.server import pid_alive, server_status, socket_path

    result = motoko("info", cwd=calc_files, env={"MOTOKO_SERVER_IDLE_STOP": "1"})
    assert result.returncode == 0, result.stderr
    status = server_status(calc_files)
    pid = (calc_files / ".motoko" / "zeo.pid").read_text().strip() if status.running else r"\d+"
    assert re.fullmatch(
        rf"motoko: started the database server zeo://{re.escape(str(socket_path(calc_files)))} \(pid {pid}\); "
        rf"it stops by itself after 1 s without a client; stop it now with `motoko -C {re.escape(str(calc_files))} server stop`\n",
        result.stderr,
    ), result.stderr
    started = int(re.search(r"\(pid (\d+)\)", result.stderr).group(1))  # type: ignore[union-attr]
    assert wait_for(lambda: not pid_alive(started))
    assert not server_status(calc_files).running
    assert not (calc_files / ".motoko" / "zeo.pid").exists() and not socket_path(calc_files).exists()
    assert "idle stop" in (calc_files / ".motoko" / "zeo.log").read_text()
    # The next command starts it again (and says so); the data survived.
    again = motoko("select", "state = CREATED", cwd=calc_files, env={"MOTOKO_SERVER_IDLE_STOP": "1"})
    assert again.returncode == 0 and again.stderr.startswith("motoko: started the database server ")


def test_a_connected_client_keeps_an_idle_stopping_server_up(calc_files: Path):
    import time

    from motoko.flow.workflow import Workflow
    from motoko.study.server import pid_alive, server_status

    with open(calc_files / "motoko.yaml", "a") as config:
        config.write("server_idle_stop: 1\n")
    with Workflow(calc_files / "motoko.yaml", run_name="r1") as workflow:
        workflow.calc.createTask(x=[1.0])  # the workflow's connection stays open
        pid = server_status(calc_files).pid
        assert pid is not None
        time.sleep(3)  # three idle periods, with a client connected all along
        assert pid_alive(pid) and server_status(calc_files).running
        quiet = motoko("info", cwd=calc_files)
        assert quiet.returncode == 0 and quiet.stderr == ""  # it was running: nothing started, nothing said
    assert wait_for(lambda: not pid_alive(pid))


def test_a_server_started_on_purpose_is_not_stopped_for_idleness(calc_files: Path):
    import time

    from motoko.study.server import server_status

    result = motoko("server", "start", cwd=calc_files, env={"MOTOKO_SERVER_IDLE_STOP": "0.5"})
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout.startswith("server running at zeo://")
    time.sleep(2)
    assert server_status(calc_files).running


def test_bad_idle_settings_are_one_line_errors(calc_files: Path, monkeypatch: pytest.MonkeyPatch):
    from motoko.errors import ConfigError
    from motoko.study.server import idle_stop_of

    result = motoko("info", cwd=calc_files, env={"MOTOKO_SERVER_IDLE_STOP": "soon"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "motoko: error: MOTOKO_SERVER_IDLE_STOP='soon' is not a number of seconds (e.g. 1800, or 0 for never)\n"
    assert not (calc_files / ".motoko" / "zeo.pid").exists()
    with open(calc_files / "motoko.yaml", "a") as config:
        config.write("server_idle_stop: -5\n")
    result = motoko("info", cwd=calc_files)
    assert result.returncode == 2
    assert result.stderr.startswith("motoko: error: ") and "server_idle_stop must be a number of seconds, got -5" in result.stderr
    monkeypatch.setenv("MOTOKO_SERVER_IDLE_STOP", "-1")
    assert idle_stop_of(12.0) == 12.0  # motoko.yaml's setting wins
    with pytest.raises(ConfigError) as error:
        idle_stop_of(None)
    assert str(error.value) == "MOTOKO_SERVER_IDLE_STOP='-1' is not a number of seconds (e.g. 1800, or 0 for never)"


# -- Dask's logs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_dask_info_logs_do_not_flood_run(calc_dir: Path):
    (calc_dir / "workflows" / "slow.py").write_text(SLOW.replace("sleep=[1.5]", "sleep=[0.1]"))
    result = motoko("run", "--executor", "dask", "--progress-every", "600", "workflows/slow.py", cwd=calc_dir, timeout=180)
    assert result.returncode == 0, result.stderr
    # No "distributed.scheduler INFO: ..." (Dask's warnings, e.g. a slow worker shutdown
    # on a loaded machine, still show), and no false "no launcher alive" while the
    # embedded launcher's Dask cluster starts.
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"workflow workflows/slow.py finished \(run name slow\) in \d+\.\d\d s", lines[-1]), result.stderr
    assert [line for line in lines[:-1] if " WARNING: " not in line and " ERROR: " not in line] == [], result.stderr
    assert "distributed.scheduler" not in result.stderr


# -- a step without runs ---------------------------------------------------------------------

NO_RUNS = """\
from motoko import step


@step
async def prepare(workflow):
    return [0.5]


@step
async def calc(workflow, prepare):
    return await workflow.calc.createTask(x=prepare)
"""


def test_a_step_without_runs_shows_as_done(calc_dir: Path):
    (calc_dir / "workflows" / "norun.py").write_text(NO_RUNS)
    before = motoko("graph", "workflows/norun.py", "--states", cwd=calc_dir)
    assert [line.split() for line in before.stdout.splitlines()] == [["prepare", "PENDING"], ["calc", "PENDING", "←", "prepare"]]
    assert motoko("run", "workflows/norun.py", cwd=calc_dir).returncode == 0
    after = motoko("graph", "workflows/norun.py", "--states", cwd=calc_dir)
    assert after.returncode == 0, after.stderr
    assert [line.split() for line in after.stdout.splitlines()] == [
        ["prepare", "(no", "runs)", "FINISHED"], ["calc", "(1", "run)", "FINISHED", "←", "prepare"]]
    mermaid = motoko("graph", "workflows/norun.py", "--states", "--format", "mermaid", cwd=calc_dir).stdout
    assert 'n_prepare["prepare (no runs)<br/>FINISHED"]:::finished' in mermaid
    png = motoko("graph", "workflows/norun.py", "--states", "--format", "png", "-o", "steps.png", cwd=calc_dir)
    assert png.returncode == 0 and (calc_dir / "steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from motoko.flow.step_record import steps_done

    assert steps_done(calc_dir, "norun") == {"prepare", "calc"}
    assert steps_done(calc_dir, "other") == set()


def test_status_watch_redraws_without_blanking_the_screen(calc_dir: Path):
    screen = on_a_terminal(["status", "--watch", "--count", "2"], calc_dir, stream="stdout")
    assert "\033[2J" not in screen  # clearing the whole screen first made it flicker
    assert screen.count("\033[H") == 2 and "\033[K" in screen and screen.count("\033[J") == 2
    assert "motoko status --watch" in screen

"""``motoko runs list|show|ls|tail|wait`` and ``motoko cancel``, through the real entry point.

Commands run in-process through :func:`motoko.cli.main.main` (the one place
that maps errors to exit codes), against real servers and runs executed by a
real launcher; ``runs tail -f`` runs as a separate process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_config, write_study

from motoko import Workflow
from motoko.cli.main import main
from motoko.config import load_config
from motoko.errors import RunsFailed
from motoko.launch.service import EmbeddedLauncher
from motoko.study.records import CANCELLED, FINISHED
from motoko.study.server import stop_server

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 5
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

CALC_DOIT = """\
import time

from motoko import current_run

run, job = current_run()
for i in range(1, 6):
    print(f"line {i}", flush=True)
    time.sleep(job.sleep / 5)
if job.mode == "raise":
    raise ValueError(f"x was {job.x}")
run.y = 2 * job.x
"""

POST_DOIT = """\
from motoko import current_run

run, job = current_run()
run.y = job.x + 1
"""

#: Width of the name column of `runs show` (the longest name, computation_time, + 2).
W = 18


def make_dir(root: Path) -> Path:
    write_study(root, "calc", "{x: float, sleep: float, mode: str}", CALC_DOIT,
                extra="job_space: {sleep: 0.0, mode: ok}\n")
    write_study(root, "post", "{x: float}", POST_DOIT)
    write_config(root, ["calc", "post"], FAST)
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `motoko ARGS` through the real entry point; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def done_dir(tmp_path_factory: pytest.TempPathFactory):
    """calc.1 FINISHED, calc.2 FAILED, post.1 FINISHED, then calc.3 left CREATED."""
    root = make_dir(tmp_path_factory.mktemp("runs-cli") / "wf")
    workflow = Workflow(root, run_name="r1")
    embedded = EmbeddedLauncher(load_config(root / "motoko.yaml")).start()
    try:
        workflow.calc.createTask(x=1.0).result(timeout=60)
        with pytest.raises(RunsFailed):
            workflow.calc.createTask(x=2.0, mode="raise").result(timeout=60)
        workflow.post.createTask(x=5.0).result(timeout=60)
    finally:
        embedded.stop()
    workflow.calc.createTask(x=3.0)
    workflow.close()
    yield root
    stop_server(root, grace=5)


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    return make_dir(workdir)


# -- runs list ----------------------------------------------------------------------------------


def test_runs_list_newest_first_with_filters(done_dir, capsys):
    code, out, _ = run_cli(capsys, "-C", str(done_dir), "runs", "list")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["study", "id", "state", "run_name", "job", "created", "time", "progress"]
    assert [tuple(line.split()[:3]) for line in lines[1:]] == [
        ("calc", "3", "CREATED"), ("post", "1", "FINISHED"), ("calc", "2", "FAILED"), ("calc", "1", "FINISHED"),
    ]
    assert "x=1.0, sleep=0.0, mode=ok" in lines[4] and lines[4].rstrip().endswith(" s")  # its computation time
    _, last, _ = run_cli(capsys, "-C", str(done_dir), "runs", "list", "--last", "2")
    assert [line.split()[:2] for line in last.splitlines()[1:]] == [["calc", "3"], ["post", "1"]]
    _, failed, _ = run_cli(capsys, "-C", str(done_dir), "runs", "list", "--state", "FAILED")
    assert [line.split()[:3] for line in failed.splitlines()[1:]] == [["calc", "2", "FAILED"]]
    _, post, _ = run_cli(capsys, "-C", str(done_dir), "runs", "list", "--study", "post", "--format", "json")
    (only,) = json.loads(post)
    assert (only["study"], only["id"], only["state"], only["y"], only["job"]) == ("post", 1, FINISHED, 6.0, {"id": 1, "x": 5.0})
    assert run_cli(capsys, "-C", str(done_dir), "runs", "list", "--state", "CANCELLED") == (0, "no run matches\n", "")


def test_runs_list_refuses_an_unknown_state(done_dir, capsys):
    code, out, err = run_cli(capsys, "-C", str(done_dir), "runs", "list", "--state", "FINSHED")
    assert (code, out) == (2, "")
    assert err == "motoko: error: study calc: unknown state 'FINSHED' (did you mean 'FINISHED' or 'FAILED'?)\n"


# -- runs show -----------------------------------------------------------------------------------


def test_runs_show_aligns_everything_about_a_run(done_dir, capsys):
    code, out, _ = run_cli(capsys, "-C", str(done_dir), "runs", "show", "calc.1")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == "run".ljust(W) + "calc.1"
    assert lines[1] == "state".ljust(W) + FINISHED
    assert lines[2] == "job".ljust(W) + "x=1.0, sleep=0.0, mode=ok"
    assert "run_name".ljust(W) + "r1" in lines and "exit_code".ljust(W) + "0" in lines
    assert "progress" in lines and "y".ljust(W) + "2.0" in lines
    names = [line[:W].strip() for line in lines]
    for name in ("created", "launched", "started", "finished", "computation_time", "total_time", "machine_name",
                 "error", "output", "metadata", "run_path"):
        assert name in names
    created = next(line for line in lines if line.startswith("created "))
    assert created.endswith(" UTC") and created[W:W + 2] == "20"
    assert all(len(line) <= W or line[W - 2:W] == "  " for line in lines)  # one value column


def test_runs_show_a_failed_run_json_and_errors(done_dir, capsys):
    _, out, _ = run_cli(capsys, "-C", str(done_dir), "runs", "show", "2", "--study", "calc")
    lines = out.splitlines()
    error_at = next(i for i, line in enumerate(lines) if line.startswith("error "))
    assert "exit code 1" in lines[error_at]
    assert lines[error_at + 1].startswith(" " * W) and "ValueError: x was 2.0" in out
    code, text, _ = run_cli(capsys, "-C", str(done_dir), "runs", "show", "3", "--format", "json")
    data = json.loads(text)
    assert (code, data["study"], data["state"], data["queue_position"], data["job"]["x"]) == (0, "calc", "CREATED", 1, 3.0)
    assert run_cli(capsys, "-C", str(done_dir), "runs", "show", "1") == (
        2, "", "motoko: error: run id 1 exists in studies calc, post (say which: calc.1 or --study calc)\n")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "show", "99") == (
        2, "", "motoko: error: no run with id 99 in any study (calc, post) (list existing runs with `motoko runs list`)\n")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "show", "calc.99")[2] == (
        "motoko: error: no run with id 99 in study 'calc' (list existing runs with `motoko runs list --study calc`)\n")
    code, _, err = run_cli(capsys, "-C", str(done_dir), "runs", "show", "calc.x")
    assert code == 2 and err.startswith("motoko: error: Invalid value for 'RUN': 'calc.x' is not a run (write ID or STUDY.ID")


# -- runs ls and tail -------------------------------------------------------------------------------


def test_runs_ls_lists_the_run_directory(done_dir, capsys):
    code, out, _ = run_cli(capsys, "-C", str(done_dir), "runs", "ls", "calc.1")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == f"{done_dir}/studies/calc/BD-calc-runs/run-1:"
    assert lines[1].split() == ["name", "size", "modified"]
    names = ["doIt.py", "launch.sh", "run.json", "stderr", "stdout"]  # no exit.1: see motoko.launch.attempts
    assert [line.split()[0] for line in lines[2:]] == [".motoko-attempt", *names]
    assert lines[-1].split()[:3] == ["stdout", "35", "B"]  # "line 1\n" ... "line 5\n"
    _, js, _ = run_cli(capsys, "-C", str(done_dir), "runs", "ls", "calc.1", "--format", "json")
    assert {k: v for k, v in json.loads(js)[4].items() if k != "modified"} == {"name": "stderr", "size": 0}
    assert run_cli(capsys, "-C", str(done_dir), "runs", "ls", "calc.3") == (0, "run calc.3 has no files yet (it is CREATED)\n", "")


def test_runs_tail_prints_the_end_of_a_file(done_dir, capsys):
    assert run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.1") == (0, "line 1\nline 2\nline 3\nline 4\nline 5\n", "")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.1", "-n", "2") == (0, "line 4\nline 5\n", "")
    code, out, _ = run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.2", "--file", "stderr", "-n", "1")
    assert (code, out) == (0, "ValueError: x was 2.0\n")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.1", "-f", "-n", "1") == (0, "line 5\n", "run calc.1 ended FINISHED\n")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.1", "--file", "stdot")[2] == (
        f"motoko: error: run calc.1 has no file 'stdot' in {done_dir}/studies/calc/BD-calc-runs/run-1 "
        "(did you mean 'stdout'?)\n")
    assert run_cli(capsys, "-C", str(done_dir), "runs", "tail", "calc.3") == (2, "", (
        "motoko: error: run calc.3 has no files yet: it is CREATED and has not started "
        "(follow it with `motoko runs tail calc.3 -f` to wait for its output)\n"))


def test_runs_tail_follow_waits_for_a_queued_run_and_stops_when_it_ends(wfdir):
    with Workflow(wfdir, run_name="r1") as workflow:
        workflow.calc.createTask(x=1.0, sleep=1.0)  # queued: no launcher yet
        follower = subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "runs", "tail", "calc.1", "-f"],
            cwd=wfdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(0.5)  # let it start following; it must wait, not fail
            embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
            try:
                out, err = follower.communicate(timeout=120)
            finally:
                embedded.stop()
        finally:
            if follower.poll() is None:
                follower.kill()
    assert follower.returncode == 0, err
    assert out == "line 1\nline 2\nline 3\nline 4\nline 5\n"
    assert err.splitlines()[-1] == "run calc.1 ended FINISHED"


# -- runs wait --------------------------------------------------------------------------------------


def test_runs_wait_shows_progress_and_reports_failures_and_timeouts(wfdir, capsys):
    with Workflow(wfdir, run_name="r1") as workflow:
        workflow.calc.createTask(x=[1.0, 2.0], sleep=0.2)
        workflow.calc.createTask(x=3.0, mode="raise")
        embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
        try:
            code, out, err = run_cli(capsys, "-C", str(wfdir), "runs", "wait", "--study", "calc", "x < 2.5")
            assert (code, out) == (0, "2 run(s) finished\n")
            assert "calc: 100%|" in err and "2/2 finished (100%)" in err
            code, out, err = run_cli(capsys, "-C", str(wfdir), "runs", "wait", "--no-progress", "x > 2.5")
            assert (code, out) == (1, "")
            assert err.startswith("motoko: error: 1 run failed: calc.3 FAILED (exit code 1): ValueError: x was 3.0")
        finally:
            embedded.stop()
        workflow.post.createTask(x=1.0)
        code, out, err = run_cli(capsys, "-C", str(wfdir), "runs", "wait", "--no-progress", "--timeout", "0.2", "--study", "post")
        assert (code, out) == (1, "")
        assert err == ("motoko: error: 1 run(s) not done after 0.2 s: post.1 (CREATED) "
                       "(1 run waiting, no launcher alive: `motoko launcher start`)\n")
        assert run_cli(capsys, "-C", str(wfdir), "runs", "wait", "x > 100") == (0, "no run matches\n", "")


# -- cancel -------------------------------------------------------------------------------------------


def test_cancel_created_and_running_runs(wfdir, capsys):
    with Workflow(wfdir, run_name="r1") as workflow:
        rl = workflow.calc.createTask(x=[1.0, 2.0])
        assert run_cli(capsys, "-C", str(wfdir), "cancel", "-y", "--study", "calc", "x > 1.5") == (
            0, "cancel requested for 1 run(s): 1 cancelled\n", "")
        assert run_cli(capsys, "-C", str(wfdir), "cancel", "-y", "x > 1.5") == (0, "no unfinished run matches\n", "")
        assert rl.status() == {"CREATED": 1, CANCELLED: 1}
        rl.cancel()
        slow = workflow.calc.createTask(x=[5.0, 6.0], sleep=60.0)
        embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
        try:
            workflow.calc.select("state = RUNNING").all("state = RUNNING").result(timeout=60)
            code, out, err = run_cli(capsys, "-C", str(wfdir), "cancel", "-y", "--wait", "0", "x = 5")
            assert (code, out, err) == (1, "cancel requested for 1 run(s): 1 stopping\n", "still running after 0 s: calc.3\n")
            assert run_cli(capsys, "-C", str(wfdir), "cancel", "-y", "--wait", "30", "--study", "calc", "x = 6") == (
                0, "cancel requested for 1 run(s): 1 cancelled\n", "")
            assert slow.cancel(wait_timeout=30) == {3: True, 4: True}
        finally:
            embedded.stop()
        assert [run.error for run, _ in slow] == ["cancelled on request"] * 2

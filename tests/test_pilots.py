"""Pilots on the real single-node SLURM: submitted, scaled, idle-exit, stopped, killed.

Every pilot here has a job name unique to its test, so only our own jobs are
ever looked at or cancelled (the cluster is shared). The database is served
over TCP with TLS and the certificates made by `motoko server start --listen`
(in a private MOTOKO_HOME): pilots connect with no set-up.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study
from test_executor_slurm import slurm  # noqa: F401 (the session's SLURM)

from motoko.study.database import StudyDB
from motoko.study.records import CREATED, FINISHED, LOST
from motoko.study.server import stop_server

pytestmark = pytest.mark.slow

#: Each run appends its id to a file shared by all runs: executions are counted.
COUNTING = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_FILE"\nsleep %s\n'


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _queue(name: str) -> list[tuple[str, str]]:
    """(job id, state) of the jobs named ``name`` in squeue (ended ones for a while too)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--name={name}", "--format=%i|%T"], capture_output=True, text=True, check=True
    )
    return [tuple(line.split("|")) for line in out.stdout.split()]  # type: ignore[misc]


def _active(name: str) -> list[str]:
    return [job for job, state in _queue(name) if state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")]


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout} s")


@pytest.fixture
def pilot_wf(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm):  # type: ignore[no-untyped-def]  # noqa: F811
    """A workflow served over TLS with pilots of a unique name; its jobs are cancelled at the end."""
    monkeypatch.setenv("MOTOKO_HOME", str(tmp_path / "home"))
    for name in ("MOTOKO_TLS_CA", "MOTOKO_TLS_CERT", "MOTOKO_TLS_KEY", "MOTOKO_DB"):
        monkeypatch.delenv(name, raising=False)
    count = tmp_path / "executions"
    monkeypatch.setenv("COUNT_FILE", str(count))
    name = f"mtk-pilot-test-{uuid.uuid4().hex[:8]}"
    state = {"name": name, "root": workdir, "count": count}

    def configure(pilots: str, *, sleep: float = 0.05, extra: str = "", lost_after: float = 60) -> None:
        write_study(workdir, "s", "{x: int}", "pass\n", launch=COUNTING % sleep, extra=extra)
        write_config(
            workdir, ["s"],
            f"lost_after: {lost_after}\nlauncher:\n  executor: pilot\n  poll: 0.5\n  pilots: {{name: {name}, {pilots}}}\n",
        )

    state["configure"] = configure
    port = _port()
    state["port"] = port
    yield state
    ours = _active(name)
    if ours:
        subprocess.run(["scancel", *ours], check=False)
    stop_server(workdir)


def _start_server(state: dict) -> str:  # type: ignore[type-arg]
    started = motoko("server", "start", "--listen", f"127.0.0.1:{state['port']}", cwd=state["root"])
    assert started.returncode == 0 and "TLS, client certificates required" in started.stdout, started.stderr
    return f"zeo://127.0.0.1:{state['port']}"


def _create(address: str, root: Path, n: int, **extra: object) -> None:
    from motoko.flow.workflow import Workflow

    wf = Workflow(root / "motoko.yaml")
    wf.s.createTask(x=list(range(n)), **extra)
    wf.close()


def _executions(state: dict) -> list[str]:  # type: ignore[type-arg]
    path: Path = state["count"]
    return path.read_text().split() if path.exists() else []


def test_pilots_are_submitted_scaled_and_leave_when_idle(pilot_wf):  # type: ignore[no-untyped-def]
    pilot_wf["configure"]("max: 2, cores: 2, time: '00:05:00', idle_exit: 2")
    address = _start_server(pilot_wf)
    root, name = pilot_wf["root"], pilot_wf["name"]
    _create(address, root, 30)
    manager = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--once"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait(lambda: len(_queue(name)) >= 1, 30, "a pilot submitted")
        peak = 0
        deadline = time.monotonic() + 120
        while manager.poll() is None and time.monotonic() < deadline:
            peak = max(peak, len(_active(name)))
            time.sleep(0.1)
        output = manager.communicate(timeout=30)[0]
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 0, output
    assert 1 <= peak <= 2, f"max: 2 pilots at once, saw {peak}"
    db = StudyDB(address)
    study = db.study("s")
    assert {run.state for run in study.runs.values()} == {FINISHED}
    assert sorted(_executions(pilot_wf), key=int) == [str(i) for i in range(1, 31)], "each run executed exactly once"
    records = [r for r in db.launchers().values() if r.pilot_job]
    assert records and sum(r.executed for r in records) == 30
    assert {run.launcher for run in study.runs.values()} <= {r.id for r in records}, "only pilots executed runs"
    db.close()
    assert _active(name) == [], "no pilot is left in the queue after idle_exit"
    listed = motoko("pilots", "list", "--format", "json", cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert '"runs done"' in listed.stdout and "COMPLETED" in listed.stdout


def test_pilots_submit_list_and_stop(pilot_wf):  # type: ignore[no-untyped-def]
    pilot_wf["configure"]("max: 1, cores: 1, time: '00:05:00', idle_exit: 300")
    _start_server(pilot_wf)
    root, name = pilot_wf["root"], pilot_wf["name"]
    submitted = motoko("pilots", "submit", "-n", "2", cwd=root)
    assert submitted.returncode == 0 and "submitted 2 pilot(s)" in submitted.stdout, submitted.stderr
    _wait(lambda: len(_active(name)) == 2, 30, "two pilots queued")
    listed = motoko("pilots", "list", cwd=root)
    assert listed.stdout.splitlines()[0].split() == ["job", "state", "host", "runs", "done", "time", "left"]
    assert len(listed.stdout.splitlines()) == 3
    stranger = motoko("pilots", "stop", "999999", cwd=root)
    assert stranger.returncode == 2 and stranger.stderr.startswith("motoko: error: unknown pilot job '999999'"), stranger.stderr
    assert stranger.stderr.count("\n") == 1
    assert len(_active(name)) == 2, "nothing was stopped"
    stopped = motoko("pilots", "stop", cwd=root)
    assert stopped.returncode == 0 and "2 pilot(s) asked to finish their runs and leave" in stopped.stdout, stopped.stderr
    _wait(lambda: _active(name) == [], 30, "the pilots leaving")
    again = motoko("pilots", "stop", cwd=root)
    assert again.returncode == 0 and "no pilot was queued or running" in again.stdout


def test_a_killed_pilots_run_goes_the_lost_run_way_and_runs_once_more(pilot_wf):  # type: ignore[no-untyped-def]
    pilot_wf["configure"]("max: 1, cores: 1, time: '00:05:00', idle_exit: 30", sleep=30, extra="retries: 1\n", lost_after=3)
    address = _start_server(pilot_wf)
    root, name = pilot_wf["root"], pilot_wf["name"]
    _create(address, root, 1)
    assert motoko("pilots", "submit", cwd=root).returncode == 0
    _wait(lambda: len(_executions(pilot_wf)) == 1, 60, "the run starting in the pilot")
    killed = motoko("pilots", "stop", "--now", cwd=root)
    assert killed.returncode == 0 and "cancelled" in killed.stdout
    _wait(lambda: _active(name) == [], 30, "the pilot gone")
    # Any launcher notices the dead pilot's run (no heartbeat) and declares it LOST; retries: 1 requeues it.
    write_study(root, "s", "{x: int}", "pass\n", launch=COUNTING % 0, extra="retries: 1\n")
    result = motoko("launcher", "start", "--executor", "local", "--idle-exit", "8", cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
    db = StudyDB(address)
    run = db.study("s").runs[1]
    assert run.state == FINISHED and run.attempt == 2
    assert run.history[0]["state"] == LOST
    db.close()
    assert _executions(pilot_wf) == ["1", "1"], "the killed attempt and its one retry"


def test_pilots_claim_only_runs_that_fit_their_time(pilot_wf):  # type: ignore[no-untyped-def]
    pilot_wf["configure"]("max: 1, cores: 2, time: 60, idle_exit: 2", extra="run: {walltime: float}\n")
    address = _start_server(pilot_wf)
    root = pilot_wf["root"]
    from motoko.flow.workflow import Workflow

    wf = Workflow(root / "motoko.yaml")
    wf.s.createTask({"walltime": 5.0}, x=[1, 2])
    wf.s.createTask({"walltime": 3600.0}, x=[3])
    wf.close()
    result = motoko("launcher", "start", "--once", "--idle-exit", "4", cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
    db = StudyDB(address)
    states = {run.job.x: run.state for run in db.study("s").runs.values()}
    db.close()
    assert states == {1: FINISHED, 2: FINISHED, 3: CREATED}, "the hour-long run waits for a pilot that can hold it"


def test_motoko_run_with_executor_pilot(pilot_wf):  # type: ignore[no-untyped-def]
    pilot_wf["configure"]("max: 1, cores: 2, time: '00:05:00', idle_exit: 2")
    _start_server(pilot_wf)
    root, name = pilot_wf["root"], pilot_wf["name"]
    (root / "motoko.yaml").write_text((root / "motoko.yaml").read_text().replace("executor: pilot", "executor: local"))
    (root / "wf.py").write_text(
        "from motoko import step\n\n@step\nasync def fan(workflow):\n"
        "    runs = await workflow.s.createTask(x=list(range(6)))\n    return len(runs)\n"
    )
    result = motoko("run", "wf.py", "--executor", "pilot", cwd=root, timeout=180)
    assert result.returncode == 0, result.stderr
    assert "fan: 6" in result.stdout
    assert sorted(_executions(pilot_wf), key=int) == [str(i) for i in range(1, 7)]
    _wait(lambda: _active(name) == [], 30, "the pilot leaving after idle_exit")
    assert [job for job, _ in _queue(name)], "the runs went through a pilot job"


def test_the_manager_asks_squeue_at_most_every_poll_while_its_pilots_commit(pilot_wf, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Every commit of a pilot wakes the manager; squeue is asked only when it matters.

    ``squeue`` on PATH is a script that notes each call and runs the real one.
    """
    real = subprocess.run(["bash", "-c", "command -v squeue"], capture_output=True, text=True, check=True).stdout.strip()
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "squeue-calls"
    (shims / "squeue").write_text(f'#!/bin/bash\necho "$EPOCHREALTIME" >> {calls}\nexec {real} "$@"\n')
    (shims / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}:{os.environ['PATH']}")
    pilot_wf["configure"]("max: 1, cores: 2, time: '00:05:00', idle_exit: 2", sleep=0.02)
    (pilot_wf["root"] / "motoko.yaml").write_text(
        (pilot_wf["root"] / "motoko.yaml").read_text().replace("poll: 0.5", "poll: 1.5"))
    address = _start_server(pilot_wf)
    root, name = pilot_wf["root"], pilot_wf["name"]
    _create(address, root, 80)
    started = time.monotonic()
    result = motoko("launcher", "start", "--once", cwd=root, timeout=180)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert sorted(_executions(pilot_wf), key=int) == [str(i) for i in range(1, 81)], "each run executed exactly once"
    asked = len(calls.read_text().split())
    # One call per poll (1.5 s), plus the first look and one per pilot submitted or leaving;
    # asked at every commit, it was called dozens of times for 80 runs.
    assert asked <= elapsed / 1.5 + 4, f"squeue asked {asked} times in {elapsed:.1f} s"
    assert _active(name) == [], "no pilot is left in the queue after idle_exit"
    logs = list((root / ".motoko" / "pilots").glob("pilot-*.out"))
    assert logs and "started at" in logs[0].read_text(), "the pilot's log says when SLURM started it"

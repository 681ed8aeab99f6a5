"""``motoko status``: counts by state, running runs, failures, --watch, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from conftest import motoko, write_config, write_study
from views_support import FAST, copy_example

from motoko import Workflow
from motoko.study.server import stop_server
from motoko.views.status import RunLine, Status, StudyStatus, error_line, progress_bar, render_text


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The example workflow after one `motoko run workflows/pipeline.py` (shared, read only)."""
    root = copy_example(tmp_path_factory.mktemp("status") / "example")
    done = motoko("run", "workflows/pipeline.py", cwd=root)
    assert done.returncode == 0, done.stderr
    yield root
    stop_server(root, grace=5)


def test_status_table_has_one_aligned_row_per_study(pipeline: Path):
    result = motoko("status", cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout  # piped: no colours
    lines = result.stdout.splitlines()
    assert lines[0].startswith("motoko status  ")
    assert lines[2].split() == ["study", "total", "CREATED", "LAUNCHED", "RUNNING", "FINISHED", "FAILED", "CANCELLED", "LOST"]
    assert [line.split() for line in lines[3:6]] == [
        ["mult", "4", "·", "·", "·", "4", "·", "·", "·"],
        ["add", "2", "·", "·", "·", "2", "·", "·", "·"],
        ["norm", "2", "·", "·", "·", "2", "·", "·", "·"],
    ]
    # Columns line up: each count ends under the end of its header.
    assert len({len(line) for line in lines[2:6]}) == 1
    assert "nothing is running" in result.stdout


def test_status_json_and_study_filter(pipeline: Path):
    result = motoko("status", "--format", "json", "--study", "norm", cwd=pipeline)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(s["study"], s["total"], s["counts"]) for s in data["studies"]] == [("norm", 2, {"FINISHED": 2})]
    assert data["running"] == [] and data["failures"] == [] and data["done"] is True


def test_status_of_an_unknown_study_suggests_one(pipeline: Path):
    result = motoko("status", "--study", "mul", cwd=pipeline)
    assert result.returncode == 2
    assert result.stderr.startswith("motoko: error: ") and "'mult'" in result.stderr
    assert len(result.stderr.splitlines()) == 1


SLOW = """
import os, time
from motoko import current_run
run, job = current_run()
run.set_status("halfway there")
run.set_progress(0.5)
deadline = time.time() + 60
while not os.path.exists({gate!r}) and time.time() < deadline:
    time.sleep(0.05)
run.set_progress(1.0)
"""

BAD = """
from motoko import current_run
run, job = current_run()
raise ValueError("the input is bad")
"""


def test_running_runs_failures_and_watch_until_done(workdir: Path):
    gate = workdir / "gate"
    write_study(workdir, "slow", "{x: int}", SLOW.format(gate=str(gate)))
    write_study(workdir, "bad", "{x: int}", BAD)
    write_config(workdir, ["slow", "bad"], FAST)
    with Workflow(workdir, run_name="t") as workflow:
        workflow.slow.createTask(x=[1, 2])
        workflow.bad.createTask(x=1)
    watch = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "status", "--watch", "--until-done", "--format", "json"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert watch.stdout is not None
    seen = [json.loads(watch.stdout.readline())]  # the first view, before anything ran
    launcher = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--once", "-j", "3", "--machine-name", "node7"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The watch follows the changes: a view with both slow runs executing
        # and the failure (the slow runs wait for the gate meanwhile).
        while not (len(seen[-1]["running"]) == 2 and seen[-1]["failures"]):
            line = watch.stdout.readline()
            assert line, watch.communicate(timeout=10)
            seen.append(json.loads(line))
        deadline = time.monotonic() + 60
        while True:
            data = json.loads(motoko("status", "--format", "json", cwd=workdir).stdout)
            running = [r for r in data["running"] if r["progress"] == 0.5]
            if len(running) == 2 and data["failures"]:
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.1)
        text = motoko("status", cwd=workdir).stdout
        assert [line.split()[:3] for line in text.splitlines() if line.startswith("  slow.")] == [
            ["slow.1", "RUNNING", "██████░░░░░░"], ["slow.2", "RUNNING", "██████░░░░░░"],
        ]
        assert "50%  node7" in text and "halfway there" in text
        failure = [line for line in text.splitlines() if line.startswith("  bad.1")]
        assert failure and "FAILED (exit 1)" in failure[0] and failure[0].endswith("ValueError: the input is bad")
        gate.touch()
        assert launcher.wait(60) == 0, launcher.stderr.read() if launcher.stderr else ""
        out, err = watch.communicate(timeout=60)
    finally:
        for process in (watch, launcher):
            if process.poll() is None:
                process.kill()
    assert watch.returncode == 0, err
    updates = seen + [json.loads(line) for line in out.splitlines()]
    # The first view had runs waiting; the watch followed the changes and
    # stopped by itself once nothing waited or executed any more.
    assert updates[0]["done"] is False and len(updates) >= 3
    assert updates[-1]["done"] is True
    assert {s["study"]: s["counts"] for s in updates[-1]["studies"]} == {"slow": {"FINISHED": 2}, "bad": {"FAILED": 1}}


def test_watch_stops_after_count(pipeline: Path):
    result = motoko("status", "--watch", "--count", "1", cwd=pipeline)
    assert result.returncode == 0 and result.stdout.count("motoko status") == 1


def test_render_text_of_a_status_in_memory():
    status = Status(
        [StudyStatus("calc", {"RUNNING": 1, "FORWARDED": 2})],
        running=[RunLine("calc", 7, "RUNNING", progress=0.25, machine_name="hostA")],
        failures=[RunLine("calc", 3, "LOST", error="launcher stopped heart-beating")],
    )
    text = click.unstyle(render_text(status))
    assert "FORWARDED" in text.splitlines()[2]  # a user state gets its column
    assert "calc.7  RUNNING   ███░░░░░░░░░   25%  hostA" in text
    assert "calc.3  LOST" in text and "launcher stopped heart-beating" in text
    assert not status.done


def test_error_line_and_progress_bar():
    assert error_line("Traceback (most recent call last):\n  File x\nKeyError: 'a'\n\n") == "KeyError: 'a'"
    assert error_line(None) is None and error_line("  \n") is None
    assert progress_bar(1.0, 4) == "████  100%" and progress_bar(None, 4).strip() == ""

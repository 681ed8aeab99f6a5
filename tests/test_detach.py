"""`motoko run --detach` and `motoko run status|stop|logs`."""

from __future__ import annotations

import time

from conftest import motoko


def _wait_exit(example, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = motoko("run", "status", cwd=example).stdout
        if "exited" in status or "killed" in status:
            return status
        time.sleep(0.3)
    raise AssertionError("the detached workflow did not end")


def test_detached_run_finishes_and_its_log_and_status_are_readable(example):
    assert "no detached workflow" in motoko("run", "status", cwd=example).stdout
    started = motoko("run", "workflows/pipeline.py", "--detach", cwd=example)
    assert started.returncode == 0, started.stderr
    assert "workflow started in the background" in started.stdout
    status = _wait_exit(example)
    assert "exited 0" in status and "workflows/pipeline.py" in status
    logs = motoko("run", "logs", cwd=example)
    assert "remult: [[18.038928" in logs.stdout
    assert "no detached workflow is running" in motoko("run", "stop", cwd=example).stdout


def test_detached_run_with_bad_input_fails_at_once(example):
    (example / "workflows" / "broken.py").write_text("from motoko import step\n@step\nasync def a(workflow, b):\n    pass\n@step\nasync def b(workflow, a):\n    pass\n")
    result = motoko("run", "workflows/broken.py", "--detach", cwd=example)
    assert result.returncode == 2 and "cycle" in result.stderr
    assert "no detached workflow" in motoko("run", "status", cwd=example).stdout


def test_stopping_a_detached_run_cancels_its_unfinished_runs(example):
    (example / "studies" / "mult" / "launch.sh").write_text("#!/bin/bash\nsleep 30\n")
    motoko("run", "workflows/pipeline.py", "--detach", cwd=example)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "RUNNING" not in motoko("select", "--study", "mult", cwd=example).stdout:
        time.sleep(0.3)
    stopped = motoko("run", "stop", cwd=example)
    assert "interrupted 1 workflow(s)" in stopped.stdout
    status = _wait_exit(example)
    assert "exited 130" in status
    selected = motoko("select", "--study", "mult", "--format", "csv", "--fields", "id,state", cwd=example).stdout
    assert selected.count("CANCELLED") == 2

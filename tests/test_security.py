"""Security properties that are easy to lose in a refactor."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import motoko

PACKAGE = Path(__file__).resolve().parents[1] / "motoko"


def test_no_eval_or_exec_anywhere_in_motoko():
    """No configuration value is ever evaluated (motoko 0.1.4 eval-ed bd.yaml types)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile"):
                offenders.append(f"{path}:{node.lineno}")
    assert offenders == []


def test_a_type_name_cannot_run_code(workdir):
    (workdir / "studies" / "s").mkdir(parents=True)
    (workdir / "studies" / "s" / "bd.yaml").write_text("study: s\njob: {x: \"__import__('os').system('touch PWNED')\"}\n")
    (workdir / "studies" / "s" / "launch.sh").write_text("exit 0\n")
    (workdir / "studies" / "s" / "doIt.py").write_text("")
    (workdir / "motoko.yaml").write_text("task_managers:\n  s:\n")
    result = motoko("info", cwd=workdir)
    assert result.returncode == 2 and "unknown type" in result.stderr
    assert not list(workdir.rglob("PWNED"))


def test_clean_lists_first_then_deletes_runs_and_their_directories(example):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    run_dir = example / "studies" / "add" / "BD-add-runs" / "run-1"
    assert run_dir.is_dir()
    dry = motoko("clean", "id = 1", "--study", "add", cwd=example)
    assert "nothing deleted (add --delete to delete them)" in dry.stdout and run_dir.is_dir()
    declined = motoko("clean", "id = 1", "--study", "add", "--delete", cwd=example)
    assert declined.returncode == 1 and run_dir.is_dir()  # no stdin: the question is declined
    done = motoko("clean", "id = 1", "--study", "add", "--delete", "--yes", cwd=example)
    assert done.returncode == 0 and "deleted 1 run(s)" in done.stdout
    assert not run_dir.exists()
    listing = motoko("select", "--study", "add", "--format", "csv", "--fields", "id", cwd=example).stdout.split()
    assert listing == ["study,id", "add,2"]
    assert motoko("db", "check", cwd=example).stdout.strip() == "database ok"
    packed = motoko("db", "pack", cwd=example)
    assert packed.returncode == 0 and "packed:" in packed.stdout
    # the deleted run is created anew when the workflow runs again (dedupe forgot it)
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0


def test_clean_refuses_executing_runs(example):
    (example / "studies" / "mult" / "launch.sh").write_text("#!/bin/bash\nsleep 20\n")
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "motoko.cli.main", "run", "workflows/pipeline.py"], cwd=example,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "RUNNING" not in motoko("select", "--study", "mult", cwd=example).stdout:
            time.sleep(0.2)
        result = motoko("clean", "--study", "mult", "--delete", "--yes", cwd=example)
        assert result.returncode == 2 and "are executing" in result.stderr and "motoko cancel" in result.stderr
    finally:
        proc.terminate()
        proc.wait(30)

"""Issue 17, item 10: one line for deep constraints and raw NUL, no traceback in logs, private
run files that are never read outside their run directory, distinct fresh run names."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import write_config, write_study
from hardened_support import bounded_motoko, one_line_error

from motoko.flow.runner import resolve_run_name
from motoko.flow.workflow import Workflow
from motoko.views.web import Dashboard

SECRET = "the neighbour's secret"


@pytest.fixture(scope="module")
def wfdir(tmp_path_factory: pytest.TempPathFactory):
    """A workflow with one FINISHED run whose directory holds links leading out of it."""
    base = tmp_path_factory.mktemp("hardened_files")
    (base / "secret.txt").write_text(SECRET + "\n")
    root = base / "wf"
    root.mkdir()
    doit = f"""
    import os
    from motoko import current_run
    run, job = current_run()
    print("hello")
    os.symlink({str(base / 'secret.txt')!r}, "link.txt")
    """
    write_study(root, "s", "{x: int}", doit)
    write_config(root, ["s"])
    (root / "wf.py").write_text("from motoko import step\n\n\n@step\nasync def first(workflow):\n"
                                "    return len(await workflow.s.createTask(x=[1]))\n")
    done = bounded_motoko("run", "wf.py", cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    yield root
    from motoko.study.server import stop_server

    stop_server(root, grace=5)


def _run_dir(root: Path) -> Path:
    return next(root.glob("studies/s/BD-*-runs/*/"))


def test_a_deeply_nested_constraint_is_one_line(wfdir):
    done = bounded_motoko("select", "(" * 1000 + "x = 1" + ")" * 1000, cwd=wfdir)
    one_line_error(done, "nested more than 100 levels deep", "remove redundant parentheses")
    done = bounded_motoko("select", "not " * 1000 + "x = 1", cwd=wfdir)
    one_line_error(done, "nested more than 100 levels deep")


def test_a_raw_nul_in_bd_yaml_is_one_line(tmp_path):
    write_study(tmp_path, "s", "{x: int}", "pass\n")
    write_config(tmp_path, ["s"])
    bd = tmp_path / "studies/s/bd.yaml"
    bd.write_bytes(bd.read_bytes() + b"run: {y: \x00int}\n")
    done = bounded_motoko("info", cwd=tmp_path)
    one_line_error(done, "studies/s/bd.yaml:3", "character U+0000 is not allowed", "remove that NUL")
    assert not (tmp_path / ".motoko" / "data.fs").exists(), "refused before the database was touched"


def test_library_tracebacks_are_logged_as_one_line_unless_debug():
    """ZODB/transaction log tracebacks while the server is away: the CLI shows one line (item 10)."""
    script = (
        "import logging, sys\n"
        "from ZEO.Exceptions import ClientDisconnected\n"
        "logging.basicConfig(level=logging.WARNING, format='%(name)s %(levelname)s: %(message)s')\n"
        "from motoko.cli.format import one_line_logs\n"
        "one_line_logs(sys.argv[1] == 'debug')\n"
        "try:\n"
        "    raise ClientDisconnected('connection lost')\n"
        "except ClientDisconnected:\n"
        "    logging.getLogger('txn.140').exception('Failed to abort resource manager: %s', 'conn')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script, "quiet"], capture_output=True, text=True, timeout=60)
    assert quiet.stderr.strip().splitlines() == [
        "txn.140 ERROR: Failed to abort resource manager: conn (ClientDisconnected: connection lost)"
    ]
    debug = subprocess.run([sys.executable, "-c", script, "debug"], capture_output=True, text=True, timeout=60)
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("name", ["../../bd.yaml", "link.txt", "/etc/passwd", "../../../../secret.txt"])
def test_runs_tail_never_reads_outside_the_run_directory(wfdir, name):
    done = bounded_motoko("runs", "tail", "s.1", "--file", name, cwd=wfdir)
    line = one_line_error(done, "s.1")
    assert SECRET not in done.stdout + done.stderr and "study: s" not in done.stdout
    assert "outside the run directory" in line or "has no file" in line


def test_runs_tail_still_reads_the_run_s_own_files(wfdir):
    done = bounded_motoko("runs", "tail", "s.1", cwd=wfdir)
    assert done.returncode == 0 and done.stdout.strip() == "hello", done.stderr


def test_the_dashboard_never_shows_a_log_linked_outside_the_run_directory(wfdir):
    run_dir = _run_dir(wfdir)
    (run_dir / "stderr").unlink(missing_ok=True)
    (run_dir / "stderr").symlink_to(run_dir.parents[3] / "secret.txt")
    workflow = Workflow(wfdir / "motoko.yaml", create=False)
    board = Dashboard(workflow, port=0).start()
    try:
        with urllib.request.urlopen(board.url + "api/run?study=s&id=1", timeout=30) as reply:
            data = json.loads(reply.read())
        assert data["logs"]["stderr"] is None and data["logs"]["stdout"].strip() == "hello"
    finally:
        board.close()
        workflow.close()
        (run_dir / "stderr").unlink()


def test_run_directories_and_run_names_are_private(wfdir):
    run_dir = _run_dir(wfdir)
    for path in (run_dir, run_dir.parent):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    names = wfdir / ".motoko" / "run-names.json"
    assert stat.S_IMODE(names.stat().st_mode) == 0o600


def test_fresh_executions_started_in_the_same_second_get_distinct_run_names(tmp_path):
    (tmp_path / ".motoko").mkdir()
    file = tmp_path / "wf.py"
    names: list[str] = []
    threads = [threading.Thread(target=lambda: names.append(resolve_run_name(tmp_path, file, None, True)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    names.append(resolve_run_name(tmp_path, file, None, True))
    assert len(names) == 5 and len(set(names)) == 5, names
    assert all(name.startswith("wf-") for name in names)
    assert stat.S_IMODE(os.stat(tmp_path / ".motoko" / "run-names.json").st_mode) == 0o600

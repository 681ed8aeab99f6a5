"""The README's test command leaves nothing running: servers the tests started are stopped.

A pytest of its own runs ``tests/probe_leftovers.py``, whose test starts a ZEO
server and does not stop it; the session fixture of ``tests/conftest.py``
must stop it when the session ends normally, and when it is interrupted
with Ctrl-C in the middle of a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from leftovers import server_directories

from motoko.study.server import pid_alive, server_status, stop_server

REPO = Path(__file__).resolve().parents[1]


def probe(tmp_path: Path, wait: float | None = None) -> tuple[subprocess.Popen[str], Path]:
    record = tmp_path / "record"
    env = {**os.environ, "MOTOKO_PROBE_RECORD": str(record), "MOTOKO_KEEP_SLURM": "1"}
    if wait:
        env["MOTOKO_PROBE_WAIT"] = str(wait)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "tests/probe_leftovers.py", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "probe-tmp")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return process, record


def test_a_server_left_by_a_test_is_stopped_when_the_session_ends(tmp_path: Path):
    process, record = probe(tmp_path)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    root = Path(record.read_text())
    try:
        assert not server_status(root).running
        assert server_directories(tmp_path) == []
    finally:
        stop_server(root, grace=5)


def test_a_server_left_by_an_interrupted_session_is_stopped(tmp_path: Path):
    process, record = probe(tmp_path, wait=120)
    root = None
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        root = Path(record.read_text())
        pid = server_status(root).pid
        assert pid is not None and pid_alive(pid)
        process.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the test
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 2, out  # pytest's "interrupted"
        assert "KeyboardInterrupt" in out
        assert not pid_alive(pid) and not server_status(root).running
    finally:
        if process.poll() is None:
            process.kill()
        if root is not None:
            stop_server(root, grace=5)


def test_slurm_is_stopped_only_when_the_session_started_it(tmp_path: Path):
    # A stand-in for slurmctld (a `sleep` of ours) in a private MOTOKO_SLURM_DIR: the
    # shared cluster of this machine is never touched.
    slurm_dir = tmp_path / "slurm"
    env = {**os.environ, "MOTOKO_SLURM_DIR": str(slurm_dir), "MOTOKO_PROBE_SLURM": "1",
           "MOTOKO_PROBE_RECORD": str(tmp_path / "record")}
    command = [sys.executable, "-m", "pytest", "tests/probe_leftovers.py", "-q", "-p", "no:cacheprovider",
               "--basetemp", str(tmp_path / "probe-tmp")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    pid_file = slurm_dir / "run" / "slurmctld.pid"
    assert not pid_file.exists()  # the session started it, so stop-slurm.sh stopped it
    # Running before the session: left alone.
    stand_in = subprocess.Popen(["sleep", "300"])
    try:
        pid_file.write_text(str(stand_in.pid))
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout
        assert stand_in.poll() is None and pid_file.read_text() == str(stand_in.pid)
    finally:
        stand_in.kill()
        stand_in.wait()
    for directory in server_directories(tmp_path):  # the probe's servers were stopped by its session
        stop_server(directory, grace=5)

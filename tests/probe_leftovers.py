"""Run by tests/test_leftovers.py in a pytest of its own: starts a server and leaves it running.

Not collected by default (its name does not start with ``test_``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from motoko.study.server import ensure_server


def test_leaves_a_server_running(tmp_path: Path):
    root = tmp_path / "left"
    root.mkdir()
    ensure_server(root)
    Path(os.environ["MOTOKO_PROBE_RECORD"]).write_text(str(root))
    if os.environ.get("MOTOKO_PROBE_WAIT"):
        time.sleep(float(os.environ["MOTOKO_PROBE_WAIT"]))  # interrupted with Ctrl-C meanwhile


def test_starts_a_stand_in_for_slurm():
    """With MOTOKO_PROBE_SLURM: a process standing in for slurmctld, named by its pid file."""
    import subprocess

    if not os.environ.get("MOTOKO_PROBE_SLURM"):
        return
    run = Path(os.environ["MOTOKO_SLURM_DIR"]) / "run"
    run.mkdir(parents=True, exist_ok=True)
    if (run / "slurmctld.pid").exists():
        return  # "already running" before the session: the session must leave it alone
    stand_in = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (run / "slurmctld.pid").write_text(str(stand_in.pid))

"""Helpers shared by the launcher and executor tests: a one-study workflow,
runs inserted directly, and launchers served in the foreground or a thread."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from conftest import write_config, write_study

from motoko.config import WorkflowConfig, load_config
from motoko.launch.service import build_launcher
from motoko.launch.serving import LauncherReport
from motoko.study.database import StudyDB
from motoko.study.records import Run
from motoko.study.schema import load_schema
from motoko.study.server import ensure_server
from motoko.study.space import expand


def make_study(
    root: Path, config: str, *, job: str = "{x: int}", doit: str = "pass\n", launch: str | None = None, extra: str = ""
) -> tuple[WorkflowConfig, StudyDB]:
    """A workflow with one study ``s``, its server started and the study created."""
    write_study(root, "s", job, doit, extra=extra, launch=launch)
    write_config(root, ["s"], config)
    db = StudyDB(ensure_server(root))
    db.create_study(load_schema(root / "studies" / "s"))
    return load_config(root), db


def create_runs(db: StudyDB, **params: Any) -> list[int]:
    """Insert one run per point of ``params`` (run name ``t``); return their ids."""
    schema = db.study("s").schema
    return [run.id for run, _ in db.insert("s", expand(schema, params), {}, run_name="t")]


def serve(config: WorkflowConfig, executor: str | None = None, **options: Any) -> LauncherReport:
    """Build a launcher and serve it until its bounded mode ends."""
    launcher = build_launcher(config, executor=executor, **options)
    try:
        return launcher.serve()
    finally:
        launcher.db.close()


class Background:
    """A launcher serving in a thread, so that a test can act while runs execute."""

    def __init__(self, config: WorkflowConfig, executor: str | None = None, **options: Any):
        self.report: LauncherReport | None = None
        self.thread = threading.Thread(target=self._main, args=(config, executor, options), daemon=True)
        self.thread.start()

    def _main(self, config: WorkflowConfig, executor: str | None, options: dict[str, Any]) -> None:
        self.report = serve(config, executor, **options)

    def join(self, timeout: float) -> LauncherReport:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the launcher did not exit within {timeout} s"
        assert self.report is not None
        return self.report


def run_of(db: StudyDB, rid: int) -> Run:
    """The run as stored now (a fresh transaction)."""
    db.abort()
    return db.run("s", rid)


def start_launcher(root: Path, *args: str, log: str = "launcher.log") -> Any:
    """``motoko launcher start ARGS`` as a real process (its own session), output in ``root/log``."""
    import subprocess
    import sys

    with open(root / log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", *args],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def kill_launcher(proc: Any) -> None:
    """SIGKILL the launcher process alone: what it started (runs, jobs) is left behind."""
    import os
    import signal

    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def run_hosts_of(pid: int) -> list[int]:
    """The run hosts (:mod:`motoko.launch.run_host`) that process ``pid`` started and that still run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"run_host" in command:
            found.append(int(entry.name))
    return found


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it is true; fail naming ``what`` after ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)

"""Workflows running in the background: ``motoko run --detach`` and ``run status|stop|logs``.

A detached workflow is an ordinary ``motoko run`` in its own session whose
output goes to a log under ``.motoko/workflows/``; a small record (pid, file,
log, and the exit status once it ended) sits beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from motoko.cli.format import render
from motoko.errors import MotokoError
from motoko.launch.processes import is_recorded_process
from motoko.study.server import pid_alive, state_dir

SUBCOMMANDS = ("status", "stop", "logs")


def _records_dir(workflow_dir: Path) -> Path:
    path = state_dir(workflow_dir) / "workflows"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def start(workflow_dir: Path, args: list[str], file: str) -> dict[str, Any]:
    """Start ``motoko run ARGS`` detached; return its record."""
    directory = _records_dir(workflow_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = directory / f"{Path(file).stem}-{stamp}.log"
    record_path = directory / f"{Path(file).stem}-{stamp}.json"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.detached_child", str(record_path), "run", *args],
            cwd=Path.cwd(), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
        )
    record = {"pid": proc.pid, "file": file, "log": str(log), "started": time.time(), "exit_code": None}
    record_path.write_text(json.dumps(record))
    return record


def records(workflow_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every detached workflow of this directory, newest last."""
    out = []
    for path in sorted(_records_dir(workflow_dir).glob("*.json"), key=lambda p: p.stat().st_mtime):
        with contextlib.suppress(OSError, ValueError):
            out.append((path, json.loads(path.read_text())))
    return out


def show_status(workflow_dir: Path) -> None:
    rows = []
    for _, record in records(workflow_dir):
        code = record.get("exit_code")
        state = "running" if code is None and pid_alive(record["pid"]) else ("exited " + str(code) if code is not None else "killed")
        rows.append([record["pid"], record["file"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"])), state, record["log"]])
    if not rows:
        click.echo("no detached workflow")
        return
    click.echo(render(["pid", "file", "started", "state", "log"], rows, "table"))


def stop(workflow_dir: Path) -> None:
    """Interrupt every running detached workflow (they cancel their unfinished runs)."""
    running = [
        r for _, r in records(workflow_dir)
        if r.get("exit_code") is None and pid_alive(r["pid"]) and is_recorded_process(r["pid"], r.get("started", 0.0))
    ]
    for record in running:
        os.kill(record["pid"], signal.SIGINT)
    click.echo(f"interrupted {len(running)} workflow(s)" if running else "no detached workflow is running")


def logs(workflow_dir: Path, follow: bool) -> None:
    found = records(workflow_dir)
    if not found:
        raise MotokoError("no detached workflow has run here", hint="start one with `motoko run FILE --detach`")
    path, record = found[-1]
    log = Path(record["log"])
    with open(log, errors="replace") as handle:
        click.echo(handle.read(), nl=False)
        while follow:
            line = handle.readline()
            if line:
                click.echo(line, nl=False)
                continue
            current = json.loads(path.read_text())
            if current.get("exit_code") is not None or not pid_alive(record["pid"]):
                return
            time.sleep(0.2)

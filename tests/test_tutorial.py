"""docs/tutorial.md, followed to the letter: every command in it runs, in order.

Each line of a ```bash block is run by bash in the directory the tutorial is
in at that point (``cd`` lines move it), with a ``motoko`` on PATH that is this
checkout's. ```python blocks run as scripts there; a ```python FILE block is
an excerpt of FILE and must appear in it. Commands that serve until stopped
(``motoko ui``) are started, checked over HTTP and stopped with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from views_support import REPO

from motoko.study.server import stop_server

TUTORIAL = REPO / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """(language, rest of the info string, code) of every fenced block."""
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in BLOCK.finditer(TUTORIAL.read_text())]


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """PATH with this checkout's motoko first, HOME in the temp dir, fast polls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "motoko"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m motoko.cli.main "$@"\n')
    wrapper.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home)}


def serve_and_check(line: str, cwd: Path, env: dict[str, str]) -> None:
    """Start a serving command on a free port, read its page and data, stop it with Ctrl-C."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port 0 --exit-after 60"], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(r"serving (http://\S+/)\?token=\S+ \(Ctrl-C to stop\)", first)
        assert match, first + process.stderr.read()
        url = match.group(1)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b"<title>motoko</title>" in page.read()
        with urllib.request.urlopen(url + "api/overview", timeout=10) as answer:
            overview = json.loads(answer.read())
        assert [s["study"] for s in overview["studies"]] == ["decay"] and overview["studies"][0]["total"] == 5
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_the_tutorial_runs_start_to_finish(tmp_path: Path, shell_env: dict[str, str]):
    cwd = tmp_path
    ran: list[str] = []
    outputs: dict[str, str] = {}
    try:
        for language, info, code in blocks():
            if language == "bash":
                for line in code.splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    ran.append(line)
                    if line.startswith("cd "):
                        cwd = (cwd / line[3:].strip()).resolve()
                        continue
                    if line.strip() == "motoko ui":
                        serve_and_check(line, cwd, shell_env)
                        continue
                    done = subprocess.run(["bash", "-c", line], cwd=cwd, env=shell_env, capture_output=True, text=True, timeout=120)
                    assert done.returncode == 0, f"{line!r} failed:\n{done.stderr}"
                    assert "error" not in done.stderr.lower(), f"{line!r}: {done.stderr}"
                    outputs[line] = done.stdout
                    written = re.search(r"-o (\S+)", line)
                    if written:
                        assert (cwd / written.group(1)).stat().st_size > 0, line
            elif language == "python" and not info:
                ran.append("python block")
                done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=shell_env, capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stderr
                outputs["python"] = done.stdout
            elif language == "python":
                source = next(cwd.rglob(info))
                assert code in source.read_text(), f"the tutorial's excerpt of {info} is not in {source}"
    finally:
        stop_server(tmp_path / "demo", grace=5)

    every = [line for lang, _, code in blocks() if lang == "bash" for line in code.splitlines() if line.strip()]
    assert len([r for r in ran if r != "python block"]) == len(every)
    # What the tutorial says the commands print, they print.
    assert "summary: {0.5: 0.3585, 1.0: 0.1216, 2.0: 0.0115}" in outputs["motoko run workflows/main.py"]
    status = outputs["motoko status"]
    assert [line.split() for line in status.splitlines() if line.startswith("decay")] == [
        ["decay", "5", "·", "·", "·", "5", "·", "·", "·"]
    ]
    assert "nothing is running" in status
    frame = outputs["python"].splitlines()
    assert frame[0].split() == ["id", "rate", "final", "q.amount"] and len(frame) == 6
    assert "mult" not in outputs["motoko graph --runs --format mermaid"]
    assert outputs["motoko graph --runs --format mermaid"].count(":::finished") == 5

"""Running the real command line under a time and memory bound (issue 17)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from conftest import error_lines

#: Address space a hostile-input command may use: the red team's inputs reached 3-5 GB.
MEMORY = 2 * 1024**3


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def bounded_motoko(*args: str, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``motoko ARGS`` with at most :data:`MEMORY` bytes of address space and ``timeout`` seconds.

    A command that exceeds either fails the test (TimeoutExpired, or a
    MemoryError traceback and a non-2 exit), never the machine.
    """
    return subprocess.run(
        [sys.executable, "-m", "motoko.cli.main", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, preexec_fn=_limit_memory,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Assert exit 2 and a single ``motoko: error:`` line holding ``fragments``; return it."""
    shown = f"exit {done.returncode}\nstdout: {done.stdout[-2000:]!r}\nstderr: {done.stderr[-2000:]!r}"
    assert "Traceback" not in done.stdout + done.stderr, shown
    assert done.returncode == 2, shown
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("motoko: error: "), shown
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"
    return lines[0]

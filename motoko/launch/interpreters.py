"""How a staged exec file with a ``#!`` line is executed: through its interpreter.

The kernel runs ``#!/bin/bash -e`` scripts as ``/bin/bash -e SCRIPT``; the
launcher builds that command itself instead of executing the script file.
Why: executing a file fails with ``Text file busy`` (ETXTBSY) while any
process holds it open for writing, and a launcher staging the next run's
script while it starts another run's process lends that process, between
fork and exec, the descriptor of the file being written. Under load this
failed about one run in 300 (a run FAILED that never executed). The
interpreter only reads the script, which is never refused.
"""

from __future__ import annotations

from pathlib import Path


def shebang_command(exec_path: Path, head: bytes) -> tuple[str, ...] | None:
    """``(interpreter, [argument,] script)`` as the kernel would build it; None without a ``#!`` line.

    Like Linux, everything after the interpreter's path is one argument
    (``#!/usr/bin/env python3`` → ``("/usr/bin/env", "python3", script)``).
    """
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].rstrip(b"\r").strip()
    if not line:
        return None
    parts = line.decode("utf-8", errors="surrogateescape").split(None, 1)
    return (*parts, str(exec_path))

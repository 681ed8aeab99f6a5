"""Staged scripts with a ``#!`` line run through their interpreter: never ``Text file busy``."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import pytest

from motoko.launch.interpreters import shebang_command
from motoko.launch.launcher import _command


def test_the_command_is_split_as_the_kernel_splits_a_shebang(tmp_path: Path) -> None:
    script = tmp_path / "launch.sh"
    assert shebang_command(script, b"#!/bin/bash\necho hi\n") == ("/bin/bash", str(script))
    assert shebang_command(script, b"#! /usr/bin/env python3 -u\r\n") == ("/usr/bin/env", "python3 -u", str(script))
    assert shebang_command(script, b"#!\n") is None
    assert shebang_command(script, b"echo hi\n") is None


def test_a_script_open_for_writing_elsewhere_still_runs(tmp_path: Path) -> None:
    """What a launcher staging the next run while it forks another looks like to the kernel."""
    script = tmp_path / "launch.sh"
    script.write_text('#!/bin/sh\necho "ran as $0 with $1"\n')
    script.chmod(0o755)
    with open(script, "ab"):  # noqa: SIM117 (held open for writing while executing)
        with pytest.raises(OSError) as refused:
            subprocess.run([str(script), "x"], check=False)
        assert refused.value.errno == errno.ETXTBSY, "executing the file itself is refused"
        ran = subprocess.run([*_command(script), "x"], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"ran as {script} with x\n"

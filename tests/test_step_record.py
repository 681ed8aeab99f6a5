"""The record of completed steps: an appended log, read back whole, torn lines skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from motoko.flow.step_record import FILE, OLD_FILE, record_done, steps_done


def test_steps_are_recorded_per_run_name_and_repeats_are_harmless(tmp_path: Path):
    record_done(tmp_path, "a", "prepare")
    record_done(tmp_path, "a", "calc")
    record_done(tmp_path, "a", "calc")
    record_done(tmp_path, "b", "prepare")
    assert steps_done(tmp_path, "a") == {"prepare", "calc"}
    assert steps_done(tmp_path, "b") == {"prepare"}
    assert steps_done(tmp_path, "c") == set() and steps_done(tmp_path, None) == set()
    log = tmp_path / ".motoko" / FILE
    assert log.stat().st_mode & 0o777 == 0o600 and (tmp_path / ".motoko").stat().st_mode & 0o777 == 0o700


def test_recording_a_step_makes_no_new_file(tmp_path: Path):
    record_done(tmp_path, "a", "s0")
    log = tmp_path / ".motoko" / FILE
    inode = log.stat().st_ino
    for i in range(1, 50):
        record_done(tmp_path, "a", f"s{i}")
    assert log.stat().st_ino == inode and os.listdir(tmp_path / ".motoko") == [FILE]
    assert len(steps_done(tmp_path, "a")) == 50


def test_a_line_torn_by_a_crash_is_skipped_and_hides_nothing_after_it(tmp_path: Path):
    record_done(tmp_path, "a", "first")
    log = tmp_path / ".motoko" / FILE
    with open(log, "ab") as out:
        out.write(b'{"run_name": "a", "st')  # the process died mid-write
    record_done(tmp_path, "a", "next")
    with open(log, "ab") as out:
        out.write(b'\n[1, 2]\n{"run_name": "a", "step": 3}\n')  # not records
    assert steps_done(tmp_path, "a") == {"first", "next"}


def test_records_of_earlier_versions_are_still_read(tmp_path: Path):
    (tmp_path / ".motoko").mkdir()
    (tmp_path / ".motoko" / OLD_FILE).write_text(json.dumps({"a": ["old"], "b": "not a list"}))
    record_done(tmp_path, "a", "new")
    assert steps_done(tmp_path, "a") == {"old", "new"}
    assert steps_done(tmp_path, "b") == set()


def test_workflows_recording_at_once_lose_nothing(tmp_path: Path):
    code = (
        "import sys\nfrom motoko.flow.step_record import record_done\n"
        "for i in range(300):\n    record_done(sys.argv[1], sys.argv[2], f'step{i}')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("x", "y", "z")]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    for name in ("x", "y", "z"):
        assert steps_done(tmp_path, name) == {f"step{i}" for i in range(300)}

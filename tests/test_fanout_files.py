"""A fan-out's run directories cost few new files: links for what runs share, no renames when new.

What a local launcher writes per run: the directory, ``run.json``, and the
exec file unless it is the study's own bytes (then a hard link to one
shared read-only copy beside the run directories); the attempt fence is a
hard link to a file per attempt there. Each guarantee is checked with real
files, real launchers and real run processes; the fence's role in
recovery with a launcher killed by SIGKILL mid fan-out.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from launch_support import (
    create_runs,
    kill_launcher,
    make_study,
    run_of,
    serve,
    start_launcher,
    wait_until,
)

from motoko.launch import attempts
from motoko.launch.run_dirs import shebang_command
from motoko.launch.run_host import exit_code, record_line
from motoko.launch.staging import TemplateCache, stage
from motoko.study.records import FAILED, FINISHED

M = "__BLACKDYNAMITE__x__"
CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.3, heartbeat: 0.5, cancel_grace: 1}\n"


def _study(root: Path, files: dict[str, str]) -> Path:
    folder = root / "study"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# ----------------------------------------------------------------------------- staging


def test_an_exec_file_no_marker_changed_is_a_link_to_one_read_only_copy(tmp_path):
    study = _study(tmp_path, {"launch.sh": "#!/bin/bash\nexit 0\n", "in.cfg": "same for all\n"})
    tree, cache = tmp_path / "BD-s-runs", TemplateCache()
    paths = [stage(tree / f"run-{i}", study, "launch.sh", ["in.cfg"], {"x": i}, {"id": i}, cache=cache) for i in range(3)]
    inodes = {p.stat().st_ino for p in paths}
    assert len(inodes) == 1 and paths[0].stat().st_nlink == 4  # three runs and the shared copy
    (shared,) = tree.glob(".motoko-exec.*")
    assert shared.stat().st_ino in inodes and shared.read_text() == "#!/bin/bash\nexit 0\n"
    assert stat.S_IMODE(paths[0].stat().st_mode) == 0o555
    # Config files may be edited by their run: each run has its own.
    assert len({(tree / f"run-{i}" / "in.cfg").stat().st_ino for i in range(3)}) == 3
    assert (tree / "run-1" / "run.json").read_text() == '{\n "id": 1\n}'


def test_a_rendered_exec_file_is_the_runs_own(tmp_path):
    study = _study(tmp_path, {"launch.sh": f"#!/bin/bash\necho {M}\n"})
    tree = tmp_path / "BD-s-runs"
    paths = [stage(tree / f"run-{i}", study, "launch.sh", [], {"x": i}, {}) for i in range(2)]
    assert [p.read_text() for p in paths] == ["#!/bin/bash\necho '0'\n", "#!/bin/bash\necho '1'\n"]
    assert all(p.stat().st_nlink == 1 and stat.S_IMODE(p.stat().st_mode) == 0o755 for p in paths)
    assert not list(tree.glob(".motoko-exec.*"))


def test_an_edit_in_place_through_one_link_never_reaches_later_runs(tmp_path):
    study = _study(tmp_path, {"launch.sh": "#!/bin/bash\nexit 0\n"})
    tree, cache = tmp_path / "BD-s-runs", TemplateCache()
    first = stage(tree / "run-1", study, "launch.sh", [], {}, {}, cache=cache)
    os.chmod(first, 0o755)
    with open(first, "a") as handle:  # in place: the shared copy changes with it
        handle.write("echo edited\n")
    later = stage(tree / "run-2", study, "launch.sh", [], {}, {}, cache=cache)
    assert later.read_text() == "#!/bin/bash\nexit 0\n"
    assert later.stat().st_ino != first.stat().st_ino and first.read_text().endswith("echo edited\n")


def test_restaging_an_existing_directory_replaces_the_link_and_keeps_the_shared_copy(tmp_path):
    study = _study(tmp_path, {"launch.sh": "#!/bin/bash\nexit 0\n"})
    tree, cache = tmp_path / "BD-s-runs", TemplateCache()
    a = stage(tree / "run-1", study, "launch.sh", [], {}, {"attempt": 1}, cache=cache)
    b = stage(tree / "run-2", study, "launch.sh", [], {}, {}, cache=cache)
    (tree / "run-1" / "output.dat").write_text("kept")
    again = stage(tree / "run-1", study, "launch.sh", [], {}, {"attempt": 2}, cache=cache)  # a retry
    assert again == a and again.stat().st_ino != b.stat().st_ino
    assert stat.S_IMODE(again.stat().st_mode) == 0o755 and again.read_text() == b.read_text()
    assert (tree / "run-1" / "output.dat").read_text() == "kept"
    assert '"attempt": 2' in (tree / "run-1" / "run.json").read_text()


def test_a_file_listed_twice_in_a_new_directory_is_written_once(tmp_path):
    study = _study(tmp_path, {"launch.sh": "exit 0\n", "in.cfg": f"v = {M}\n"})
    stage(tmp_path / "run", study, "launch.sh", ["in.cfg", "./in.cfg"], {"x": 7}, {})
    assert (tmp_path / "run" / "in.cfg").read_text() == "v = 7\n"


# ----------------------------------------------------------------------------- the fence


def test_the_fence_is_a_link_that_revoking_or_a_retry_replaces_without_touching_its_siblings(tmp_path):
    runs = [tmp_path / f"run-{i}" for i in range(3)]
    for run_dir in runs:
        run_dir.mkdir()
        attempts.write_fence(run_dir, 1)
    source = attempts.fence_source(runs[0], 1)
    assert source.read_text() == "1\n" and source.stat().st_nlink == 4
    assert {(r / attempts.FENCE_FILE).stat().st_ino for r in runs} == {source.stat().st_ino}
    assert attempts.revoke(runs[0], 1)
    attempts.write_fence(runs[1], 2)
    assert [attempts.fence(r) for r in runs] == ["revoked 1", "2", "1"]
    assert source.read_text() == "1\n"


def test_a_fence_source_holding_the_wrong_attempt_is_replaced(tmp_path):
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    attempts.fence_source(run_dir, 3).write_text("4\n")
    attempts.write_fence(run_dir, 3)
    assert attempts.fence(run_dir) == "3"
    assert attempts.fence_source(run_dir, 3).read_text() == "3\n"


def test_where_no_fence_source_can_be_made_the_fence_is_written_whole(tmp_path):
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    attempts.fence_source(run_dir, 1).mkdir()  # something else holds the name
    attempts.write_fence(run_dir, 1)
    assert attempts.fence(run_dir) == "1" and (run_dir / attempts.FENCE_FILE).stat().st_nlink == 1


@pytest.mark.slow
def test_a_fence_source_at_the_file_systems_link_limit_is_replaced_by_a_new_one(tmp_path):
    run_dir = tmp_path / "run-1"
    run_dir.mkdir()
    source = attempts.fence_source(run_dir, 1)
    source.write_text("1\n")
    links = tmp_path / "links"
    links.mkdir()
    made = 0
    try:
        while True:  # ext4 allows 65,000 links to a file; a link costs microseconds
            os.link(source, links / str(made))
            made += 1
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
    full = source.stat().st_ino
    try:
        attempts.write_fence(run_dir, 1)
        assert attempts.fence(run_dir) == "1"
        assert (run_dir / attempts.FENCE_FILE).stat().st_ino == source.stat().st_ino != full
    finally:
        for index in range(made):
            (links / str(index)).unlink()


# ----------------------------------------------------------------------------- launchers


def test_a_launchers_exit_log_holds_a_line_per_status_and_a_torn_line_is_no_status(tmp_path):
    """The lines its run host appends (tests/test_run_host.py writes them through a real host)."""
    tree = tmp_path / "BD-s-runs"
    dirs = [tree / f"run-{rid}" for rid in (1, 2, 3)]
    for d in dirs:
        d.mkdir(parents=True)
    log = attempts.exit_log(dirs[0], "vm:1:abc")
    for rid, code in ((1, 0), (2, 3), (3, 0)):
        with log.open("ab") as f:
            f.write(record_line(rid, 1, code))
    assert log.read_text() == "\n1 1 0 2\n\n2 1 3 6\n\n3 1 0 4\n" and not (dirs[0] / "exit.1").exists()
    assert [attempts.recorded_status(d, rid, 1, "vm:1:abc") for rid, d in enumerate(dirs, start=1)] == [0, 3, 0]
    assert attempts.read_logged_exit(dirs[0], 1, 2, "vm:1:abc") is None, "another attempt recorded nothing"
    assert attempts.read_logged_exit(dirs[0], 1, 1, "vm:9:other") is None, "another launcher's log"
    with log.open("a") as f:
        f.write("\n4 1 13")  # torn (it could be 137 cut short): no status, and the next line still reads
    assert attempts.read_logged_exit(tree / "run-4", 4, 1, "vm:1:abc") is None
    with log.open("a") as f:
        f.write("\n6 1 10 1")  # "6 1 10 17" cut before its sum's last digit
    assert attempts.read_logged_exit(tree / "run-6", 6, 1, "vm:1:abc") is None
    # A killed command: the status says so (128 + signal), as exit.<N> did.
    (tree / "run-5").mkdir()
    with log.open("ab") as f:
        f.write(record_line(5, 1, exit_code(-signal.SIGKILL)))
    assert attempts.read_logged_exit(tree / "run-5", 5, 1, "vm:1:abc") == 137
    # Only the logs of launchers still needed survive a clean.
    attempts.exit_log(dirs[0], "vm:2:gone").write_text("9 1 0\n")
    assert attempts.prune_exit_logs(tree, {"vm:1:abc"}) == 1
    assert sorted(p.name for p in tree.glob(".motoko-exits.*")) == [".motoko-exits.vm:1:abc"]


def test_a_fan_out_links_its_runs_exec_file_and_fence_and_executes_each_run_once(workdir):
    done = workdir / "done"
    config, db = make_study(workdir, "", launch=f'#!/bin/bash\necho "$MOTOKO_RUN_ID" >> {done}\n')
    ids = create_runs(db, x=list(range(40)))
    report = serve(config, once=True, max_parallel=2)
    assert (report.executed, report.finished) == (40, 40)
    assert sorted(int(x) for x in done.read_text().split()) == sorted(ids)
    dirs = [Path(run_of(db, rid).run_path) for rid in ids]
    assert len({(d / "launch.sh").stat().st_ino for d in dirs}) == 1
    assert len({(d / attempts.FENCE_FILE).stat().st_ino for d in dirs}) == 1
    launcher = run_of(db, ids[0]).launcher
    for rid, d in zip(ids, dirs, strict=True):
        # The status is a line of the launcher's exit log: no exit.1 (an inode) per run.
        assert attempts.fence(d) == "1" and attempts.read_logged_exit(d, rid, 1, launcher) == 0
        assert not (d / "exit.1").exists()
        assert (d / "stdout").exists() and (d / "stderr").exists() and (d / "run.json").exists()
    db.close()


def test_a_run_whose_directory_cannot_be_written_by_the_starter_fails_with_the_reason(workdir):
    config, db = make_study(workdir, "", launch="#!/bin/bash\nsleep 0.2\n")
    ids = create_runs(db, x=list(range(6)))
    tree = workdir / "studies" / "s" / "BD-s-runs"
    tree.mkdir(parents=True)
    (tree / f"run-{ids[-1]}").write_text("a file where the run directory goes")
    report = serve(config, once=True, max_parallel=2)  # the last run starts in a starter thread
    assert (report.executed, report.finished, report.failed) == (6, 5, 1)
    failed = run_of(db, ids[-1])
    assert failed.state == FAILED
    where = tree / f"run-{ids[-1]}"
    assert failed.error == (
        f"could not start: {where}: cannot write the run directory '{where}': File exists"
        " (check the directory's permissions and free space)"
    )
    assert all(run_of(db, rid).state == FINISHED for rid in ids[:-1])
    db.close()


@pytest.mark.slow
def test_a_fan_out_whose_launcher_is_killed_runs_every_run_exactly_once(workdir):
    """SIGKILL mid fan-out: runs executing, started, staged or only claimed; the next launcher settles all."""
    done = workdir / "done"
    launch = f'#!/bin/bash\nsleep 0.3\necho "$MOTOKO_RUN_ID" >> {done}\n'
    _, db = make_study(workdir, CONFIG, launch=launch, extra="retries: 2\nretry_on: [LOST]\n")
    ids = create_runs(db, x=list(range(30)))
    first = start_launcher(workdir, "-j", "2")
    try:
        wait_until(lambda: done.exists() and len(done.read_text().split()) >= 4, 60, "a few runs to end")
    finally:
        kill_launcher(first)
    second = start_launcher(workdir, "-j", "2", "--idle-exit", "3", log="second.log")
    try:
        second.wait(120)
    finally:
        kill_launcher(second)
    time.sleep(0.5)  # a run wrongly started twice would have written by now
    assert sorted(int(x) for x in done.read_text().split()) == sorted(ids)  # each run's work once
    runs = [run_of(db, rid) for rid in ids]
    assert all(r.state == FINISHED for r in runs), [(r.id, r.state, r.error) for r in runs if r.state != FINISHED]
    db.close()


# ----------------------------------------------------------------------------- the command


def test_an_exec_file_still_open_for_writing_runs_through_its_interpreter(tmp_path):
    """What a process forked by another thread while a run directory is written holds: a writer."""
    study = _study(tmp_path, {"launch.sh": f'#!/bin/sh -eu\necho "$0 {M}" > out\n'})
    run_dir = tmp_path / "run"
    exec_path = stage(run_dir, study, "launch.sh", [], {"x": 5}, {})
    command = shebang_command(exec_path.read_bytes()[:256], exec_path)
    assert command == ("/bin/sh", "-eu", str(exec_path))
    writer = os.open(exec_path, os.O_WRONLY)
    try:
        with pytest.raises(OSError, match="Text file busy"):  # executing the file itself
            subprocess.run([str(exec_path)], cwd=run_dir, check=False, timeout=30)
        assert subprocess.run(command, cwd=run_dir, timeout=30).returncode == 0
    finally:
        os.close(writer)
    assert (run_dir / "out").read_text() == f"{exec_path} 5\n"


@pytest.mark.parametrize(
    ("head", "command"),
    [
        (b"#! /usr/bin/env  python3 \nprint()\n", ("/usr/bin/env", "python3", "/r/x")),
        (b"#!/bin/bash\n", ("/bin/bash", "/r/x")),
        (b"#!python3\n", None),  # not a path: the kernel decides
        (b"#!/bin/bash", None),  # no end of line within the head
        (b"echo hi\n", None),
    ],
)
def test_a_shebang_gives_the_kernels_command(head, command):
    assert shebang_command(head, Path("/r/x")) == command


def test_a_launcher_runs_a_rendered_script_through_its_shebang(workdir):
    config, db = make_study(workdir, "", launch=f'#!/usr/bin/env bash\necho "$0" {M} > zero\n')
    ids = create_runs(db, x=[1, 2, 3])
    report = serve(config, once=True, max_parallel=2)
    assert report.finished == 3
    for rid, x in zip(ids, [1, 2, 3], strict=True):
        run_dir = Path(run_of(db, rid).run_path)
        assert (run_dir / "zero").read_text() == f"{run_dir / 'launch.sh'} {x}\n"
    db.close()

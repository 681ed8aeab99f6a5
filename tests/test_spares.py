"""Spare run directories: a new run's directory is made ahead and renamed, never over anything.

Unit tests on real directories, and real launchers: one that stops removes
its spares; one killed -9 leaves them, and the next launcher on the folder
(or ``motoko clean``) removes them while the runs execute once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
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

from motoko.launch.run_dirs import RUN_JSON
from motoko.launch.run_host import RunHost
from motoko.launch.spares import FILES, PREFIX, Spares, prune_spares, sweep
from motoko.launch.staging import plan_stage
from motoko.study.records import FINISHED, RUNNING

HOST = socket.gethostname()


@pytest.fixture
def spares():
    owner = f"{HOST}:{os.getpid()}:abcdef"
    made = Spares(owner, HOST)
    yield made
    made.close()


def _study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir(exist_ok=True)
    (folder / "launch.sh").write_text("#!/bin/bash\necho __BLACKDYNAMITE__x__\n")
    return folder


def _staged(tmp_path: Path, run_dir: Path):
    return plan_stage(run_dir, _study(tmp_path), "launch.sh", [], {"x": 7}, {"run": {"id": 1}, "job": {"x": 7}})


def test_a_new_run_directory_is_a_spare_renamed_its_run_json_written_in_place(tmp_path, spares):
    runs = tmp_path / "runs"
    runs.mkdir()
    spares.fill(runs)
    ready = spares.ready(runs)
    assert len(ready) == 2 and all(p.name.startswith(PREFIX + spares.owner + ".") for p in ready)
    inodes = {p.stat().st_ino: {n: (p / n).stat().st_ino for n in FILES} for p in ready}
    run_dir = runs / "run-1"
    _staged(tmp_path, run_dir).write(spares)
    assert run_dir.stat().st_ino in inodes  # no new directory: a spare, renamed
    files = inodes[run_dir.stat().st_ino]
    assert (run_dir / RUN_JSON).stat().st_ino == files[RUN_JSON]  # written into its placeholder
    assert '"x": 7' in (run_dir / RUN_JSON).read_text()
    assert (run_dir / RUN_JSON).stat().st_mode & 0o777 == 0o644
    assert (run_dir / "launch.sh").read_text() == "#!/bin/bash\necho '7'\n"
    assert (run_dir / "stdout").read_bytes() == b"" and (run_dir / "stderr").read_bytes() == b""
    assert run_dir.stat().st_mode & 0o777 == 0o700
    assert len(spares.ready(runs)) == 1  # made again only at replenish, after the run started
    spares.replenish()
    spares.close()  # waits for the maker, then removes what is left
    assert not [n for n in os.listdir(runs) if n.startswith(PREFIX)]


def test_the_run_host_truncates_a_spares_stdout_and_the_run_writes_there(tmp_path, spares):
    runs = tmp_path / "runs"
    runs.mkdir()
    spares.fill(runs)
    run_dir = runs / "run-1"
    _staged(tmp_path, run_dir).write(spares)

    async def start() -> None:
        ended: list[dict[str, object]] = []
        host = RunHost(ended.append, lambda: None)
        host.listen(asyncio.get_running_loop())
        try:
            host.start(1, ("bash", str(run_dir / "launch.sh")), str(run_dir), dict(os.environ), file="exit.1")
            while not any("ended" in reply for reply in ended):
                await asyncio.sleep(0.01)
        finally:
            host.close()
            host.process.wait(10)

    asyncio.run(start())
    assert (run_dir / "stdout").read_text() == "7\n" and (run_dir / "exit.1").read_text() == "0\n"


def _directories_cost(spares: Spares, monkeypatch, seconds: float) -> None:
    """Make a new directory cost ``seconds`` here, and the real mkdirs' timings count no more.

    The real ones vary with the disk: on one busy deleting files (a benchmark
    just ran) a directory can cost 470 µs, which would move the average across
    :data:`WORTH` in the middle of the test.
    """
    monkeypatch.setattr(spares, "timed", Spares.timed.__get__(spares))
    for _ in range(20):
        spares.timed(seconds)
    monkeypatch.setattr(spares, "timed", lambda seconds: None)


def test_spares_are_made_only_while_a_new_directory_costs_enough(tmp_path, spares, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = runs / f"{PREFIX}{HOST}:{dead.pid}:eeeeee.0"
    left.mkdir()  # a launcher killed -9 left it
    _directories_cost(spares, monkeypatch, 20e-6)  # a tmpfs: the spare thread would cost a hop more than it saves
    assert not spares.worth
    _staged(tmp_path, runs / "run-1").write(spares)
    spares.replenish()
    spares.flush()
    assert spares.ready(runs) == []
    assert not left.exists()  # the folder's first visit sweeps all the same
    _directories_cost(spares, monkeypatch, 900e-6)  # a disk busy deleting files
    assert spares.worth
    _staged(tmp_path, runs / "run-2").write(spares)
    spares.replenish()
    spares.flush()
    assert len(spares.ready(runs)) == 2
    _staged(tmp_path, runs / "run-3").write(spares)  # a spare ready is taken, whatever the cost now
    assert (runs / "run-3").stat().st_ino not in {p.stat().st_ino for p in spares.ready(runs)}
    assert len(spares.ready(runs)) == 1


def test_an_existing_run_directory_is_restaged_in_place_never_replaced_by_a_spare(tmp_path, spares):
    runs = tmp_path / "runs"
    run_dir = runs / "run-1"
    run_dir.mkdir(parents=True)  # an earlier attempt's, empty: a rename would replace it silently
    before = run_dir.stat().st_ino
    spares.fill(runs)
    _staged(tmp_path, run_dir).write(spares)
    assert run_dir.stat().st_ino == before
    assert len(spares.ready(runs)) == 2  # the spare went back
    (run_dir / "result").write_text("kept")
    _staged(tmp_path, run_dir).write(spares)
    assert (run_dir / "result").read_text() == "kept"


def test_without_a_spare_or_a_folder_runs_are_staged_as_before(tmp_path, spares):
    run_dir = tmp_path / "missing" / "runs" / "run-1"
    spares.fill(run_dir.parent)  # no folder yet: nothing made, no error
    assert spares.ready(run_dir.parent) == []
    _staged(tmp_path, run_dir).write(spares)
    assert (run_dir / RUN_JSON).is_file() and not (run_dir / "stdout").exists()
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    spares.fill(blocked)  # not a directory: no spares, silently
    assert spares.ready(blocked) == []


def test_a_spare_removed_under_the_launcher_falls_back_to_a_new_directory(tmp_path, spares):
    runs = tmp_path / "runs"
    runs.mkdir()
    spares.fill(runs)
    for spare in spares.ready(runs):
        subprocess.run(["rm", "-rf", str(spare)], check=True)  # a clean, say
    run_dir = runs / "run-1"
    _staged(tmp_path, run_dir).write(spares)
    assert (run_dir / RUN_JSON).is_file()


def test_sweep_removes_only_the_spares_of_gone_launchers_of_this_host(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        names = {
            "dead": f"{PREFIX}{HOST}:{gone.pid}:aaaaaa.0",
            "alive": f"{PREFIX}{HOST}:{sleeper.pid}:bbbbbb.3",
            "other host": f"{PREFIX}elsewhere:{gone.pid}:cccccc.1",
            "kept owner": f"{PREFIX}{HOST}:{gone.pid}:dddddd.2",
            "not a spare": ".motoko-exits.x",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
        assert sweep(tmp_path, HOST, keep=f"{HOST}:{gone.pid}:dddddd") == 1
        assert sorted(os.listdir(tmp_path)) == sorted(v for k, v in names.items() if k != "dead")
        assert prune_spares(tmp_path, keep={f"{HOST}:{sleeper.pid}:bbbbbb"}) == 2
        assert sorted(os.listdir(tmp_path)) == sorted([names["alive"], names["not a spare"]])
    finally:
        sleeper.kill()
        sleeper.wait()


CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.3, heartbeat: 0.5}\n"


def _spares_in(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(PREFIX))


@pytest.mark.slow
def test_a_launcher_leaves_no_spare_and_a_killed_ones_spares_go_with_the_next_launcher(workdir):
    config, db = make_study(workdir, CONFIG, launch="#!/bin/bash\n[ $MOTOKO_PARAM_x = 9 ] && sleep 4\necho run $MOTOKO_PARAM_x\n")
    ids = create_runs(db, x=[1, 2, 3, 4])
    report = serve(config, once=True, max_parallel=2)
    assert report.finished == 4
    folder = Path(run_of(db, ids[0]).run_path).parent
    assert _spares_in(folder) == []  # removed as it stopped
    assert all((Path(run_of(db, r).run_path) / "stdout").read_text() == f"run {x}\n" for r, x in zip(ids, [1, 2, 3, 4], strict=True))

    (slow,) = create_runs(db, x=9)
    first = start_launcher(workdir)
    try:
        wait_until(lambda: run_of(db, slow).state == RUNNING, 30, "the slow run to start")
        owner = str(run_of(db, slow).launcher)
        # It makes spares only where directories are slow to create (not on
        # every machine): one is planted in its name, as it would have made it.
        (folder / f"{PREFIX}{owner}.99").mkdir()
    finally:
        kill_launcher(first)
        first.wait(30)
    left = _spares_in(folder)
    assert f"{PREFIX}{owner}.99" in left and all(owner in name for name in left)  # killed -9: nothing removed them
    more = create_runs(db, x=[5, 6])
    serve(config, max_parallel=1, idle_exit=3)  # adopts the slow run, executes the new ones
    assert all(run_of(db, r).state == FINISHED for r in [slow, *more])
    assert run_of(db, slow).attempt == 1  # adopted, not run again
    assert not set(left) & set(_spares_in(folder))  # its pid is gone: swept by the next launcher
    assert _spares_in(folder) == []

"""Claim-ahead paced by run durations, for launchers among others (motoko.launch.pacing).

Real launcher processes on a real ZEO server: a launcher among others claims
ahead when its runs are short and not when they are long, every run is
executed exactly once (each run appends its id to a file), and the runs a
launcher killed -9 held claimed but unstarted are executed once by another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import launch_support
from conftest import write_study
from launch_support import create_runs, make_study, wait_until

from motoko.config import load_config
from motoko.launch.claims import ALONE_AHEAD
from motoko.launch.pacing import MAX_AHEAD, MIN_SAMPLES, ROUNDS_AHEAD, Pacing, fair_ahead
from motoko.launch.service import build_launcher
from motoko.study.database import StudyDB
from motoko.study.records import FINISHED, LAUNCHED, RUNNING

COUNTING = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_FILE"\n'
SLOW = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_FILE"\nsleep 0.5\n'


def test_pacing_claims_ahead_what_the_slots_execute_in_a_moment_and_nothing_while_unknown():
    pacing = Pacing(slots=2, budget=0.2)
    assert pacing.ahead(["s"]) == 0, "unknown durations: no claim ahead"
    for rid in range(MIN_SAMPLES):
        pacing.started(("s", rid))
        pacing.ended(("s", rid), succeeded=True, at=time.monotonic() + 0.04)
    assert abs((pacing.typical("s") or 0) - 0.04) < 0.01
    assert pacing.ahead(["s"]) == int(0.2 * 2 / (pacing.typical("s") or 1))  # ~10: 0.2 s of work on 2 slots
    assert pacing.ahead([]) == 0, "nothing waiting"
    assert pacing.ahead(["s", "other"]) == 0, "a study of unknown duration waits too"
    for rid in range(10, 10 + MIN_SAMPLES):
        pacing.started(("long", rid))
        pacing.ended(("long", rid), succeeded=True, at=time.monotonic() + 2.0)
    assert pacing.ahead(["long"]) == 0 and pacing.ahead(["s", "long"]) == 0, "long runs: none ahead"
    pacing.started(("fail", 1))
    pacing.ended(("fail", 1), succeeded=False)
    pacing.ended(("adopted", 7), succeeded=True)  # never started here
    assert pacing.typical("fail") is None and pacing.typical("adopted") is None
    quick = Pacing(slots=8)
    for rid in range(MIN_SAMPLES):
        quick.started(("s", rid))
        quick.ended(("s", rid), succeeded=True, at=time.monotonic() + 0.001)
    assert quick.ahead(["s"]) == quick.most == ROUNDS_AHEAD * 8, "8 slots: four rounds of them"
    assert Pacing(slots=2).most == MAX_AHEAD
    assert fair_ahead(16, 300, 3) == 16 and fair_ahead(16, 5, 3) == 1 and fair_ahead(16, 2, 3) == 0


def _start(root: Path, count: int, *args: str) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--executor", "local", *args],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COUNT_FILE": str(root / "executions")},
        )
        for _ in range(count)
    ]


def _live(db: StudyDB) -> int:
    db.abort()
    return len([r for r in db.launchers().values() if r.stopped is None])


def _owned(db: StudyDB) -> tuple[int, Counter[str]]:
    """CREATED runs left, and the runs each launcher owns (claimed or running), in one snapshot."""
    db.abort()
    study = db.study("s")
    owned: Counter[str] = Counter()
    for state in (LAUNCHED, RUNNING):
        for run in study.ids_in_state(state).values():
            owned[str(run.launcher)] += 1
    return study.count("CREATED"), owned


def _watch(db: StudyDB, ids: list[int], timeout: float) -> list[tuple[int, Counter[str]]]:
    """Snapshots of who owns what until every run is FINISHED."""
    snapshots = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshots.append(_owned(db))
        if db.study("s").count(FINISHED) == len(ids):
            return snapshots
        time.sleep(0.02)
    raise AssertionError(f"runs not all FINISHED after {timeout} s: {db.study('s').counts()}")


def _many(workdir: Path, launch: str, runs: int, launchers: int) -> tuple[StudyDB, list[int], list[tuple[int, Counter[str]]]]:
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n", launch=launch)
    procs = _start(workdir, launchers, "-j", "1", "--idle-exit", "4")
    try:
        # Runs come once every launcher serves: none is alone (which claims deep).
        wait_until(lambda: _live(db) == launchers, 60, f"{launchers} live launchers")
        ids = create_runs(db, x=list(range(runs)))
        snapshots = _watch(db, ids, 180)
        outputs = [p.communicate(timeout=60)[1] for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in procs), outputs
    executions = (workdir / "executions").read_text().split()
    assert sorted(executions, key=int) == [str(i) for i in ids], "every run executed exactly once"
    db.abort()
    assert db.study("s").counts() == {FINISHED: runs} and db.study("s").check_indexes() == []
    return db, ids, snapshots


def test_a_launcher_among_others_claims_ahead_when_its_runs_are_short(workdir: Path):
    db, ids, snapshots = _many(workdir, COUNTING, 300, 3)
    deepest = max(max(owned.values(), default=0) for _, owned in snapshots)
    # One slot each: without claim-ahead a launcher owns its running run and
    # at most one claimed next; short runs learned, it claims several ahead.
    assert deepest >= 3, deepest
    records = [r for r in db.launchers().values() if "s" in r.studies]
    assert len(records) == 3 and sum(r.executed for r in records) == len(ids)


def test_a_launcher_among_others_claims_no_run_ahead_when_its_runs_are_long(workdir: Path):
    db, ids, snapshots = _many(workdir, SLOW, 15, 3)
    # 0.5 s runs are long next to the queue's 0.2 s: a launcher owns only the
    # run in its slot, claimed in the commit that settles the one before; none
    # waits in its queue while another launcher idles.
    assert all(count <= 1 for _, owned in snapshots for count in owned.values()), snapshots
    records = [r for r in db.launchers().values() if "s" in r.studies]
    assert all(r.executed >= 1 for r in records), [r.executed for r in records]


def test_at_a_study_end_a_launcher_claims_ahead_only_its_fair_part_of_what_is_left(workdir: Path):
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n")
    write_study(workdir, "other", "{x: int}", "pass\n")
    (workdir / "motoko.yaml").write_text("task_managers:\n  s:\n  other:\nlauncher: {heartbeat: 1, poll: 1}\n")
    others = _start(workdir, 2, "--study", "other", "-j", "1", "--idle-exit", "60")
    launcher: Any = None
    try:
        wait_until(lambda: _live(db) == 2, 60, "2 live launchers")
        launcher = build_launcher(load_config(workdir), executor="local", study="s", max_parallel=1)
        for rid in range(MIN_SAMPLES):  # it learned that runs of s take 5 ms
            launcher._pacing.started(("s", -rid))
            launcher._pacing.ended(("s", -rid), succeeded=True, at=time.monotonic() + 0.005)
        # Not registered: it counts itself among the live launchers all the same.
        create_runs(db, x=list(range(5)))
        launcher.db.abort()
        assert launcher._default_ahead() == 5 // 3, "5 runs left among 3 launchers: 1 ahead"
        create_runs(db, x=list(range(5, 300)))
        launcher.db.abort()
        assert launcher._default_ahead() == MAX_AHEAD, "300 left: as deep as alone"
    finally:
        for proc in others:
            proc.terminate()
            proc.wait(timeout=30)
        if launcher is not None:
            launcher.db.close()


def test_runs_a_killed_launcher_held_claimed_and_unstarted_are_executed_once_by_another(workdir: Path):
    config, db = make_study(workdir, "launcher: {heartbeat: 0.5, poll: 0.5, claim_ahead: 6}\nlost_after: 2\n", launch=SLOW)
    ids = create_runs(db, x=list(range(10)))
    first = _start(workdir, 1, "-j", "1")[0]
    second: list[subprocess.Popen[str]] = []
    try:
        def holding() -> bool:
            db.abort()
            return len(db.study("s").ids_in_state(LAUNCHED)) >= 5 and len(db.study("s").ids_in_state(RUNNING)) == 1

        wait_until(holding, 60, "the first launcher holding claimed runs")
        db.abort()
        held = sorted(db.study("s").ids_in_state(LAUNCHED).keys())
        launch_support.kill_launcher(first)
        second = _start(workdir, 1, "-j", "2", "--idle-exit", "4")
        _watch(db, ids, 120)
        second[0].communicate(timeout=60)
    finally:
        for proc in [first, *second]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    executions = (workdir / "executions").read_text().split()
    assert sorted(executions, key=int) == [str(i) for i in ids], "every run executed exactly once"
    db.abort()
    runs = {rid: launch_support.run_of(db, rid) for rid in ids}
    assert all(run.state == FINISHED for run in runs.values())
    # The claimed, never started runs were found never to have run and queued again.
    assert all(runs[rid].attempt == 2 for rid in held), {rid: runs[rid].attempt for rid in held}


def test_a_pilot_claims_ahead_once_its_runs_are_known_to_be_short(workdir: Path):
    # A pilot (a launcher with a deadline) alone on its database does not claim
    # the lone launcher's 16 ahead blindly: its claims must fit its time left.
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n")
    create_runs(db, x=list(range(100)))
    launcher: Any = build_launcher(config, executor="local", max_parallel=2, walltime_end=time.time() + 600)
    try:
        assert launcher._deadline is not None and launcher._default_ahead() == 0, "durations unknown"
        for rid in range(MIN_SAMPLES):
            launcher._pacing.started(("s", -rid))
            launcher._pacing.ended(("s", -rid), succeeded=True, at=time.monotonic() + 0.01)
        assert launcher._default_ahead() == MAX_AHEAD
        assert launcher._claim_room() == 2 + MAX_AHEAD, "its free slots and the queue ahead"
    finally:
        launcher.db.close()


def test_a_launcher_with_nothing_to_claim_sleeps_through_others_commits_and_wakes_for_new_runs(workdir: Path):
    """A dry launcher wakes for runs arriving (inserted, queued again), not for every commit.

    Among many launchers most commits are others' claims and settlements:
    each woke every launcher with a free slot for a cycle that found nothing.
    Its poll is 60 s here, so only a wake-up explains a prompt execution.
    """
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 60}\nlost_after: 30\n", launch=COUNTING)
    (proc,) = _start(workdir, 1, "-j", "1")
    try:
        wait_until(lambda: _live(db) == 1, 60, "a live launcher")
        (first,) = create_runs(db, x=[0])
        wait_until(lambda: (db.abort(), db.study("s").count(FINISHED) == 1)[1], 20, "the first run, inserted, executed")
        run = db.study("s").runs[first]
        for i in range(100):  # commits that bring no run: the launcher sleeps through them
            run.note = i
            db.tm.commit()
        (second,) = create_runs(db, x=[1])
        wait_until(lambda: (db.abort(), db.study("s").count(FINISHED) == 2)[1], 20, "the second run, inserted, executed")
        db.study("s").requeue(db.study("s").runs[second], "again")
        db.tm.commit()
        wait_until(lambda: (db.abort(), db.study("s").runs[second].attempt == 2 and db.study("s").runs[second].state == FINISHED)[1],
                   20, "the requeued run executed again")
    finally:
        proc.terminate()
        errors = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, errors
    db.abort()
    (record,) = [r for r in db.launchers().values() if "s" in r.studies]
    assert record.executed == 3
    assert (workdir / "executions").read_text().split() == [str(first), str(second), str(second)]
    # About a handful of cycles per run; woken by each of the 100 commits it ran over 100.
    assert 0 < record.cycles < 40, record.cycles


def test_a_launcher_alone_refills_its_queue_at_half_its_depth(workdir: Path):
    """Not when a slot's worth is left: the runs that start while the claim's commit travels
    would empty the slots until it came back. Until the low water, outcomes are held back."""
    config, db = make_study(workdir, "launcher: {heartbeat: 1, poll: 1}\n")
    launcher = build_launcher(config, executor="local", study="s", max_parallel=2)
    try:
        create_runs(db, x=list(range(100)))
        launcher.db.abort()
        # In its first cycle nobody else has registered yet, whoever starts with it: it claims paced.
        launcher.report.cycles = 1
        assert launcher._default_ahead() < ALONE_AHEAD and not launcher._alone
        launcher.report.cycles = 2
        fake = launcher._queue = [object()] * (2 + (ALONE_AHEAD - 2) // 2 + 1)  # type: ignore[list-item]
        assert launcher._claim_room() == 0 and launcher._low_water == 2 + (ALONE_AHEAD - 2) // 2
        fake.pop()
        assert launcher._claim_room() == 2 + ALONE_AHEAD - len(fake)
    finally:
        launcher._queue = []
        launcher.db.close()

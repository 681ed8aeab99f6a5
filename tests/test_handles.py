"""Run handles: RunList, TaskSelection and Run against a real server and launcher.

Waiting (sync and async), completion order, progress, cancelling, saving and
reattaching, finding runs, run information, files and logs. Every test gets
its own workflow directory with a real ZEO server; runs are real
subprocesses executed by a real launcher (a thread of the test process).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import write_config, write_study

from motoko import RunList, Workflow, together
from motoko.config import load_config
from motoko.errors import RunNotFound, RunsFailed, UnknownNameError, WaitTimeout
from motoko.flow.dag import build_graph, run_steps, step, steps_of
from motoko.flow.futures import EventLoopError, HandleError, Progress
from motoko.launch.service import EmbeddedLauncher
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, CREATED, FAILED, FINISHED, TERMINAL
from motoko.study.run_files import RunFile, RunFileNotFound

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 5
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

# calc: y = 2x after `sleep` seconds, printing one line per third of the sleep.
# mode "raise" fails, "stubborn" ignores TERM and reports the stop request.
CALC_DOIT = """\
import signal
import sys
import time

from motoko import current_run

run, job = current_run()
if job.mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring TERM", flush=True)
    while not run.should_stop():
        time.sleep(0.05)
    print("stop seen", flush=True)
    while True:
        time.sleep(0.05)
print(f"start x={job.x}", flush=True)
for step in range(3):
    time.sleep(job.sleep / 3)
    run.set_progress((step + 1) / 3)
    print(f"step {step}", flush=True)
if job.mode == "raise":
    raise ValueError(f"x was {job.x}")
run.y = 2 * job.x
"""

CALC_EXTRA = """\
job_space: {sleep: 0.0, mode: ok}
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float, sleep: float, mode: str}", CALC_DOIT, extra=CALC_EXTRA)
    write_config(workdir, ["calc"], FAST)
    return workdir


def cancel_elsewhere(workflow: Workflow, rid: int) -> None:
    """Cancel a run from another connection (another 'process')."""
    with StudyDB(workflow.address_of("calc")) as db:
        db.transact(lambda: db.study("calc").cancel(db.run("calc", rid)))


# -- waiting -------------------------------------------------------------------------------


def test_result_waits_synchronously_and_the_state_queries_agree(wf, launcher):
    rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)
    assert rl.result(timeout=60) is rl
    assert [(run.state, run.y, run.exit_code) for run, _ in rl] == [(FINISHED, 2.0, 0), (FINISHED, 4.0, 0)]
    assert rl.status() == {FINISHED: 2}
    assert rl.done() and rl.failed() == [] and rl.cancelled() == []
    progress = rl.progress()
    assert isinstance(progress, Progress)
    assert (progress.total, progress.finished, progress.ended, progress.fraction, progress.overall) == (2, 2, 2, 1.0, 1.0)
    assert progress.runs == {1: 1.0, 2: 1.0}  # the runs' own set_progress values
    assert str(progress) == "2/2 finished (100%)"
    assert rl.partial().ids == [1, 2]
    single = wf.calc.createTask(x=3.0)
    assert single.result(timeout=60).run.y == 6.0
    with pytest.raises(HandleError) as several:
        _ = rl.run
    assert str(several.value) == (
        "rl.run needs exactly one run; this RunList of 'calc' has 2 (1, 2) "
        "(iterate with `for run, job in rl`, or index with rl[0])"
    )
    assert isinstance(several.value, ValueError)


def test_result_times_out_naming_the_unfinished_runs(wf):
    rl = wf.calc.createTask(x=[1.0, 2.0])  # no launcher: they stay CREATED
    with pytest.raises(WaitTimeout) as info:
        rl.result(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert str(info.value) == (
        "2 run(s) not done after 0.2 s: calc.1 (CREATED), calc.2 (CREATED) "
        "(2 runs waiting, no launcher alive: `motoko launcher start`)"
    )
    assert not rl.done() and rl.partial().ids == [] and len(rl.partial()) == 0
    assert rl.status() == {CREATED: 2}
    progress = rl.progress()
    assert str(progress) == "0/2 finished (0%)" and progress.runs == {1: None, 2: None} and progress.overall == 0.0
    with pytest.raises(WaitTimeout) as selection:
        wf.calc.select("state = FINISHED").result(timeout=0.2)
    assert str(selection.value).startswith("no run of 'calc' matched state = FINISHED and run_name = 'r1' within 0.2 s")
    with pytest.raises(WaitTimeout):
        wf.calc.select().all("state = FINISHED").result(timeout=0.2)


def test_blocking_calls_inside_a_workflow_step_are_refused(wf):
    rl = wf.calc.createTask(x=1.0)
    run = rl.run

    @step
    async def flow(workflow):
        with pytest.raises(EventLoopError) as result:
            rl.result()
        with pytest.raises(EventLoopError) as loop_for:
            for _ in rl.as_completed():
                pass
        with pytest.raises(EventLoopError) as cancel:
            rl.cancel(wait_timeout=1)
        with pytest.raises(EventLoopError):
            wf.calc.select().result()
        with pytest.raises(EventLoopError) as run_cancel:
            run.cancel(wait_timeout=1)
        with pytest.raises(EventLoopError) as run_tail:
            run.tail(follow=True)
        return result.value, loop_for.value, cancel.value, run_cancel.value, run_tail.value

    results = asyncio.run(run_steps(build_graph(steps_of({"flow": flow})), wf, {}))
    result, loop_for, cancel, run_cancel, run_tail = results["flow"]
    assert str(run_cancel) == (
        "run.cancel(wait_timeout=...) cannot block inside a running event loop "
        "(use `await run.cancel_async(wait_timeout=...)` in async code)"
    )
    assert str(run_tail) == (
        "run.tail(follow=True) cannot block inside a running event loop "
        "(use `async for line in run.tail_async()` in async code)"
    )
    assert str(result) == "rl.result() cannot block inside a running event loop (use `await rl.wait()` in async code)"
    assert isinstance(result, RuntimeError) and result.call == "rl.result()"
    assert str(loop_for) == (
        "for ... in rl.as_completed() cannot block inside a running event loop "
        "(use `async for run, job in rl.as_completed()` in async code)"
    )
    assert "use `await rl.cancel_async(wait_timeout=...)`" in str(cancel)
    assert rl.status() == {CREATED: 1}  # the refused cancel cancelled nothing


def test_blocking_calls_on_a_launchers_loop_are_refused(wf, launcher):
    # Executors' code runs on the launcher's loop; a sync wait there would stop every run's bookkeeping.
    rl = wf.calc.createTask(x=1.0)
    rl.result(timeout=60)

    async def on_the_launchers_loop():
        with pytest.raises(EventLoopError) as refused:
            rl.result()
        return str(refused.value)

    message = asyncio.run_coroutine_threadsafe(on_the_launchers_loop(), launcher._loop).result(30)
    assert message == "rl.result() cannot block inside a running event loop (use `await rl.wait()` in async code)"


def test_blocking_calls_work_in_a_users_own_event_loop(wf, launcher):
    # Not motoko's loop (a notebook kernel, a user's asyncio program): the
    # sync calls block the caller, the wait running in a helper thread.
    rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)

    async def program():
        done = rl.result(timeout=60)
        order = [job.x for _, job in rl.as_completed(timeout=60)]
        lines = list(done[0][0].tail(follow=True))
        pairs = wf.calc.select("state = FINISHED").result(timeout=60)
        slow = wf.calc.createTask(x=3.0, sleep=30.0)
        wf.calc.select("x = 3").all("state = RUNNING").result(timeout=60)
        cancelled = slow.cancel(wait_timeout=30)
        return done, sorted(order), lines, len(pairs), cancelled

    done, order, lines, matched, cancelled = asyncio.run(program())
    assert done is rl and order == [1.0, 2.0] and matched == 2
    assert lines == ["start x=1.0", "step 0", "step 1", "step 2"]
    assert cancelled == {3: True}


def test_a_blocking_call_interrupted_in_a_users_loop_leaves_the_workflow_usable(wf):
    rl = wf.calc.createTask(x=1.0)  # no launcher: never ends
    main = threading.get_ident()
    threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT)).start()

    async def program():
        rl.result()

    # A kernel's loop keeps Python's SIGINT handler (asyncio.run's own would
    # only cancel the blocked task): the interrupt raises in the waiting thread.
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(program())
    finally:
        loop.close()
    assert rl.status() == {CREATED: 1}  # the connection is usable again
    assert [t.name for t in threading.enumerate() if t.name == "motoko-wait"] == []


def test_async_twins_of_run_waits_leave_the_step_loop_running(wf, launcher):
    rl = wf.calc.createTask(x=1.0, sleep=1.5)
    slow = wf.calc.createTask(x=2.0, sleep=30.0)
    ticks = []

    @step
    async def flow(workflow):
        async def tick():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.05)

        ticker = asyncio.ensure_future(tick())
        lines = [line async for line in rl.run.tail_async()]
        tailed = len(ticks)
        await workflow.calc.select("x = 2").all("state = RUNNING").wait(timeout=60)
        cancelled = await slow.run.cancel_async(wait_timeout=30)
        ticker.cancel()
        return lines, tailed, cancelled

    lines, tailed, cancelled = asyncio.run(run_steps(build_graph(steps_of({"flow": flow})), wf, {}))["flow"]
    assert lines == ["start x=1.0", "step 0", "step 1", "step 2"]
    assert tailed > 1  # the loop kept running other coroutines while following
    assert cancelled is True and slow.run.state == CANCELLED


def test_wait_with_progress_shows_a_bar(wf, launcher, capsys):
    rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)
    asyncio.run(rl.wait(timeout=60, progress=True))
    err = capsys.readouterr().err
    assert "calc: 100%|" in err and "2/2 finished (100%)" in err


# -- completion order ------------------------------------------------------------------------


def test_as_completed_yields_runs_in_finishing_order_with_failures(wf, launcher):
    rl = wf.calc.createTask(None, together(x=[1.0, 2.0, 3.0], sleep=[4.0, 0.2, 2.6]))
    failing = wf.calc.createTask(x=4.0, sleep=1.4, mode="raise")
    both = RunList(wf, "calc", rl.ids + failing.ids)
    seen = [(job.x, run.state) for run, job in both.as_completed(timeout=60)]
    assert seen == [(2.0, FINISHED), (4.0, FAILED), (3.0, FINISHED), (1.0, FINISHED)]
    (bad, _), = both.failed()
    assert bad.id == failing.run.id and "ValueError: x was 4.0" in bad.error


def test_async_as_completed_and_its_timeout(wf, launcher):
    rl = wf.calc.createTask(None, together(x=[1.0, 2.0], sleep=[1.6, 0.1]))

    async def flow():
        order = []
        async for run, job in rl.as_completed(timeout=60):
            order.append((job.x, run.state, run.y))
        return order

    assert asyncio.run(flow()) == [(2.0, FINISHED, 4.0), (1.0, FINISHED, 2.0)]
    launcher.stop()
    waiting = wf.calc.createTask(x=[7.0, 8.0])  # nobody executes these
    with pytest.raises(WaitTimeout) as info:
        list(waiting.as_completed(timeout=0.3))
    assert info.value.pending == [("calc", 3, CREATED), ("calc", 4, CREATED)]
    assert str(info.value).startswith("2 run(s) not done after 0.3 s: calc.3 (CREATED), calc.4 (CREATED)")


def test_as_completed_yields_a_cancelled_run_with_its_error(wf):
    rl = wf.calc.createTask(x=[1.0, 2.0])
    threading.Timer(0.3, cancel_elsewhere, (wf, 2)).start()
    iterator = rl.as_completed(timeout=30)
    run, job = next(iterator)
    assert (run.id, run.state, run.error, job.x) == (2, CANCELLED, "cancelled before it started", 2.0)
    iterator.close()


# -- cancelling --------------------------------------------------------------------------------


def test_cancel_created_runs_at_once_and_is_idempotent(wf):
    rl = wf.calc.createTask(x=[1.0, 2.0])
    assert rl.cancel() == {1: True, 2: True}
    assert rl.status() == {CANCELLED: 2}
    assert rl.cancel(wait_timeout=1) == {1: True, 2: True}  # again: harmless
    assert [run.error for run, _ in rl.cancelled()] == ["cancelled before it started"] * 2
    assert rl.done() and rl.failed() == []
    with pytest.raises(RunsFailed) as failed:
        rl.result(timeout=5)
    assert str(failed.value).startswith("2 runs failed: calc.1 CANCELLED: cancelled before it started")


def test_cancelling_finished_runs_changes_nothing(wf, launcher):
    rl = wf.calc.createTask(x=[1.0, 2.0]).result(timeout=60)
    assert rl.cancel() == {1: False, 2: False}
    run = rl[0][0]
    assert run.cancel() is False and run.cancel(wait_timeout=1) is False
    assert rl.status() == {FINISHED: 2}


def test_cancel_a_running_run_requests_a_stop_then_terminates_it(wf, wfdir):
    # A grace of 3 s leaves the run time to see the stop request on a busy machine.
    embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml"), cancel_grace=3).start()
    try:
        rl = wf.calc.createTask(x=1.0, mode="stubborn")  # ignores TERM: KILLed after the grace
        for line in rl.run.tail(follow=True):
            if line == "ignoring TERM":
                break
        assert rl.cancel(wait_timeout=30) == {1: True}
    finally:
        embedded.stop()
    run = rl.run
    assert run.state == CANCELLED and run.error == "cancelled on request" and run.stop_requested
    assert run.tail() == ["ignoring TERM", "stop seen"]  # run.should_stop() turned True inside it


def test_run_cancel_on_a_single_created_run(wf):
    (run, _), = wf.calc.createTask(x=1.0)
    assert run.cancel() is True and run.state == CANCELLED
    with StudyDB(wf.address_of("calc")) as other:  # committed
        assert other.run("calc", run.id).state == CANCELLED


def test_cancel_async_waits_without_blocking_the_loop(wf, launcher):
    rl = wf.calc.createTask(x=[1.0, 2.0], sleep=30.0)

    async def flow():
        await wf.calc.select("state = RUNNING").all("state = RUNNING").wait(timeout=60)
        return await rl.cancel_async(wait_timeout=30)

    assert asyncio.run(flow()) == {1: True, 2: True}
    assert [run.error for run, _ in rl.cancelled()] == ["cancelled on request"] * 2
    run = wf.calc.createTask(x=3.0, sleep=30.0).run
    wf.calc.select("x = 3").all("state = RUNNING").result(timeout=60)
    assert run.cancel(wait_timeout=30) is True and run.state == CANCELLED  # one run, sync


def test_cancel_on_exit_cancels_when_the_block_raises(wf):
    rl = wf.calc.createTask(x=[1.0, 2.0])
    with rl.cancel_on_exit() as handle:
        assert handle is rl
    assert rl.status() == {CREATED: 2}  # a normal exit cancels nothing
    with pytest.raises(RuntimeError, match="boom"), rl.cancel_on_exit():
        raise RuntimeError("boom")
    assert rl.status() == {CANCELLED: 2}
    other = wf.calc.createTask(x=3.0)
    with pytest.raises(KeyboardInterrupt), other.cancel_on_exit(wait_timeout=1):
        raise KeyboardInterrupt
    assert other.run.state == CANCELLED


# -- saving and reattaching -----------------------------------------------------------------------

REATTACH = """\
import json, sys
from motoko import RunList
rl = RunList.open(sys.argv[1])
rl.result(timeout=60)
print(json.dumps({"ids": rl.ids, "study": rl.study, "run_name": rl.workflow.run_name,
                  "y": [run.y for run, _ in rl], "status": rl.status()}))
rl.close()
"""


def test_save_and_open_from_another_process(wf, wfdir, launcher, tmp_path):
    rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.5)
    path = rl.save(tmp_path / "handle.json")
    saved = json.loads(path.read_text())
    assert saved == {"kind": "motoko.RunList", "version": 1, "workflow": str(wfdir / "motoko.yaml"),
                     "run_name": "r1", "study": "calc", "ids": [1, 2]}
    done = subprocess.run([sys.executable, "-c", REATTACH, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ids": [1, 2], "study": "calc", "run_name": "r1",
                                       "y": [2.0, 4.0], "status": {"FINISHED": 2}}
    again = RunList.from_ids(wfdir / "motoko.yaml", "calc", [2])
    try:
        assert again.run.y == 4.0 and again.done()
    finally:
        again.close()


def test_reattaching_to_unknown_ids_or_a_wrong_file_is_a_clear_error(wf, tmp_path):
    wf.calc.createTask(x=1.0)
    with pytest.raises(RunNotFound) as unknown:
        RunList.from_ids(wf, "calc", [1, 98, 99])
    assert str(unknown.value) == (
        "no run with id 98, 99 in study 'calc' (list existing runs with `motoko runs list --study calc`)"
    )
    assert unknown.value.ids == [98, 99]
    with pytest.raises(UnknownNameError) as study:
        RunList.from_ids(wf, "clac", [1])
    assert "unknown study 'clac' (did you mean 'calc'?)" in str(study.value)
    missing = tmp_path / "nothing.json"
    with pytest.raises(HandleError) as absent:
        RunList.open(missing)
    assert str(absent.value) == f"no saved RunList at {missing} (give a file written by rl.save(path))"
    other = tmp_path / "other.json"
    other.write_text('{"ids": [1]}')
    with pytest.raises(HandleError) as wrong:
        RunList.open(other)
    assert str(wrong.value) == (
        f"{other}: not a saved RunList (no \"kind\": 'motoko.RunList') (give a file written by rl.save(path))"
    )
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(HandleError) as not_json:
        RunList.open(text)
    assert str(not_json.value) == f"{text}:1: not a saved RunList: the file is not JSON (give a file written by rl.save(path))"
    gone = wf.calc.createTask(x=2.0).save(tmp_path / "gone.json")
    data = json.loads(gone.read_text())
    data["ids"] = [1, 42]
    gone.write_text(json.dumps(data))
    with pytest.raises(RunNotFound, match="no run with id 42 in study 'calc'"):
        RunList.open(gone)


# -- finding runs ---------------------------------------------------------------------------------


def test_tm_runs_lists_newest_first_and_stays_a_mapping(wfdir):
    with Workflow(wfdir, run_name="a") as a, Workflow(wfdir, run_name="b") as b:
        a.calc.createTask(x=[1.0, 2.0, 3.0])
        b.calc.createTask(x=[1.0, 2.0])
        a.calc.runs[2].cancel()
        assert a.calc.runs().ids == [5, 4, 3, 2, 1]
        assert a.calc.runs(last=2).ids == [5, 4]
        assert a.calc.runs(last=0).ids == [5, 4, 3, 2, 1]  # 0 means all, as in Inductiva
        assert a.calc.runs(state="CANCELLED").ids == [2]
        assert a.calc.runs(state=["CANCELLED", "CREATED"], last=3).ids == [5, 4, 3]
        assert a.calc.runs(run_name="b").ids == [5, 4]
        assert a.calc.runs(run_name="").ids == [3, 2, 1]  # "" is the workflow's own run name
        assert a.calc.runs(state="CREATED", run_name="a").ids == [3, 1]
        assert a.calc.runs(state="FINISHED").ids == []
        # with `last`, only the end of an index is read: same answers, gaps included
        assert a.calc.runs(state="CREATED", last=10).ids == [5, 4, 3, 1]
        assert a.calc.runs(run_name="b", last=1).ids == [5]
        assert a.calc.runs(run_name="nobody", last=2).ids == []
        assert a.calc.runs(state="FINISHED", last=2).ids == []
        assert a.calc.runs(state="CREATED", run_name="a", last=1).ids == [3]
        assert a.calc.runs(last=1).run.job.x == 2.0
        assert a.calc.runs[3].id == 3 and sorted(a.calc.runs) == [1, 2, 3, 4, 5] and len(a.calc.runs) == 5
        with pytest.raises(UnknownNameError) as bad:
            a.calc.runs(state="FINSHED")
        assert str(bad.value) == "study calc: unknown state 'FINSHED' (did you mean 'FINISHED' or 'FAILED'?)"


# -- run information ----------------------------------------------------------------------------------


def test_run_information_of_a_queued_and_a_finished_run(wf, wfdir):
    rl = wf.calc.createTask(x=[1.0, 2.0, 3.0])
    first, second, third = (run for run, _ in rl)
    assert [first.queue_position, second.queue_position, third.queue_position] == [1, 2, 3]
    assert first.computation_time is None and first.total_time >= 0
    second.cancel()
    assert (second.queue_position, third.queue_position) == (None, 2)
    first.set_metadata({"owner": "ana", "priority": 2})
    assert first.get_metadata() == {"owner": "ana", "priority": "2"}
    wf.refresh()
    assert [r.id for r in wf.calc.select("meta.owner = ana").runs()] == [1]
    embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
    try:
        RunList(wf, "calc", [1, 3]).result(timeout=60)
    finally:
        embedded.stop()
    run = wf.calc.runs[1]
    assert run.queue_position is None
    assert run.computation_time == (run.finished - run.started).total_seconds()
    assert run.total_time == (run.finished - run.created).total_seconds() >= run.computation_time
    data = run.to_dict()
    json.dumps(data)  # JSON-ready as it is
    assert data["state"] == FINISHED and data["exit_code"] == 0 and data["y"] == 2.0
    assert data["job"] == {"id": 1, "x": 1.0, "sleep": 0.0, "mode": "ok"}
    assert data["metadata"] == {"owner": "ana", "priority": "2"} and data["progress"] == 1.0
    assert data["created"] == run.created.isoformat() and data["computation_time"] == run.computation_time
    assert data["queue_position"] is None and data["machine_name"] == run.machine_name


def test_files_and_tail_of_a_finished_run(wf, launcher):
    run = wf.calc.createTask(x=1.0, sleep=0.3).result(timeout=60).run
    files = run.files()
    # with the attempt's fence (its exit status is in its launcher's exit log: see motoko.launch.attempts)
    assert [f.name for f in files] == [".motoko-attempt", "doIt.py", "launch.sh", "run.json", "stderr", "stdout"]
    stdout = files[-1]
    assert isinstance(stdout, RunFile) and stdout.size == len("start x=1.0\nstep 0\nstep 1\nstep 2\n")
    assert stdout.modified.tzinfo is not None
    assert run.tail() == ["start x=1.0", "step 0", "step 1", "step 2"]
    assert run.tail(lines=2) == ["step 1", "step 2"] and run.tail(lines=0) == []
    assert run.tail("stderr") == []
    assert list(run.tail(follow=True, lines=1)) == ["step 2"]  # an ended run: no waiting
    with pytest.raises(RunFileNotFound) as unknown:
        run.tail("stdot")
    assert str(unknown.value) == f"run calc.1 has no file 'stdot' in {run.run_path} (did you mean 'stdout'?)"
    with pytest.raises(RunsFailed):
        wf.calc.createTask(x=2.0, mode="raise").result(timeout=60)
    assert wf.calc.runs[2].tail("stderr", lines=1) == ["ValueError: x was 2.0"]
    shutil.rmtree(run.run_path)  # e.g. cleaned, or on the machine that ran it
    with pytest.raises(RunFileNotFound) as gone:
        run.files()
    assert str(gone.value) == (
        f"the directory {run.run_path} of run calc.1 does not exist on this host (it ran on {run.machine_name}) "
        "(look on the machine that ran it, or check whether `motoko clean` removed it)"
    )
    with pytest.raises(RunFileNotFound):
        run.tail()


def test_a_run_without_files_yet(wf):
    (run, _), = wf.calc.createTask(x=1.0)
    assert run.files() == []
    with pytest.raises(RunFileNotFound) as info:
        run.tail()
    assert str(info.value) == (
        "run calc.1 has no files yet: it is CREATED and has not started "
        "(follow it with `motoko runs tail calc.1 -f` to wait for its output)"
    )
    assert isinstance(info.value, FileNotFoundError) and info.value.name == "stdout"
    # following waits for the file; a run cancelled before it started ends the wait
    threading.Timer(0.3, cancel_elsewhere, (wf, 1)).start()
    with pytest.raises(RunFileNotFound) as never:
        list(run.tail(follow=True))
    assert str(never.value) == "run calc.1 has no files: it ended CANCELLED before it started"


def test_tail_follow_yields_lines_while_the_run_runs(wf, launcher):
    run = wf.calc.createTask(x=1.0, sleep=1.5).run
    seen = [(line, run.state) for line in run.tail(follow=True)]
    assert [line for line, _ in seen] == ["start x=1.0", "step 0", "step 1", "step 2"]
    assert seen[0][1] not in TERMINAL  # the first line came while the run was still running
    assert run.state == FINISHED


# -- selections ---------------------------------------------------------------------------------------


def test_task_selection_handle_methods(wf, launcher):
    wf.calc.createTask(x=[1.0, 2.0, 3.0], sleep=0.2)
    big = wf.calc.select("x > 1.5")
    assert [run.id for run, _ in big.all("state = FINISHED").result(timeout=60)] == [2, 3]
    assert big.status() == {FINISHED: 2}
    assert big.progress().finished == 2
    assert sorted(run.id for run, _ in big.as_completed(timeout=5)) == [2, 3]
    assert big.cancel() == {2: False, 3: False}
    launcher.stop()
    queued = wf.calc.createTask(x=9.0)
    assert wf.calc.select("x > 5").snapshot().ids == queued.ids
    assert wf.calc.select("x > 5").result(timeout=5)[0][0].id == queued.run.id


def test_motoko_loop_marks_the_loop_only_while_its_block_runs():
    from motoko.study.blocking import in_motoko_loop, motoko_loop

    async def main():
        seen = [in_motoko_loop()]
        with motoko_loop():
            with motoko_loop():  # nested: steps inside an orchestrator
                seen.append(in_motoko_loop())
            seen.append(in_motoko_loop())
        seen.append(in_motoko_loop())
        return seen

    assert asyncio.run(main()) == [False, True, True, False]
    assert in_motoko_loop() is False  # no loop at all

"""Cancelling asks first: should_stop(), then cancel_grace, then TERM, then KILL.

Real server, real launcher (a thread of the test process), real run
processes. A run polling ``should_stop()`` gets to save its state; a run can
ask to stop itself (``run.request_stop()``); a run deaf to the request is
terminated only after the grace.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import write_config, write_study

from motoko.config import load_config
from motoko.launch.service import EmbeddedLauncher
from motoko.study.records import CANCELLED, FINISHED

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 30
launcher: {executor: local, max_parallel: 2, poll: 0.5, heartbeat: 0.5, cancel_grace: 60}
"""

# mode "save": compute until asked to stop, then save the step reached and exit 0.
# mode "self": ask to stop itself at step 3, then behave as "save".
# mode "quick": ends at once.
# mode "deaf": never looks at should_stop(); writes its output when TERM arrives.
DOIT = """\
import signal
import sys
import time

from motoko import current_run

run, job = current_run()
if job.mode == "deaf":
    def on_term(*_):
        run.set_output({"term": True})
        sys.exit(3)
    signal.signal(signal.SIGTERM, on_term)
print("started", flush=True)
if job.mode == "quick":
    sys.exit(0)
step = 0
while True:
    step += 1
    run.set_progress(min(step / 1000, 1.0))
    if job.mode == "self" and step == 3:
        run.request_stop()
    if job.mode != "deaf" and run.should_stop():
        run.set_output({"saved_at": step})
        print("saved", flush=True)
        break
    time.sleep(0.05)
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float, mode: str}", DOIT, extra="job_space: {mode: save}\n")
    write_config(workdir, ["calc"], FAST)
    return workdir


def wait_started(rl) -> None:
    for line in rl.run.tail(follow=True):
        if line == "started":
            return


def test_a_run_polling_should_stop_saves_its_state_when_cancelled(wf, launcher):
    rl = wf.calc.createTask(x=1.0)  # cancel_grace is 60 s: no signal may be needed
    wait_started(rl)
    assert rl.cancel(wait_timeout=30) == {1: True}
    run = rl.run
    assert (run.state, run.error, run.exit_code) == (CANCELLED, "cancelled on request", 0)
    assert run.output["saved_at"] >= 1  # it saved its state: it was not killed first
    assert run.tail() == ["started", "saved"]


def test_cancel_async_of_a_cooperative_run(wf, launcher):
    rl = wf.calc.createTask(x=[1.0, 2.0])

    async def flow() -> dict[int, bool]:
        await wf.calc.select().all("state = RUNNING").wait(timeout=60)
        return await rl.cancel_async(wait_timeout=30)

    assert asyncio.run(flow()) == {1: True, 2: True}
    assert [(run.exit_code, "saved_at" in run.output) for run, _ in rl] == [(0, True), (0, True)]


def test_a_run_may_ask_to_stop_itself(wf, launcher):
    rl = wf.calc.createTask(x=1.0, mode="self")
    (run, _), = rl.as_completed(timeout=60)
    assert (run.state, run.stop_requested, run.output, run.exit_code) == (CANCELLED, True, {"saved_at": 3}, 0)


def test_a_run_deaf_to_the_request_is_terminated_after_the_grace(wf, wfdir):
    embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml"), cancel_grace=1).start()
    try:
        rl = wf.calc.createTask(x=1.0, mode="deaf")
        wait_started(rl)
        assert rl.cancel(wait_timeout=30) == {1: True}
    finally:
        embedded.stop()
    run = rl.run
    assert (run.state, run.output, run.exit_code) == (CANCELLED, {"term": True}, 3)


def test_cancelling_a_finished_run_changes_nothing(wf, launcher):
    rl = wf.calc.createTask(x=1.0, mode="quick").result(timeout=60)
    run = rl.run
    assert run.cancel() is False and rl.cancel(wait_timeout=1) == {1: False}
    assert (rl.run.state, rl.run.stop_requested, rl.run.error) == (FINISHED, False, None)

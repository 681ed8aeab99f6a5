"""Workflow, TaskManager, RunList and TaskSelection against a real server and launcher.

Every test gets its own workflow directory with a real ZEO server; runs are
executed by a real launcher (a thread of the test process, executing real
subprocesses) or by a launcher daemon subprocess.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_config, write_study
from launch_support import run_hosts_of

from motoko import RunList, TaskSelection, Workflow
from motoko.config import load_config
from motoko.errors import (
    AddressError,
    ParameterError,
    RunNotFound,
    RunsFailed,
    UnknownNameError,
    WaitTimeout,
)
from motoko.launch.service import EmbeddedLauncher
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, CREATED, FINISHED, LOST, RUNNING

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 1
aliases: {p: post}
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.2, cancel_grace: 1}
"""

CALC_DOIT = """\
import sys
import time

from motoko import current_run

run, job = current_run()
time.sleep(job.sleep)
if job.mode == "raise":
    raise ValueError(f"x was {job.x}")
if job.mode == "exit3":
    print("giving up on", job.x, file=sys.stderr)
    sys.exit(3)
run.y = 2 * job.x
"""

CALC_EXTRA = """\
run: {compiler: str}
job_space: {sleep: 0.0, mode: ok}
run_params: {compiler: gcc}
"""

POST_DOIT = """\
from motoko import current_run

run, job = current_run()
run.y = job.x + 1
"""


def make_workflow_dir(root: Path, config: str = FAST) -> Path:
    """Two studies: calc (y = 2x, may sleep or fail) and post (y = x + 1), alias p."""
    write_study(root, "calc", "{x: float, sleep: float, mode: str}", CALC_DOIT, extra=CALC_EXTRA)
    write_study(root, "post", "{x: float}", POST_DOIT)
    return write_config(root, ["calc", "post"], config)


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    make_workflow_dir(workdir)
    return workdir


def other_connection(workflow: Workflow) -> StudyDB:
    """An independent connection to the workflow's database (another 'process')."""
    return StudyDB(workflow.address_of("calc"))


def fresh_run(db: StudyDB, study: str, rid: int):
    db.abort()  # begin anew: see every commit made since
    return db.run(study, rid)


# -- loading, task managers, names ----------------------------------------------------------


def test_workflow_loads_config_and_task_managers_with_aliases(wfdir):
    with Workflow(wfdir, run_name="r1") as workflow:  # a directory is searched for motoko.yaml
        assert list(workflow.task_managers) == ["calc", "post"]
        assert workflow.p is workflow.post and workflow["p"] is workflow.post
        assert workflow["calc"] is workflow.calc and workflow.calc.name == "calc"
        assert workflow.calc.study == "calc"
        assert workflow.calc.schema.job_space == {"sleep": 0.0, "mode": "ok"}
        assert workflow.config_path == str(wfdir / "motoko.yaml")
        assert workflow.directory == wfdir
        assert workflow.run_name == "r1"
        assert workflow.config.poll.initial == 0.05 and workflow.config.poll.maximum == 0.5
        assert repr(workflow) == f"<Workflow {wfdir / 'motoko.yaml'} run_name='r1'>"
        assert repr(workflow.calc) == "<TaskManager calc>"
        assert workflow.is_empty()


def test_unknown_study_name_suggests_close_names(wf, wfdir):
    with pytest.raises(UnknownNameError) as info:
        wf["clac"]
    assert str(info.value) == f"{wfdir / 'motoko.yaml'}: unknown study 'clac' (did you mean 'calc'?)"
    assert isinstance(info.value, KeyError) and info.value.name == "clac"
    with pytest.raises(AttributeError) as attr:
        _ = wf.psot
    assert str(attr.value) == "workflow has no study or attribute 'psot' (did you mean 'post'?)"


def test_vars_persist_across_two_workflow_objects(wfdir):
    first = Workflow(wfdir, run_name="a")
    first.vars.best = {"x": 3, "label": "winner"}
    first.vars.count = 7
    first.close()
    second = Workflow(wfdir, run_name="b")  # vars belong to the workflow, not the run name
    try:
        assert second.vars.best == {"x": 3, "label": "winner"}
        assert "count" in second.vars and second.vars.to_dict() == {"best": {"x": 3, "label": "winner"}, "count": 7}
        del second.vars.count
        with pytest.raises(AttributeError) as info:
            _ = second.vars.count
        assert str(info.value) == "workflow.vars has no 'count' (set it first: workflow.vars.count = ...)"
    finally:
        second.close()
    with Workflow(wfdir) as third:
        assert third.vars.to_dict() == {"best": {"x": 3, "label": "winner"}}


def test_run_name_scopes_created_runs_and_selections(wfdir):
    with Workflow(wfdir, run_name="a") as a, Workflow(wfdir, run_name="b") as b:
        runs_a = a.calc.createTask(x=[1.0, 2.0])
        runs_b = b.calc.createTask(x=[1.0, 2.0])
        assert runs_a.ids == [1, 2] and runs_b.ids == [3, 4]  # same jobs, other run name: new runs
        b.refresh()
        assert [r.id for r, _ in b.calc.select()] == [3, 4]
        assert [r.id for r, _ in a.calc.select("x > 1.5")] == [2]
        assert [r.run_name for r in a.calc.select(run_name=None).runs()] == ["a", "a", "b", "b"]
        assert [r.id for r in a.calc.select(run_name="b").runs()] == [3, 4]
        assert {r.job_id for r in a.calc.select(run_name=None).runs()} == {1, 2}


def test_runs_by_id_name_and_item_access(wf, wfdir):
    wf.calc.createTask(x=[1.0, 2.0, 3.0])
    wf.post.createTask(x=5.0)
    assert wf.get_runs(["calc.1", "post.1", "calc.3"]) == {
        "calc": [wf.calc.runs[1], wf.calc.runs[3]],
        "post": [wf.post.runs[1]],
    }
    with pytest.raises(AddressError) as bad:
        wf.get_runs(["calc1"])
    assert str(bad.value) == "malformed run name 'calc1' (write STUDY.ID, e.g. 'add.1')"
    run = wf.calc.runs[3]
    assert wf.calc.base.runs[3] is run and wf.calc.connect().runs[3] is run
    assert run["id"] == 3 and run.id == 3 and run["run_name"] == "r1"
    assert run.job.x == 3.0 and run["job_id"] == run.job.id
    assert run.workflow == str(wfdir / "motoko.yaml")
    assert Path(run.workflow).parent == wf.directory  # a run can open Workflow(run.workflow)
    assert sorted(wf.calc.runs) == [1, 2, 3] and len(wf.calc.runs) == 3
    with pytest.raises(KeyError, match="nothing"):
        run["nothing"]
    with pytest.raises(RunNotFound) as missing:
        wf.calc.runs[99]
    assert str(missing.value) == "no run with id 99 in study 'calc' (list existing runs with `motoko runs list --study calc`)"


def test_a_run_can_open_its_workflow(wf):
    (run, _), = wf.calc.createTask(x=1.0)
    with Workflow(run.workflow, run_name="r1") as again:
        assert again.calc.runs[run.id].job.x == 1.0
        assert [r.id for r, _ in again.calc.select()] == [run.id]


# -- createTask ------------------------------------------------------------------------------


def test_create_task_merges_job_space_and_run_params_defaults(wf):
    (run, job), = wf.calc.createTask(x=1.5)
    assert job.to_dict() == {"id": job.id, "x": 1.5, "sleep": 0.0, "mode": "ok"}
    assert run.compiler == "gcc" and run.state == CREATED and run.run_name == "r1"
    (other, other_job), = wf.calc.createTask({"compiler": "clang"}, x=1.5, mode="fast")
    assert other.compiler == "clang" and other_job.mode == "fast" and other_job.sleep == 0.0
    (third, third_job), = wf.calc.createTask(run_params={"compiler": "icc"}, x=1.5)
    assert third_job.id == job.id and third.id != run.id  # same job, another run
    assert third.compiler == "icc"


def test_create_task_sweeps_the_cartesian_product(wf):
    runs = wf.calc.createTask(x=[1.0, 2.0, 3.0], mode=["a", "b"])
    assert isinstance(runs, RunList) and len(runs) == 6
    assert sorted((job.x, job.mode) for _, job in runs) == sorted(itertools.product([1.0, 2.0, 3.0], ["a", "b"]))
    assert runs.status() == {CREATED: 6}


def test_create_task_is_idempotent(wf):
    first = wf.calc.createTask(x=[1.0, 2.0])
    again = wf.calc.createTask(x=[1.0, 2.0])
    overlapping = wf.calc.createTask(x=[2.0, 3.0])
    assert again.ids == first.ids == [1, 2]
    assert overlapping.ids == [2, 3]
    assert len(wf.calc.runs) == 3 and len(wf.calc.jobs) == 3


def test_create_task_records_the_calling_function_and_explicit_parents(wf):
    def make_posts(pairs):
        return wf.post.createTask(x=[2.0, 3.0], parents=pairs)

    def outer():
        return make_posts(wf.calc.createTask(x=[1.0, 2.0]))

    posts = outer()
    (calc_run, _), _ = wf.calc.createTask(x=[1.0, 2.0])
    assert calc_run.event_name == "outer"
    for run, _ in posts:
        assert run.event_name == "make_posts"
        assert run.parents == (("calc", 1), ("calc", 2))
    (single, _), = wf.post.createTask(x=9.0, parents=calc_run)
    assert single.parents == (("calc", 1),)
    (by_key, _), = wf.post.createTask(x=8.0, parents=[("calc", 2)])
    assert by_key.parents == (("calc", 2),)
    (no_parent, _), = wf.post.createTask(x=7.0)
    assert no_parent.parents == ()


def test_bad_parameters_are_rejected_before_anything_is_written(wf):
    wf.calc.createTask(x=1.0)
    before = (len(wf.calc.runs), len(wf.calc.jobs))
    with pytest.raises(ParameterError) as bad_type:
        wf.calc.createTask(x=[2.0, "three"])
    assert str(bad_type.value).startswith("calc.createTask")
    assert "'x'" in str(bad_type.value) and "'three'" in str(bad_type.value)
    assert bad_type.value.field == "x" and bad_type.value.value == "three"
    with pytest.raises(UnknownNameError) as unknown:
        wf.calc.createTask(x=2.0, y=1)
    assert str(unknown.value) == "calc.createTask: unknown job field 'y' (possible: mode, sleep, x)"
    with pytest.raises(UnknownNameError) as unknown_run:
        wf.calc.createTask({"compiller": "gcc"}, x=2.0)
    assert str(unknown_run.value) == "calc.createTask: unknown run field 'compiller' (did you mean 'compiler'?)"
    with pytest.raises(ParameterError) as bad_parent:
        wf.calc.createTask(x=2.0, parents=["calc.1"])
    assert str(bad_parent.value) == "cannot use 'calc.1' as a parent run (pass runs, (run, job) pairs or (study, id) pairs)"
    wf.refresh()
    with StudyDB(wf.address_of("calc")) as other:
        assert (len(other.study("calc").runs), len(other.study("calc").jobs)) == before == (1, 1)


# -- awaiting runs ---------------------------------------------------------------------------


def test_await_create_task_resolves_with_finished_runs(wf, launcher):
    async def flow():
        runs = wf.calc.createTask(x=[1.0, 2.5])
        done = await runs
        assert done is runs
        return [(run.state, run.y, run.exit_code) for run, _ in done]

    assert asyncio.run(flow()) == [(FINISHED, 2.0, 0), (FINISHED, 5.0, 0)]


def test_a_failing_run_fails_the_await_naming_it_its_exit_code_and_stderr(wf, launcher):
    async def flow(mode):
        await wf.calc.createTask(x=[1.0, 2.0], mode=mode)

    with pytest.raises(RunsFailed) as raised:
        asyncio.run(flow("raise"))
    failures = raised.value.failures
    assert [(s, i, st, code) for s, i, st, code, _ in failures][:1] == [("calc", failures[0][1], "FAILED", 1)]
    message = str(raised.value)
    assert f"calc.{failures[0][1]} FAILED (exit code 1): ValueError: x was " in message
    assert message.endswith(f"(see the run's stderr with `motoko runs tail calc.{failures[0][1]} --file stderr`)")
    assert isinstance(raised.value, RuntimeError) and raised.value.exit_code == 1

    with pytest.raises(RunsFailed) as exited:
        asyncio.run(flow("exit3"))
    rid = exited.value.failures[0][1]
    assert exited.value.failures[0][:4] == ("calc", rid, "FAILED", 3)
    assert f"calc.{rid} FAILED (exit code 3): giving up on " in str(exited.value)


def test_a_cancelled_run_fails_the_await(wf):
    runs = wf.calc.createTask(x=[1.0, 2.0])  # no launcher: they stay CREATED

    async def flow():
        waiting = asyncio.ensure_future(runs.wait())
        await asyncio.sleep(0.1)
        with other_connection(wf) as db:  # somebody else cancels run 2
            db.transact(lambda: db.study("calc").cancel(db.run("calc", 2)))
        await waiting

    with pytest.raises(RunsFailed) as raised:
        asyncio.run(flow())
    assert raised.value.failures == [("calc", 2, CANCELLED, None, "cancelled before it started")]
    assert str(raised.value).startswith("1 run failed: calc.2 CANCELLED: cancelled before it started")


def test_a_lost_run_fails_the_await(wf, wfdir):
    runs = wf.calc.createTask(x=1.0, sleep=3.0)
    # A launcher daemon starts the run, then dies with it (kill -9).
    daemon = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start"], cwd=wfdir,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        async def until_running():
            await wf.calc.select("state = RUNNING").wait(timeout=15)

        asyncio.run(until_running())
        wf.refresh()
        session = int(wf.db_for("calc").run("calc", 1).executor_id)  # the run's own session
        hosts = run_hosts_of(daemon.pid)
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    # Its run host and its process die too, recording nothing: nobody can account for it (else it is adopted).
    for host in hosts:
        os.kill(host, signal.SIGKILL)
    os.killpg(session, signal.SIGKILL)
    # Another launcher notices the missing heartbeats (lost_after: 1) and settles it LOST.
    embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
    try:
        with pytest.raises(RunsFailed) as raised:
            asyncio.run(runs.wait(timeout=15))
    finally:
        embedded.stop()
    (study, rid, state, _, error), = raised.value.failures
    assert (study, rid, state) == ("calc", 1, LOST)
    assert "stopped heart-beating" in error and "calc.1 LOST" in str(raised.value)


def test_wait_timeout_is_a_timeout_error_naming_pending_runs(wf):
    runs = wf.calc.createTask(x=[1.0, 2.0])
    with pytest.raises(WaitTimeout) as info:
        asyncio.run(runs.wait(timeout=0.2))
    assert isinstance(info.value, TimeoutError)
    assert info.value.pending == [("calc", 1, CREATED), ("calc", 2, CREATED)]
    assert str(info.value) == (
        "2 run(s) not done after 0.2 s: calc.1 (CREATED), calc.2 (CREATED) "
        "(2 runs waiting, no launcher alive: `motoko launcher start`)"
    )
    with pytest.raises(TimeoutError) as selection:
        asyncio.run(wf.calc.select("state = FINISHED").wait(timeout=0.2))
    assert str(selection.value) == (
        "no run of 'calc' matched state = FINISHED and run_name = 'r1' within 0.2 s "
        "(wait longer, or check the constraints with `motoko select`)"
    )
    with pytest.raises(WaitTimeout) as condition:
        asyncio.run(wf.calc.select("x > 1.5").all("state = FINISHED", "state = FAILED").wait(timeout=0.2))
    assert condition.value.pending == [("calc", 2, CREATED)]
    assert str(condition.value).startswith("1 run(s) not done after 0.2 s: calc.2 (CREATED) (")
    with pytest.raises(WaitTimeout) as empty:
        asyncio.run(wf.calc.select("x > 5").all().wait(timeout=0.2))
    assert str(empty.value).startswith("no run of 'calc' matched x > 5 and run_name = 'r1' within 0.2 s (")


def test_task_selection_is_lazy_iterable_sized_indexable_and_combinable(wf, launcher):
    finished = wf.calc.select("state = FINISHED")
    big = wf.calc.select("x > 1.5")
    assert isinstance(finished, TaskSelection)
    assert len(finished) == 0 and not finished and list(finished) == []

    async def flow():
        runs = wf.calc.createTask(x=[1.0, 2.0, 3.0])
        first = await finished  # resolves once non-empty
        assert first and all(run.state == FINISHED for run, _ in first)
        everything = wf.calc.select()
        pairs = await everything.all("state = FINISHED")
        assert [run.id for run, _ in pairs] == runs.ids
        return pairs

    asyncio.run(flow())
    assert len(finished) == 3 and bool(finished)
    assert finished[0][0].id == 1 and finished[-1][1].x == 3.0
    assert [run.id for run, _ in finished] == [1, 2, 3]
    both = finished & big
    assert isinstance(both, TaskSelection) and [run.id for run, _ in both] == [2, 3]
    assert [job.x for _, job in both.exec()] == [2.0, 3.0]
    assert wf.calc.select().all("state = FINISHED", "state = FAILED")()  # one of the sets
    assert wf.calc.select().all() is not None and bool(wf.calc.select().all())  # all terminal
    assert wf.calc.select().all("state = FAILED")() is False
    assert wf.calc.select("x > 10").all()() is False  # an empty selection never holds


def test_all_waits_until_every_selected_run_satisfies_a_constraint_set(wf, launcher):
    async def flow():
        wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)
        selection = wf.calc.select()
        assert not selection.all("state = FINISHED")()
        pairs = await selection.all("state = FINISHED")
        return [(run.id, run.state) for run, _ in pairs]

    assert asyncio.run(flow()) == [(1, FINISHED), (2, FINISHED)]


def test_awaiting_does_not_block_the_event_loop(wf, launcher):
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    async def flow():
        tick = asyncio.ensure_future(ticker())
        first = wf.calc.createTask(x=1.0, sleep=1.0)
        second = wf.post.createTask(x=1.0)
        slow = wf.calc.createTask(x=2.0, sleep=1.0)
        await asyncio.gather(first, slow, second)
        tick.cancel()
        return first.runs()[0], slow.runs()[0]

    a, b = asyncio.run(flow())
    # both 1 s runs executed at the same time: their lifetimes overlap
    assert a.started < b.finished and b.started < a.finished
    # the ticker kept running while both awaits were pending
    during = [t for t in ticks if t > ticks[0] + 0.2]
    assert len(during) >= 5


def test_wake_ups_come_from_the_change_feed_not_the_poll(workdir):
    # A safety-net poll of 30 s: an await resolving in seconds proves that
    # invalidations pushed by the server woke it up.
    make_workflow_dir(workdir, FAST.replace("poll: {initial: 0.05, factor: 2, maximum: 0.5}", "poll: {initial: 30, factor: 2, maximum: 60}"))
    workflow = Workflow(workdir, run_name="slow-poll")
    embedded = EmbeddedLauncher(workflow.config).start()
    try:
        assert workflow.config.poll.initial == 30

        async def flow():
            started = time.monotonic()
            await workflow.calc.createTask(x=[1.0, 2.0])
            await workflow.post.createTask(x=1.0)
            await workflow.calc.select("state = FINISHED").all("state = FINISHED")
            return time.monotonic() - started

        assert asyncio.run(flow()) < 10
    finally:
        embedded.stop()
        workflow.close()


# -- transactions ------------------------------------------------------------------------------


def test_workflow_changes_to_runs_are_visible_elsewhere_after_the_next_await(wf, launcher):
    other = other_connection(wf)

    async def flow():
        (run, _), = await wf.calc.createTask(x=1.0)
        run.state = "FORWARDED"
        run.dependencies = [("post", 1)]
        run["note"] = "tagged"
        # not yet committed: another connection still sees FINISHED
        assert fresh_run(other, "calc", run.id).state == FINISHED
        await wf.post.createTask(x=run.y)  # the next await commits
        seen = fresh_run(other, "calc", run.id)
        return seen.state, seen.dependencies, seen.note, seen.finished is not None

    try:
        assert asyncio.run(flow()) == ("FORWARDED", [("post", 1)], "tagged", True)
        assert [r.id for r in other.select("calc", "state = FORWARDED")] == [1]
        # a user state entered after FINISHED still counts as done
        assert asyncio.run(wf.calc.createTask(x=1.0).wait(timeout=5)).ids == [1]
    finally:
        other.close()


def test_run_state_in_the_study_index_follows_user_states(wf, launcher):
    async def flow():
        runs = await wf.calc.createTask(x=[1.0, 2.0])
        for run, _ in runs:
            run.state = "FORWARDED"
        await wf.calc.select("state = FORWARDED").all("state = FORWARDED")

    asyncio.run(flow())
    assert len(wf.calc.select("state = FINISHED")) == 0
    assert len(wf.calc.select("state = FORWARDED")) == 2
    assert RUNNING not in wf.calc.db.study("calc").counts()

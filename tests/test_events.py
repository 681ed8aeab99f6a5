"""motoko 0.1.4 orchestrators: add_action with every event form, error handlers, finished.

Orchestrator files run unmodified, in-process through
:func:`motoko.flow.runner.run_file` and through the real command line, with
a real server and a real launcher executing real subprocesses.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.errors import WorkflowError
from motoko.flow.events import ALL, WorkflowAborted, event_kind
from motoko.flow.runner import run_file
from motoko.workflow import Workflow, event

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 2
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.2}
"""

CALC_DOIT = """\
from motoko import current_run

run, job = current_run()
if job.mode == "raise":
    raise RuntimeError(f"calc cannot take x={job.x}")
run.y = 2 * job.x
"""

POST_DOIT = """\
from motoko import current_run

run, job = current_run()
run.y = job.x + 1
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float, mode: str}", CALC_DOIT, extra="job_space: {mode: ok}\n")
    write_study(workdir, "post", "{x: float}", POST_DOIT)
    write_config(workdir, ["calc", "post"], FAST + "orchestrator: orch.main\n")
    return workdir


def write_orchestrator(root: Path, body: str, name: str = "orch.py") -> Path:
    path = root / name
    path.write_text("from motoko.workflow import Workflow, event\n\n" + textwrap.dedent(body))
    return path


EVERY_FORM = """
STATE = {"summary": False}


@event
async def forward_small(workflow, runs, **params):
    for run, job in runs:
        workflow.post.createTask(x=run.y)          # parents: the run the event fired for
        run.state = "FORWARDED"


@event
async def forward_large(workflow, runs, **params):
    for run, job in runs:
        workflow.post.createTask(x=run.y * 10)
        run.state = "FORWARDED"


def is_big(run, job):
    return run.state == "FINISHED" and job.x > 10


async def mark_big(workflow, runs, **params):
    workflow.vars.big = [(run.id, job.x) for run, job in runs]
    for run, job in runs:
        run.state = "BIG"


def posts_done(workflow, task_manager):
    return (
        len(task_manager.select("state = FINISHED")) == 1
        and len(task_manager.select("state = BIG")) == 1
        and not STATE["summary"]
    )


async def summarise(workflow, **params):
    finished = workflow.post.select("state = FINISHED")
    workflow.vars.summary = {"finished": [run.y for run, _ in finished], "label": params["label"]}
    STATE["summary"] = True


def ready():
    return STATE["summary"]


async def finish(workflow, **params):
    workflow.finished = True


async def main(workflow, **params):
    assert isinstance(workflow, Workflow)
    workflow.add_action("small", task="calc", event="state = FINISHED and x < 1.5, mode = ok", f=forward_small)
    workflow.add_action("large", task="calc", event=["state = FINISHED", "x >= 1.5"], f=forward_large)
    workflow.add_action("big", task="post", event=is_big, f=mark_big)
    workflow.add_action("summary", task="post", event=posts_done, f=summarise)
    workflow.add_action("stop", event=ready, f=finish)
    workflow.add_error_handler()
    workflow.calc.createTask(x=[1.0, 2.0])
"""


def test_every_event_form_fires_its_action(wfdir):
    path = write_orchestrator(wfdir, EVERY_FORM)
    outcome = run_file(path, {"label": "p"}, run_name="forms")
    assert outcome.results == {}
    with Workflow(wfdir, run_name="forms") as workflow:
        calc = {run.id: run for run, _ in workflow.calc.select()}
        assert [(r.state, r.event_name, r.y) for r in calc.values()] == [
            ("FORWARDED", "main", 2.0),
            ("FORWARDED", "main", 4.0),
        ]
        posts = [(run.job.x, run.event_name, run.parents, run.state) for run, _ in workflow.post.select()]
        assert sorted(posts) == [
            (2.0, "forward_small", (("calc", 1),), "FINISHED"),  # string split on 'and' and ','
            (40.0, "forward_large", (("calc", 2),), "BIG"),  # a list of constraints, then f(run, job)
        ]
        big_id = next(run.id for run, job in workflow.post.select() if job.x == 40.0)
        assert workflow.vars.big == [(big_id, 40.0)]
        # f(workflow, task_manager) fired once, then a no-argument callable ended the workflow
        assert workflow.vars.summary == {"finished": [3.0], "label": "p"}  # run parameters reach actions


def test_event_forms_are_classified_and_unknown_ones_refused(wfdir):
    def run_form(run, job):
        return True

    def workflow_form(workflow, task_manager):
        return True

    assert [event_kind(c) for c in ("state = FINISHED", ["a = 1"], run_form, workflow_form, lambda: 1)] == [
        "constraints", "constraints", "run", "workflow", "plain",
    ]
    with Workflow(wfdir, run_name="kinds") as workflow:
        with pytest.raises(WorkflowError) as info:
            workflow.add_action("odd", event=lambda a, b, c: 1, f=None)
        assert str(info.value).startswith("action 'odd': cannot tell what event <function")
        assert str(info.value).endswith(
            "(use a constraint string, a list of them, f(run, job), f(workflow, task_manager) or f())"
        )
        with pytest.raises(KeyError) as unknown:
            workflow.add_action("typo", task="cacl", event="state = FINISHED")
        assert "unknown study 'cacl' (did you mean 'calc'?)" in str(unknown.value)
        workflow.add_action("x", event="state = FINISHED")
        assert workflow.actions["x"].task == ALL


def test_event_decorator_keeps_the_function(wfdir):
    @event
    async def my_action(workflow, **params):
        return params["value"]

    import asyncio

    assert my_action.__name__ == "my_action"
    assert asyncio.run(my_action(None, value=3)) == 3


def test_error_handler_ends_the_workflow_with_an_error(wfdir):
    write_orchestrator(wfdir, """
    async def record(workflow, runs, **params):
        workflow.vars.handled = [(run.id, run.state, run.exit_code) for run, _ in runs]


    async def main(workflow, **params):
        workflow.add_error_handler(f=record)
        workflow.calc.createTask(x=[1.0, 2.0], mode="raise")
    """)
    with pytest.raises(WorkflowAborted) as info:
        run_file(wfdir / "orch.py", run_name="handled")
    assert info.value.exit_code == 1
    message = str(info.value)
    assert message.startswith("error handler fired for calc.")
    assert " FAILED (exit code 1): RuntimeError: calc cannot take x=" in message
    assert message.endswith(": the workflow ends (inspect failed runs with `motoko select 'state = FAILED'`)")
    with Workflow(wfdir, run_name="handled") as workflow:
        assert workflow.vars.handled[0][1:] == ("FAILED", 1)
    result = motoko("run", "--run-name", "cli", cwd=wfdir)  # motoko.yaml names the orchestrator
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("motoko: error: error handler fired for calc.")
    assert "RuntimeError: calc cannot take x=" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_exception_in_main_fails_the_workflow(wfdir):
    write_orchestrator(wfdir, """
    async def main(workflow, **params):
        workflow.calc.createTask(x=1.0)
        raise RuntimeError("main went wrong")
    """)
    with pytest.raises(RuntimeError, match="^main went wrong$"):
        run_file(wfdir / "orch.py", run_name="main-error")
    result = motoko("run", "orch.py", cwd=wfdir)
    assert result.returncode != 0
    assert "RuntimeError: main went wrong" in result.stderr


def test_an_exception_in_an_action_fails_the_workflow(wfdir):
    write_orchestrator(wfdir, """
    async def explode(workflow, runs, **params):
        raise ValueError(f"action failed on {len(runs)} run(s)")


    async def main(workflow, **params):
        workflow.add_action("explode", task="calc", event="state = FINISHED", f=explode)
        workflow.calc.createTask(x=1.0)
    """)
    with pytest.raises(ValueError, match=r"^action failed on 1 run\(s\)$"):
        run_file(wfdir / "orch.py", run_name="action-error")
    result = motoko("run", "orch.py", cwd=wfdir)
    assert result.returncode != 0
    assert "ValueError: action failed on 1 run(s)" in result.stderr


def test_finished_ends_the_event_loop_and_main_without_actions_returns(wfdir):
    write_orchestrator(wfdir, """
    async def main(workflow, **params):
        runs = await workflow.calc.createTask(x=[1.0, 2.0])
        workflow.vars.ys = [run.y for run, _ in runs]
    """)
    run_file(wfdir / "orch.py", run_name="plain-main")
    with Workflow(wfdir) as workflow:
        assert workflow.vars.ys == [2.0, 4.0]


def test_populate_arg_parser_receives_arguments_after_the_double_dash(wfdir):
    write_orchestrator(wfdir, """
    def populate_arg_parser(parser):
        parser.add_argument("--rescale", type=float, default=2.0)


    async def main(workflow, **params):
        runs = await workflow.calc.createTask(x=params["rescale"])
        workflow.vars.seen = {"params": params, "y": runs[0][0].y}
    """)
    run_file(wfdir / "orch.py", extra_args=["--rescale", "3"], run_name="args")
    with Workflow(wfdir) as workflow:
        assert workflow.vars.seen == {"params": {"rescale": 3.0}, "y": 6.0}
    result = motoko("run", "orch.py", "--", "--rescale", "5", cwd=wfdir)
    assert result.returncode == 0, result.stderr
    with Workflow(wfdir) as workflow:
        assert workflow.vars.seen == {"params": {"rescale": 5.0}, "y": 10.0}
    bad = motoko("run", "orch.py", "--", "--bogus", "5", cwd=wfdir)
    assert bad.returncode == 2
    assert bad.stderr.startswith("motoko: error: unknown workflow arguments: --bogus 5 (usage: ")
    assert len(bad.stderr.splitlines()) == 1


def test_execute_with_launcher_daemons_as_in_motoko_014(wfdir):
    write_orchestrator(wfdir, """
    async def main(workflow, **params):
        runs = await workflow.calc.createTask(x=[params.get("x", 0.0)])
        workflow.vars.executed = runs[0][0].y
    """)
    script = wfdir / "driver.py"
    script.write_text(textwrap.dedent("""
        from motoko.workflow import Workflow

        workflow = Workflow("motoko.yaml", run_name="execute")
        workflow.create(validated=True)
        workflow.start_launcher_daemons()
        workflow.start_launcher_daemons()  # idempotent
        workflow.execute(x=4.5)
        print(workflow.vars.executed)
        workflow.close()
    """))
    try:
        result = subprocess.run([sys.executable, str(script)], cwd=wfdir, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "9.0\n"
        status = motoko("launcher", "status", "--format", "json", cwd=wfdir)
        assert status.stdout.count('"pid"') == 1
    finally:
        stopped = motoko("launcher", "stop", "--timeout", "10", cwd=wfdir)
    assert stopped.stdout == "1 launcher(s) stopped\n"


def test_sync_waits_refuse_inside_main_and_actions(wfdir):
    # motoko's own loop runs main and the actions: blocking it would stall both.
    write_orchestrator(wfdir, """
    from motoko.errors import EventLoopError


    async def blocked(workflow, runs, **params):
        try:
            workflow.calc.select("x = 2").result(timeout=1)
        except EventLoopError as error:
            workflow.vars.in_action = str(error)
        workflow.finished = True


    async def main(workflow, **params):
        workflow.add_action("blocked", task="calc", event="state = FINISHED", f=blocked)
        rl = workflow.calc.createTask(x=1.0)
        try:
            rl.result(timeout=1)
        except EventLoopError as error:
            workflow.vars.in_main = str(error)
    """)
    run_file(wfdir / "orch.py", run_name="refuse")
    with Workflow(wfdir) as workflow:
        assert workflow.vars.in_main == (
            "rl.result() cannot block inside a running event loop (use `await rl.wait()` in async code)"
        )
        assert workflow.vars.in_action == (
            "selection.result() cannot block inside a running event loop (use `await selection.wait()` in async code)"
        )

"""A DAG of @step functions: dependencies, parameters, concurrency, graph output.

Workflow files run in-process through :func:`motoko.flow.runner.run_file`
(real server, real embedded launcher executing real subprocesses) or through
the real ``motoko`` command line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import networkx as nx
import pytest
from conftest import REPO, motoko, write_config, write_study

from motoko import Workflow
from motoko.cli.run_commands import KeyValue
from motoko.errors import WorkflowError
from motoko.flow.dag import build_graph, describe, steps_of
from motoko.flow.runner import load_workflow_file, run_file
from motoko.study.database import StudyDB

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 2
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.2}
"""

SLOW_DOIT = """\
import time

from motoko import current_run

run, job = current_run()
time.sleep(job.sleep)
run.y = 2 * job.x
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float, sleep: float}", SLOW_DOIT, extra="job_space: {sleep: 0.0}\n")
    write_config(workdir, ["calc"], FAST)
    return workdir


def write_flow(root: Path, body: str, name: str = "flow.py") -> Path:
    path = root / name
    path.write_text("from motoko import step\n\n" + textwrap.dedent(body))
    return path


def runs_in_db(root: Path) -> int:
    with Workflow(root, run_name="count") as workflow:
        return len(workflow.calc.runs)


# -- dependencies and results ---------------------------------------------------------------

DIAMOND = """
import time


@step
async def left(workflow, sleep=1.0):
    return await workflow.calc.createTask(x=1.0, sleep=sleep)


@step
async def right(workflow, sleep=1.0):
    return await workflow.calc.createTask(x=2.0, sleep=sleep)


@step
async def join(workflow, left, right):
    return sorted(run.y for runs in (left, right) for run, _ in runs)


@step(after="join")
async def last(workflow):
    return "after join"
"""


def test_steps_get_results_of_the_steps_their_parameters_name(wfdir):
    path = write_flow(wfdir, DIAMOND)
    graph = build_graph(load_workflow_file(path).steps)
    assert set(graph.edges) == {("left", "join"), ("right", "join"), ("join", "last")}
    outcome = run_file(path, {"sleep": 0.0}, run_name="diamond")
    assert outcome.run_name == "diamond"
    assert outcome.results["join"] == [2.0, 4.0]
    assert outcome.results["last"] == "after join"
    assert [run.id for run, _ in outcome.results["left"]] == [1]
    assert outcome.results["left"].ids == [1] and outcome.results["right"].ids == [2]


def test_independent_steps_run_concurrently_and_runs_record_their_step(wfdir):
    outcome = run_file(write_flow(wfdir, DIAMOND), {"sleep": 1.0}, run_name="overlap")
    assert outcome.results["join"] == [2.0, 4.0]
    with Workflow(wfdir, run_name="overlap") as workflow:
        a, b = workflow.calc.runs[1], workflow.calc.runs[2]
        # each run sleeps 1 s; the two steps' runs executed at the same time
        assert a.started < b.finished and b.started < a.finished
        assert (a.event_name, b.event_name) == ("left", "right")
        assert (a.run_name, b.run_name) == ("overlap", "overlap")


def test_after_orders_steps_without_passing_results(wfdir):
    path = write_flow(wfdir, """
    order = []


    @step
    async def first(workflow):
        order.append("first")
        return await workflow.calc.createTask(x=1.0)


    @step(after=["first"])
    async def second(workflow):
        order.append("second")
        return len(workflow.calc.select("state = FINISHED"))


    @step(after="second", name="third_step")
    async def third(workflow, first):
        order.append("third")
        return order
    """)
    outcome = run_file(path, run_name="after")
    assert outcome.results["second"] == 1
    assert outcome.results["third_step"] == ["first", "second", "third"]


def test_workflow_changes_commit_when_a_step_ends(wfdir):
    path = write_flow(wfdir, """
    from motoko.study.database import StudyDB


    @step
    async def make(workflow):
        return await workflow.calc.createTask(x=[1.0, 2.0])


    @step
    async def tag(workflow, make):
        for run, _ in make:
            run.state = "FORWARDED"
            run.dependencies = ["a", "b"]
        # no await after the change: the step's end commits it


    @step
    async def check(workflow, tag):
        with StudyDB(workflow.address_of("calc")) as other:
            return [(r.state, r.dependencies) for r in other.select("calc", "state = FORWARDED")]
    """)
    outcome = run_file(path, run_name="tags")
    assert outcome.results["check"] == [("FORWARDED", ["a", "b"]), ("FORWARDED", ["a", "b"])]


def test_a_failing_step_cancels_the_others_and_raises(wfdir):
    path = write_flow(wfdir, """
    import asyncio


    @step
    async def slow(workflow):
        await asyncio.sleep(30)


    @step
    async def broken(workflow):
        raise ValueError("broken step")


    @step
    async def never(workflow, slow, broken):
        return "ran"
    """)
    with pytest.raises(ValueError, match="^broken step$"):
        run_file(path, run_name="broken")


# -- load-time errors ---------------------------------------------------------------------------


def test_a_cycle_is_refused_at_load_time_naming_it(wfdir):
    path = write_flow(wfdir, """
    @step
    async def start(workflow):
        return await workflow.calc.createTask(x=1.0)


    @step
    async def a(workflow, start, c):
        return await workflow.calc.createTask(x=2.0)


    @step
    async def b(workflow, a):
        return await workflow.calc.createTask(x=3.0)


    @step
    async def c(workflow, b):
        return await workflow.calc.createTask(x=4.0)
    """)
    with pytest.raises(WorkflowError) as info:
        run_file(path, run_name="cycle")
    assert str(info.value) == f"{path}: the steps form a cycle: a → b → c → a (remove one of these dependencies)"
    assert not (wfdir / ".motoko").exists() or runs_in_db(wfdir) == 0  # nothing was created
    result = motoko("graph", str(path), cwd=wfdir)
    assert result.returncode == 2
    assert result.stderr == f"motoko: error: {path}: the steps form a cycle: a → b → c → a (remove one of these dependencies)\n"


def test_unknown_after_suggests_a_step(wfdir):
    path = write_flow(wfdir, """
    @step
    async def mult(workflow):
        pass


    @step(after="mutl")
    async def add(workflow):
        pass
    """)
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(path)
    assert str(info.value) == f"{path}: step 'add' runs after unknown step 'mutl' (did you mean 'mult'?)"


def test_missing_and_unknown_parameters_are_refused_before_running(wfdir):
    path = write_flow(wfdir, """
    @step
    async def scale(workflow, count, factor=2.0):
        return await workflow.calc.createTask(x=count * factor)
    """)
    with pytest.raises(WorkflowError) as missing:
        run_file(path, run_name="params")
    assert str(missing.value) == f"{path}: step 'scale' needs parameter 'count' (give it with -p count=VALUE)"
    with pytest.raises(WorkflowError) as unknown:
        run_file(path, {"count": 1, "facter": 3}, run_name="params")
    assert str(unknown.value) == f"{path}: no step takes parameter 'facter' (did you mean 'factor'?)"
    assert runs_in_db(wfdir) == 0
    outcome = run_file(path, {"count": 1.5, "factor": 3}, run_name="params")
    assert [run.y for run, _ in outcome.results["scale"]] == [9.0]


def test_a_step_must_be_async(wfdir):
    path = write_flow(wfdir, """
    @step
    def plain(workflow):
        pass
    """)
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(path)
    assert str(info.value) == f"{path.resolve()}:4: step 'plain' must be an async function (write `async def`)"


def test_a_file_without_steps_or_main_is_refused(wfdir):
    path = wfdir / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(path)
    assert str(info.value) == (
        f"{path}: the file declares no @step function and no main(workflow, **params) "
        "(decorate async functions with @motoko.step)"
    )


# -- parameters from the command line -------------------------------------------------------------


def test_param_values_are_parsed_as_yaml():
    convert = KeyValue().convert
    assert convert("coefficients=[1,2]", None, None) == ("coefficients", [1, 2])
    assert convert("x=1.5", None, None) == ("x", 1.5)
    assert convert("flag=true", None, None) == ("flag", True)
    assert convert("name=abc", None, None) == ("name", "abc")
    assert convert("opts={a: 1}", None, None) == ("opts", {"a": 1})
    assert convert("empty=", None, None) == ("empty", "")


def test_cli_passes_yaml_parameters_to_steps(wfdir):
    write_flow(wfdir, """
    @step
    async def show(workflow, coefficients, flag=False, label="none"):
        runs = await workflow.calc.createTask(x=list(coefficients))
        return {"y": [run.y for run, _ in runs], "flag": flag, "label": label}
    """)
    result = motoko("run", "flow.py", "-p", "coefficients=[1,2]", "-p", "flag=true", "-p", "label=abc", cwd=wfdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "show: {'y': [2.0, 4.0], 'flag': True, 'label': 'abc'}\n"
    bad = motoko("run", "flow.py", "-p", "coefficients", cwd=wfdir)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("motoko: error: Invalid value for '-p' / '--param': 'coefficients' is not name=value")
    assert len(bad.stderr.splitlines()) == 1


# -- the graph ------------------------------------------------------------------------------------------


PIPELINE = REPO / "workflows" / "pipeline.py"


def test_graph_of_the_example_pipeline_in_three_formats(workdir):
    text = motoko("graph", str(PIPELINE), cwd=workdir)
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout == "mult\nadd  ← mult\nnorm  ← add\nremult  ← norm\n"
    mermaid = motoko("graph", str(PIPELINE), "--format", "mermaid", cwd=workdir)
    assert mermaid.stdout == (
        "graph TD\n    mult[mult]\n    add[add]\n    norm[norm]\n    remult[remult]\n"
        "    mult --> add\n    add --> norm\n    norm --> remult\n"
    )
    dot = motoko("graph", str(PIPELINE), "--format", "dot", cwd=workdir)
    assert dot.stdout == (
        'digraph workflow {\n    rankdir=LR;\n    "mult";\n    "add";\n    "norm";\n    "remult";\n'
        '    "mult" -> "add";\n    "add" -> "norm";\n    "norm" -> "remult";\n}\n'
    )
    bad = motoko("graph", str(PIPELINE), "--format", "svg", cwd=workdir)
    assert bad.returncode == 2 and bad.stderr.startswith("motoko: error: Invalid value for '--format'")


def test_graph_of_a_diamond_lists_every_dependency(wfdir):
    path = write_flow(wfdir, DIAMOND)
    graph = build_graph(steps_of(vars(load_workflow_file(path).module)))
    assert nx.is_directed_acyclic_graph(graph)
    assert describe(graph, "text").splitlines()[-2:] == ["join  ← left, right", "last  ← join"]
    result = motoko("graph", "flow.py", "--format", "mermaid", cwd=wfdir)
    assert "    left --> join\n    right --> join\n    join --> last\n" in result.stdout


def test_graph_of_an_orchestrator_is_a_usage_error(workdir):
    result = motoko("graph", str(REPO / "workflows" / "orchestrator.py"), cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("motoko: error: ") and "declares no @step" in result.stderr
    assert "Traceback" not in result.stderr


def test_runs_stay_in_the_database_after_the_steps(wfdir):
    run_file(write_flow(wfdir, DIAMOND), {"sleep": 0.0}, run_name="kept")
    with Workflow(wfdir, run_name="kept") as workflow, StudyDB(workflow.address_of("calc")) as db:
        assert [(r.id, r.state, r.y) for r in db.select("calc", "run_name = kept")] == [
            (1, "FINISHED", 2.0),
            (2, "FINISHED", 4.0),
        ]

"""motoko 0.1.4's handle surface, against a real server and launcher.

``import motoko.task_manager``, ``RunList(pairs)`` and ``.runs``,
``createTask(run_params=..., commit=...)``, the TaskManager and TaskSelection
attributes 0.1.4 orchestrators read, ``TaskSelectionEval``, and the
RuntimeError of a workflow without a run name.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.errors import HandleError, RunNameMissing, WaitTimeout
from motoko.study.records import FINISHED

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 30
launcher: {executor: local, max_parallel: 2, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

DOIT = """\
from motoko import current_run

run, job = current_run()
run.y = 2 * job.x
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float}", DOIT, extra="run: {compiler: str}\nrun_params: {compiler: gcc}\n")
    write_study(workdir, "post", "{x: float}", DOIT)
    write_config(workdir, ["calc", "post"], FAST)
    return workdir


def test_the_task_manager_module_of_0_1_4():
    import motoko.task_manager as module
    from motoko.flow.compat import TaskSelectionEval
    from motoko.flow.futures import RunList, TaskSelection
    from motoko.flow.task_manager import TaskManager

    assert (module.RunList, module.TaskSelection, module.TaskSelectionEval, module.TaskManager) == (
        RunList, TaskSelection, TaskSelectionEval, TaskManager)


def test_runlist_of_pairs_is_awaitable_and_has_runs(wf, launcher):
    from motoko.task_manager import RunList

    created = wf.calc.createTask(x=[1.0, 2.0])
    pairs = wf.calc.select().exec()
    rl = RunList(pairs)
    assert (rl.study, rl.ids, rl.workflow) == ("calc", [1, 2], wf)
    assert [(run.id, job.x) for run, job in rl.runs] == [(1, 1.0), (2, 2.0)]
    assert [run.id for run in rl.runs()] == [1, 2]  # called: the runs alone
    assert RunList([run for run, _ in pairs]).ids == [1, 2]  # runs alone are accepted too

    async def orchestrator() -> list[float]:
        done = await RunList(pairs)
        empty = await RunList([])
        assert empty.ids == [] and empty.runs == []
        return [run.y for run, _ in done.runs]

    assert asyncio.run(orchestrator()) == [2.0, 4.0]
    assert created.status() == {FINISHED: 2}


def test_runlist_of_pairs_refuses_what_it_cannot_wait_on(wf):
    from motoko.task_manager import RunList

    wf.calc.createTask(x=1.0)
    wf.post.createTask(x=1.0)
    mixed = wf.calc.select().exec() + wf.post.select().exec()
    with pytest.raises(HandleError) as several:
        RunList(mixed)
    assert str(several.value) == "RunList(pairs) holds runs of one study; these are of calc, post (make one RunList per study)"
    with pytest.raises(HandleError) as wrong:
        RunList([("a", "b", "c")])
    assert str(wrong.value).startswith("RunList(pairs) takes (run, job) pairs or runs, got ('a', 'b', 'c')")


def test_create_task_with_run_params_and_commit(wf):
    rl = wf.calc.createTask(run_params={"compiler": "clang"}, commit=True, x=[1.0, 2.0])
    assert [(run.compiler, job.x) for run, job in rl] == [("clang", 1.0), ("clang", 2.0)]
    assert wf.calc.createTask(commit=False, x=3.0).run.compiler == "gcc"  # commit is not a job field


def test_task_manager_and_selection_attributes_of_0_1_4(wf, wfdir):
    tm = wf.calc
    assert tm.config == {"path": str(wfdir / "studies" / "calc")}
    assert tm.study_dir == str(wfdir / "studies" / "calc")
    assert tm.bd_dir == str(wfdir / "studies" / "calc" / "BD-calc-runs")
    config = tm.bd_config
    assert (config["study"], config["job"], config["run"], config["run_params"]) == (
        "calc", {"x": "float"}, {"compiler": "str"}, {"compiler": "gcc"})
    tm.createTask(x=[1.0, 2.0])
    assert [(run.id, job.x) for run, job in tm.selector.selectRuns(["x > 1"], quiet=True)] == [(2, 2.0)]
    selection = tm.select("x >= 1")
    assert selection.study == "calc" and selection.base is tm and selection.base.runs[1].id == 1
    assert [run.id for run, _ in selection.selector.selectRuns(selection.constraints)] == [1, 2]
    assert selection.matching_condition is None
    assert selection.all("x = 1")() is False
    (first, second) = selection.exec()
    assert selection.matching_condition(first) is True and selection.matching_condition(second) is False


def test_task_selection_eval_awaits_any_condition(wf, launcher):
    from motoko.task_manager import TaskSelectionEval

    wf.calc.createTask(x=[1.0, 2.0])
    done = wf.calc.select("state = FINISHED")
    both = TaskSelectionEval(lambda: len(done) == 2 and done.exec(), wf) & (lambda: wf.post.select().exec() or False)

    async def orchestrator() -> list[int]:
        assert both() is False
        await TaskSelectionEval(lambda: len(done) == 2 and done.exec(), wf)  # wakes on the change feed
        wf.post.createTask(x=5.0)
        pairs = await both
        return [run.id for run, _ in pairs]

    assert asyncio.run(orchestrator()) == [1, 2, 1]
    never = TaskSelectionEval(lambda: False)  # no workflow: a back-off poll
    with pytest.raises(WaitTimeout) as late:
        never.result(timeout=0.2)
    assert str(late.value) == "the condition did not hold within 0.2 s (wait longer, or inspect them with `motoko runs show ID`)"
    with pytest.raises(HandleError, match="cannot combine a condition with 3"):
        never & 3  # type: ignore[operator]


def test_create_task_without_a_run_name_is_a_runtime_error(wf):
    wf.run_name = None  # what a 0.1.4 orchestrator has before it names its run
    with pytest.raises(RuntimeError) as missing:
        wf.calc.createTask(x=1.0)
    assert isinstance(missing.value, RunNameMissing)
    assert str(missing.value) == (
        "cannot create a task in 'calc': the workflow's run_name is not set "
        "(set workflow.run_name = 'NAME' (or pass run_name= to Workflow) before createTask)"
    )
    assert len(wf.calc.runs) == 0  # nothing was written


ORCHESTRATOR_014 = """\
from motoko.task_manager import RunList, TaskSelectionEval


async def main(workflow):
    created = await workflow.calc.createTask(run_params={"compiler": "icc"}, commit=True, x=[1.0, 2.0])
    again = await RunList(created.runs)
    for run, job in again.runs:
        workflow.post.createTask(x=run.y)
    await workflow.post.select().all("state = FINISHED")
    workflow.finished = True
"""


def test_a_0_1_4_orchestrator_runs_unmodified(wfdir):
    with open(wfdir / "motoko.yaml", "a") as config:
        config.write("orchestrator: orchestrator.main\n")
    (wfdir / "orchestrator.py").write_text(ORCHESTRATOR_014)
    result = motoko("run", cwd=wfdir)
    assert result.returncode == 0, result.stderr
    listing = motoko("select", "--study", "post", "--format", "csv", "--fields", "x,state", cwd=wfdir).stdout.split()
    assert listing == ["study,x,state", "post,2,FINISHED", "post,4,FINISHED"]

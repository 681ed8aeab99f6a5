"""The example pipeline end to end through the real ``motoko`` command line.

Each test copies the repository's example (motoko.yaml, studies, workflows)
into a temporary directory, with fast poll settings, and runs ``motoko run``
in a subprocess; the numbers are checked against a hand computation.
"""

from __future__ import annotations

import ast
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import motoko

from motoko import Workflow
from motoko.study.database import StudyDB
from motoko.study.server import ensure_server

COEFFICIENTS = [0.342, -2.31]
X = [1.0, 2.0, 3.0]
TARGET = [3.3, 2.34, 0.148]

FAST = "\npoll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 1\n"


def flat(rows) -> list[float]:
    """pytest.approx compares flat sequences only."""
    return [value for row in rows for value in row]


def hand_computation(coefficients=COEFFICIENTS, rescale=2.0):
    """mult → add → norm → mult, by hand: [[rescale·squared, rescale·l2] per coefficient]."""
    out = []
    for a in coefficients:
        added = [a * x + 0.56 for x in X]
        squared = sum((v - t) ** 2 for v, t in zip(added, TARGET, strict=True))
        out.append([rescale * squared, rescale * math.sqrt(squared)])
    return out


@pytest.fixture
def ex(example: Path) -> Path:
    with open(example / "motoko.yaml", "a") as config:
        config.write(FAST)
    return example


#: The first command in a fresh directory starts its database server, and says so.
STARTED = (r"motoko: started the database server zeo://\S+ \(pid \d+\); it stops by itself after 30 min without a client; "
           r"stop it now with `motoko -C \S+ server stop`\n")


def result_line(stdout: str, name: str):
    for line in stdout.splitlines():
        if line.startswith(f"{name}: "):
            return ast.literal_eval(line[len(name) + 2:])
    raise AssertionError(f"no {name!r} line in {stdout!r}")


def run_ids(root: Path, run_name: str | None = None) -> dict[str, list[int]]:
    """Run ids per study (of one run name, or all)."""
    with Workflow(root, run_name=run_name) as workflow:
        return {name: [r.id for r in tm.select(run_name=run_name).runs()] for name, tm in workflow.task_managers.items()}


def final_products(root: Path, run_name: str, event_name: str) -> list[list[float]]:
    with Workflow(root, run_name=run_name) as workflow:
        return sorted(run.y for run, _ in workflow.mult.select([f"event_name = {event_name}", "state = FINISHED"]))


def assert_user_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"motoko: error: {message}\n"
    assert result.stdout == ""


# -- the steps pipeline ---------------------------------------------------------------------------


def test_pipeline_runs_end_to_end_and_matches_a_hand_computation(ex):
    result = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert flat(result_line(result.stdout, "remult")) == pytest.approx(flat(hand_computation()))
    assert re.fullmatch(STARTED + r"workflow workflows/pipeline.py finished \(run name pipeline\) in \d+\.\d\d s\n", result.stderr)
    assert flat(final_products(ex, "pipeline", "remult")) == pytest.approx(flat(sorted(hand_computation())))
    with Workflow(ex, run_name="pipeline") as workflow:
        first = [run for run, _ in workflow.mult.select("event_name = mult")]
        assert flat(run.y for run in first) == pytest.approx(flat([a * x for x in X] for a in COEFFICIENTS))
        assert [run.job.a for run in first] == COEFFICIENTS
        adds = [run for run, _ in workflow.add.select()]
        assert flat(sorted(run.y for run in adds)) == pytest.approx(flat(sorted([a * x + 0.56 for x in X] for a in COEFFICIENTS)))
        assert {run.parents for run in adds} == {(("mult", first[0].id),), (("mult", first[1].id),)}
        norms = [run for run, _ in workflow.norm.select()]
        assert flat(sorted(run.y for run in norms)) == pytest.approx(flat(sorted([s / 2, l2 / 2] for s, l2 in hand_computation())))
        quantity = first[0].getQuantity("y")
        assert list(quantity.columns) == ["step", "y[0]", "y[1]", "y[2]"]
        assert quantity.iloc[0].tolist() == pytest.approx([0, 0.342, 0.684, 1.026])


def test_a_second_run_resumes_and_fresh_starts_anew(ex):
    first = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert first.returncode == 0, first.stderr
    ids = run_ids(ex, "pipeline")
    assert {name: len(v) for name, v in ids.items()} == {"mult": 4, "add": 2, "norm": 2}
    with Workflow(ex) as workflow:
        finished_at = {r.id: r.finished for r in workflow.mult.select(run_name=None).runs()}

    again = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert again.returncode == 0, again.stderr
    assert "(run name pipeline)" in again.stderr
    assert flat(result_line(again.stdout, "remult")) == pytest.approx(flat(hand_computation()))
    assert run_ids(ex) == ids  # no new run anywhere
    with Workflow(ex) as workflow:  # finished runs were reused, not executed again
        assert {r.id: r.finished for r in workflow.mult.select(run_name=None).runs()} == finished_at

    fresh = motoko("run", "workflows/pipeline.py", "--fresh", cwd=ex)
    assert fresh.returncode == 0, fresh.stderr
    name = re.search(r"\(run name (pipeline-\d{8}-\d{6})\)", fresh.stderr).group(1)
    fresh_ids = run_ids(ex, name)
    assert {k: len(v) for k, v in fresh_ids.items()} == {"mult": 4, "add": 2, "norm": 2}
    assert not set(fresh_ids["mult"]) & set(ids["mult"])
    assert flat(result_line(fresh.stdout, "remult")) == pytest.approx(flat(hand_computation()))
    # the fresh run name is now the file's current one: running again resumes it
    third = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert f"(run name {name})" in third.stderr
    assert {k: len(v) for k, v in run_ids(ex).items()} == {"mult": 8, "add": 4, "norm": 4}


def test_parameters_from_the_command_line(ex):
    result = motoko("run", "workflows/pipeline.py", "-p", "coefficients=[1,2]", "-p", "rescale=3", "-n", "params", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert flat(result_line(result.stdout, "remult")) == pytest.approx(flat(hand_computation([1.0, 2.0], 3.0)))
    assert "(run name params)" in result.stderr


def test_a_failing_run_exits_1_naming_it(ex):
    doit = ex / "studies" / "add" / "doIt.py"
    doit.write_text(doit.read_text().replace(
        "run, job = current_run()\n",
        "run, job = current_run()\nif job.x[0] < 0:\n    raise RuntimeError('negative input')\n",
    ))
    result = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert result.returncode == 1
    assert result.stdout == ""
    assert re.fullmatch(
        STARTED + r"motoko: error: (\d) runs? failed: (add\.\d) FAILED \(exit code 1\): RuntimeError: negative input.* "
        r"\(see the run's stderr with `motoko runs tail (add\.\d) --file stderr`\)\n",
        result.stderr,
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_bad_input_exits_2_with_one_line_and_no_traceback(ex):
    pipeline = ex / "workflows" / "pipeline.py"
    assert_user_error(
        motoko("run", "workflows/pipeline.py", "-p", "coefficients", cwd=ex),
        "Invalid value for '-p' / '--param': 'coefficients' is not name=value (e.g. -p x=1.5) (see `motoko run --help`)",
    )
    assert_user_error(
        motoko("run", "workflows/pipeline.py", "-p", "coefficients=[1,2", cwd=ex),
        "Invalid value for '-p' / '--param': the value of 'coefficients' is not valid YAML at column 5: "
        "expected ',' or ']', but got '<stream end>' (see `motoko run --help`)",
    )
    assert_user_error(
        motoko("run", "workflows/pipeline.py", "-p", "rescal=3", cwd=ex),
        f"{pipeline}: no step takes parameter 'rescal' (did you mean 'rescale'?)",
    )
    assert_user_error(
        motoko("run", "workflows/pipeline.py", "-p", "rescale=3", "-p", "rescale=4", cwd=ex),
        "parameter 'rescale' given twice (give each -p once)",
    )
    assert_user_error(
        motoko("run", "workflows/nope.py", cwd=ex),
        f"workflow file {ex / 'workflows' / 'nope.py'} does not exist (give the path of a .py file)",
    )
    cycle = ex / "workflows" / "cycle.py"
    cycle.write_text(pipeline.read_text().replace("async def mult(workflow, coefficients", "async def mult(workflow, remult, coefficients"))
    assert_user_error(
        motoko("run", "workflows/cycle.py", cwd=ex),
        f"{cycle}: the steps form a cycle: mult → add → norm → remult → mult (remove one of these dependencies)",
    )
    assert not (ex / ".motoko").exists()  # nothing was started or written


# -- the 0.1.4 orchestrator --------------------------------------------------------------------------


def test_orchestrator_gives_the_same_numbers(ex):
    result = motoko("run", "workflows/orchestrator.py", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert "(run name orchestrator)" in result.stderr
    assert flat(final_products(ex, "orchestrator", "forward_norm")) == pytest.approx(flat(sorted(hand_computation())))
    with Workflow(ex, run_name="orchestrator") as workflow:
        assert len(workflow.mult.select("event_name = main")) == 2
        assert len(workflow.mult.select("state = FORWARDED")) == 2  # forwarded by the actions
        assert len(workflow.add.select("state = FORWARDED")) == 2
        for run, _ in workflow.norm.select():
            (study, rid), = run.parents
            assert study == "add" and workflow.add.runs[rid].state == "FORWARDED"


def test_orchestrator_from_motoko_yaml_with_arguments(ex):
    result = motoko("run", "--run-name", "rescaled", "--", "--rescale", "3", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert "workflow " in result.stderr and "orchestrator.py finished (run name rescaled)" in result.stderr
    assert flat(final_products(ex, "rescaled", "forward_norm")) == pytest.approx(flat(sorted(hand_computation(rescale=3.0))))


# -- interruptions ----------------------------------------------------------------------------------


def start_pipeline(root: Path, file: str = "pipeline") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "run", f"workflows/{file}.py"],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def wait_for_running_adds(root: Path, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    """Wait until the add runs execute (the pipeline is mid-way)."""
    db = StudyDB(ensure_server(root))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            db.abort()
            if "add" in db.studies() and [r.state for r in db.study("add").runs.values()] == ["RUNNING", "RUNNING"]:
                return
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        raise AssertionError("the add runs never started")
    finally:
        db.close()


def slow_add(root: Path) -> Path:
    """Make each add run last 1.5 s; return the file each execution appends a line to."""
    executions = root / "add-executions.log"
    doit = root / "studies" / "add" / "doIt.py"
    doit.write_text(doit.read_text().replace(
        "run, job = current_run()\n",
        "run, job = current_run()\nimport time\n"
        f"with open({str(executions)!r}, 'a') as log:\n    log.write(f'{{run.id}}\\n')\n"
        "time.sleep(1.5)\n",
    ))
    return executions


@pytest.mark.parametrize("file", ["pipeline", "orchestrator"])
def test_resume_after_the_workflow_process_is_killed(ex, file):
    """The add runs outlive their killed launcher: the resumed workflow's launcher adopts them."""
    executions = slow_add(ex)
    ensure_server(ex)
    proc = start_pipeline(ex, file)
    wait_for_running_adds(ex, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # motoko run and its embedded launcher die at once
    proc.communicate()
    with Workflow(ex) as workflow:
        mult_ids = [r.id for r in workflow.mult.select(run_name=None).runs()]
        finished_at = {r.id: r.finished for r in workflow.mult.select(run_name=None).runs()}
        assert mult_ids == [1, 2]

    again = motoko("run", f"workflows/{file}.py", cwd=ex, timeout=60)
    assert again.returncode == 0, again.stderr
    last_step = {"pipeline": "remult", "orchestrator": "forward_norm"}[file]
    assert flat(final_products(ex, file, last_step)) == pytest.approx(flat(sorted(hand_computation())))
    assert {k: len(v) for k, v in run_ids(ex).items()} == {"mult": 4, "add": 2, "norm": 2}  # no duplicates
    with Workflow(ex) as workflow:
        first_step = {"pipeline": "mult", "orchestrator": "main"}[file]
        first = {r.id: r for r in workflow.mult.select(f"event_name = {first_step}", run_name=file).runs()}
        assert sorted(first) == mult_ids
        assert {rid: r.finished for rid, r in first.items()} == finished_at  # reused, not redone
        assert all(r.attempt == 1 for r in first.values())
        # the interrupted add runs kept executing, were adopted, and were not executed again
        adds = workflow.add.select(run_name=file).runs()
        assert [(r.state in ("FINISHED", "FORWARDED"), r.attempt) for r in adds] == [(True, 1), (True, 1)]
        assert all("LOST" not in [h["state"] for h in r.history] for r in adds)
        assert sorted(executions.read_text().split()) == ["1", "2"]


def test_resume_after_ctrl_c_cancelled_the_unfinished_runs(ex):
    slow_add(ex)
    ensure_server(ex)
    proc = start_pipeline(ex)
    wait_for_running_adds(ex, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "interrupted: cancelled 2 unfinished run(s) of pipeline" in stderr
    with Workflow(ex) as workflow:
        assert [r.state for r in workflow.add.select(run_name=None).runs()] == ["CANCELLED", "CANCELLED"]
        assert [r.state for r in workflow.mult.select(run_name=None).runs()] == ["FINISHED", "FINISHED"]

    again = motoko("run", "workflows/pipeline.py", cwd=ex, timeout=60)
    assert again.returncode == 0, again.stderr
    assert flat(result_line(again.stdout, "remult")) == pytest.approx(flat(hand_computation()))
    assert {k: len(v) for k, v in run_ids(ex).items()} == {"mult": 4, "add": 2, "norm": 2}
    with Workflow(ex) as workflow:  # the cancelled runs were executed again
        assert [(r.state, r.attempt, r.history[-1]["state"]) for r in workflow.add.select(run_name=None).runs()] == [
            ("FINISHED", 2, "CANCELLED"),
            ("FINISHED", 2, "CANCELLED"),
        ]

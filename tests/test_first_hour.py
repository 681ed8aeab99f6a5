"""What a newcomer sees in the first hour, asserted as text, through the real CLI.

Every test runs the real ``motoko`` command in a subprocess (stdout and
stderr are then pipes, not a terminal: what a batch job, ``nohup`` or CI
sees) against a real ZEO server in a temporary workflow directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 5
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

CALC_DOIT = """\
import time

from motoko import current_run

run, job = current_run()
run.set_progress(0.5)
time.sleep(job.sleep)
if job.x > 1.5:
    raise ValueError(f"x was {job.x}")
run.y = 2 * job.x
run.set_progress(1.0)
"""

FAILING = """\
from motoko import step


@step
async def calc(workflow):
    return await workflow.calc.createTask(x=[1.0, 2.0, 3.0, 4.0], sleep=[0.0])
"""


@pytest.fixture
def calc_dir(workdir: Path) -> Path:
    """A workflow with one study ``calc`` (x > 1.5 fails) and fast polls."""
    write_study(workdir, "calc", "{x: float, sleep: float}", CALC_DOIT, extra="job_space: {sleep: 0.0}\n")
    write_config(workdir, ["calc"], FAST)
    (workdir / "workflows").mkdir()
    return workdir


# -- the failure summary -------------------------------------------------------------------


def test_the_failure_summary_counts_every_failed_run_and_names_a_real_one(calc_dir: Path):
    (calc_dir / "workflows" / "failing.py").write_text(FAILING)
    result = motoko("run", "workflows/failing.py", cwd=calc_dir)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"motoko: error: 3 runs failed: calc\.(\d) FAILED \(exit code 1\): ValueError: x was 2\.0; "
        r"calc\.\d FAILED \(exit code 1\): ValueError: x was 3\.0; calc\.\d FAILED \(exit code 1\): ValueError: x was 4\.0 "
        r"\(see the run's stderr with `motoko runs tail (calc\.\d) --file stderr`\)",
        last,
    )
    assert match, last
    assert f"calc.{match.group(1)}" == match.group(2)
    tail = motoko("runs", "tail", match.group(2), "--file", "stderr", cwd=calc_dir)
    assert tail.returncode == 0, tail.stderr
    assert "ValueError: x was 2.0" in tail.stdout


# -- misspelt states -----------------------------------------------------------------------


def test_a_misspelt_state_warns_with_a_did_you_mean(calc_dir: Path):
    (calc_dir / "workflows" / "failing.py").write_text(FAILING)
    assert motoko("run", "workflows/failing.py", cwd=calc_dir).returncode == 1
    result = motoko("select", "state = FINISHD", cwd=calc_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "calc: 0 run(s)\n"
    assert result.stderr == "motoko: warning: no run is in state 'FINISHD' (did you mean 'FINISHED'?)\n"
    result = motoko("select", "state in (failed, FINISHED), x < 1.5", "--format", "csv", cwd=calc_dir)
    assert result.stderr == "motoko: warning: no run is in state 'failed' (did you mean 'FAILED'?)\n"
    assert len(result.stdout.splitlines()) == 2  # the header and calc.1
    # Right states, and a workflow's own state far from any other, pass silently.
    for constraint in ("state = FINISHED", "state != LOST", "state = FORWARDED", "state ~ FINI"):
        result = motoko("select", constraint, cwd=calc_dir)
        assert (result.returncode, result.stderr) == (0, ""), constraint


# -- errors in workflow code -----------------------------------------------------------------

TYPO = """\
from motoko import step


@step
async def calc(workflow):
    return await workflow.clac.createTask(x=[1.0])
"""

BAD_CONSTRAINT = """\
from motoko import step


@step
async def calc(workflow):
    await workflow.calc.createTask(x=[1.0])
    return await workflow.calc.select("x >")
"""


def test_a_typo_in_workflow_code_is_one_line_naming_file_and_line_exit_2(calc_dir: Path):
    path = calc_dir / "workflows" / "typo.py"
    path.write_text(TYPO)
    result = motoko("run", "workflows/typo.py", cwd=calc_dir)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"motoko: error: {path}:6: workflow has no study or attribute 'clac' (did you mean 'calc'?)\n"
    )
    debug = motoko("--debug", "run", "workflows/typo.py", cwd=calc_dir)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert f'File "{path}", line 6, in calc' in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == (
        f"motoko.errors.UnknownAttributeError: {path}:6: workflow has no study or attribute 'clac' (did you mean 'calc'?)"
    )


def test_a_bad_constraint_in_workflow_code_keeps_its_column(calc_dir: Path):
    path = calc_dir / "workflows" / "bad.py"
    path.write_text(BAD_CONSTRAINT)
    result = motoko("run", "workflows/bad.py", cwd=calc_dir)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"motoko: error: {path}:7, constraint 'x >', column 4: expected a value after '>'"
    )


def test_unknown_attribute_error_is_an_attribute_error_with_a_did_you_mean():
    from motoko.errors import UnknownAttributeError

    error = UnknownAttributeError("workflow has no study or attribute 'slo'", "slo", hint="did you mean 'slow'?")
    assert str(error) == "workflow has no study or attribute 'slo' (did you mean 'slow'?)"
    assert isinstance(error, AttributeError) and error.name == "slo" and error.exit_code == 2

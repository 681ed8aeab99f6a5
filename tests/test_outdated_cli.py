"""Outdated runs, dry runs and reruns on the example pipeline, through the real command line.

The pipeline is mult → add → norm → mult (remult). Editing a study's doIt.py
after a run makes its finished runs outdated, and every run descending from
them. These tests run ``motoko run`` / ``motoko rerun`` in subprocesses with
real ZEO servers and launchers, and compare the database before and after.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import motoko

from motoko import Workflow
from motoko.study.database import StudyDB
from motoko.study.server import ensure_server
from motoko.views.web.api import overview

COEFFICIENTS = [0.342, -2.31]
X = [1.0, 2.0, 3.0]
TARGET = [3.3, 2.34, 0.148]
FAST = "\npoll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 1\n"


def expected(mult=1.0, add=0.56):
    """remult's result by hand when mult computes ``mult · a · x`` and add ``x + add``."""
    out = []
    for a in COEFFICIENTS:
        added = [mult * a * x + add for x in X]
        squared = sum((v - t) ** 2 for v, t in zip(added, TARGET, strict=True))
        out.append([mult * 2.0 * squared, mult * 2.0 * math.sqrt(squared)])
    return [v for row in out for v in row]


def remult(stdout: str) -> list[float]:
    for line in stdout.splitlines():
        if line.startswith("remult: "):
            return [v for row in ast.literal_eval(line[len("remult: "):]) for v in row]
    raise AssertionError(f"no remult line in {stdout!r}")


@pytest.fixture
def ex(example: Path) -> Path:
    with open(example / "motoko.yaml", "a") as config:
        config.write(FAST)
    first = motoko("run", "workflows/pipeline.py", cwd=example)
    assert first.returncode == 0, first.stderr
    assert remult(first.stdout) == pytest.approx(expected())
    return example


def edit(root: Path, study: str, old: str, new: str) -> None:
    doit = root / "studies" / study / "doIt.py"
    text = doit.read_text()
    assert old in text
    doit.write_text(text.replace(old, new))


def ten_times_mult(root: Path) -> None:
    edit(root, "mult", "job.a * value", "10 * job.a * value")


def last_transaction(root: Path) -> bytes:
    """The id of the database's last committed transaction: equal before and after means nothing was written."""
    db = StudyDB(ensure_server(root))
    try:
        return bytes(db.db.storage.lastTransaction())
    finally:
        db.close()


def snapshot(root: Path) -> dict[str, dict[int, tuple[str, int, object]]]:
    """Per study, run id → (state, attempt, finished)."""
    with Workflow(root, run_name="pipeline", create=False) as workflow:
        return {
            name: {r.id: (r.state, r.attempt, r.finished) for r in tm.select(run_name=None).runs()}
            for name, tm in workflow.task_managers.items()
        }


def assert_user_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"motoko: error: {message}\n"
    assert result.stdout == ""


OUTDATED_MULT = (
    "8 finished run(s) of pipeline are outdated: studies/mult/doIt.py changed (4 of mult; "
    "4 descending from them: 2 of add, 2 of norm) (give --rerun-outdated to run them again, "
    "--keep-outdated to reuse them, or set `resume: {outdated: rerun}` in motoko.yaml)"
)


# -- fingerprints ----------------------------------------------------------------------------------


def test_each_run_records_its_studys_fingerprint_and_runs_show_displays_it(ex):
    with Workflow(ex, run_name="pipeline") as workflow:
        run = workflow.mult.runs[1]
        assert set(run.fingerprint["files"]) == {"bd.yaml", "launch.sh", "doIt.py"}
        assert run.fingerprint["motoko"] == "0.2.0.dev0"
        digest = run.fingerprint["digest"]
    shown = motoko("runs", "show", "mult.1", cwd=ex)
    assert shown.returncode == 0, shown.stderr
    assert f"fingerprint       {digest} (motoko 0.2.0.dev0)" in shown.stdout
    assert "doIt.py  sha256:" in shown.stdout


# -- resuming with outdated runs -----------------------------------------------------------------


def test_an_edited_study_stops_a_non_terminal_run_before_anything_is_written(ex):
    ten_times_mult(ex)
    before, runs = last_transaction(ex), snapshot(ex)
    result = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert_user_error(result, OUTDATED_MULT)
    # in the background too: said now, not in a log later
    assert_user_error(motoko("run", "workflows/pipeline.py", "--detach", cwd=ex), OUTDATED_MULT)
    assert last_transaction(ex) == before
    assert snapshot(ex) == runs


def test_rerun_outdated_gives_the_new_result_and_reruns_exactly_the_outdated_runs(ex):
    ten_times_mult(ex)
    before = snapshot(ex)
    result = motoko("run", "workflows/pipeline.py", "--rerun-outdated", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert remult(result.stdout) == pytest.approx(expected(mult=10.0))
    after = snapshot(ex)
    # The two first mult runs ran again as attempt 2; everything below them had
    # new inputs, so the workflow created new runs: 2 + 6 = the 8 outdated runs.
    again = [(s, i) for s, runs in after.items() for i, (_, attempt, _) in runs.items() if attempt == 2]
    new = [(s, i) for s, runs in after.items() for i in runs if i not in before[s]]
    assert again == [("mult", 1), ("mult", 2)]
    assert sorted(s for s, _ in new) == ["add", "add", "mult", "mult", "norm", "norm"]
    assert len(again) + len(new) == 8
    with Workflow(ex, run_name="pipeline") as workflow:
        first = workflow.mult.runs[1]
        assert first.y == pytest.approx([3.42, 6.84, 10.26])
        previous = first.history[-1]
        assert previous["reason"] == "rerun: studies/mult/doIt.py changed"
        assert previous["results"]["y"] == pytest.approx([0.342, 0.684, 1.026])  # the old result is kept
        assert previous["state"] == "FINISHED"
        # the old runs below them were not asked for again: superseded, never reused silently
        assert workflow.add.runs[1].superseded and workflow.add.runs[1].attempt == 1
    # an unchanged study reruns nothing
    still = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert still.returncode == 0, still.stderr
    assert remult(still.stdout) == pytest.approx(expected(mult=10.0))
    assert snapshot(ex) == after


def test_rerun_outdated_below_the_first_step_leaves_the_first_step_alone(ex):
    edit(ex, "add", "value + job.b", "value + job.b + 1.0")
    before = snapshot(ex)
    stopped = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert stopped.returncode == 2
    assert "6 finished run(s) of pipeline are outdated: studies/add/doIt.py changed (2 of add; " in stopped.stderr
    result = motoko("run", "workflows/pipeline.py", "--rerun-outdated", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert remult(result.stdout) == pytest.approx(expected(add=1.56))
    after = snapshot(ex)
    assert {i: after["mult"][i] for i in (1, 2)} == {i: before["mult"][i] for i in (1, 2)}  # not rerun
    assert [i for i, (_, attempt, _) in after["add"].items() if attempt == 2] == [1, 2]
    new = [(s, i) for s, runs in after.items() for i in runs if i not in before[s]]
    assert sorted(s for s, _ in new) == ["mult", "mult", "norm", "norm"]  # 2 + 4 = the 6 outdated runs


def test_a_failed_run_executed_again_after_a_fix_is_not_outdated(ex):
    edit(ex, "add", "run, job = current_run()\n", "run, job = current_run()\nif job.x[0] < 0:\n    raise RuntimeError('negative')\n")
    failed = motoko("run", "workflows/pipeline.py", "--rerun-outdated", cwd=ex)
    assert failed.returncode == 1, failed.stderr
    edit(ex, "add", "if job.x[0] < 0:\n    raise RuntimeError('negative')\n", "")
    # the add run that finished with the broken file is outdated; the failed one is executed again
    fixed = motoko("run", "workflows/pipeline.py", "--keep-outdated", cwd=ex)
    assert fixed.returncode == 0, fixed.stderr
    assert remult(fixed.stdout) == pytest.approx(expected())
    again = motoko("run", "workflows/pipeline.py", cwd=ex)  # nothing outdated is left
    assert again.returncode == 0, again.stderr


def test_keep_outdated_reuses_the_old_result_and_records_it(ex):
    ten_times_mult(ex)
    before = snapshot(ex)
    result = motoko("run", "workflows/pipeline.py", "--keep-outdated", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert remult(result.stdout) == pytest.approx(expected())  # the old result
    assert snapshot(ex) == before
    with Workflow(ex, run_name="pipeline") as workflow:
        kept = [r.id for r in workflow.mult.select(run_name=None).runs() if r.outdated_kept]
        assert kept == [1, 2, 3, 4]
    # kept runs are not asked about again for the same files, but status marks them
    again = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert again.returncode == 0, again.stderr
    status = motoko("status", cwd=ex)
    assert "4 run(s) of pipeline reused although outdated (--keep-outdated): 4 of mult" in status.stdout
    # a further change makes them outdated again
    edit(ex, "mult", "10 * job.a", "100 * job.a")
    assert motoko("run", "workflows/pipeline.py", cwd=ex).returncode == 2


def test_motoko_yaml_resume_rerun_and_status_marks_outdated_runs(ex):
    ten_times_mult(ex)
    status = motoko("status", "--format", "json", cwd=ex)
    outdated = json.loads(status.stdout)["outdated"]
    assert [(o["run_name"], o["total"], o["files"]) for o in outdated] == [("pipeline", 8, ["studies/mult/doIt.py"])]
    assert sorted(outdated[0]["runs"]) == ["add.1", "add.2", "mult.1", "mult.2", "mult.3", "mult.4", "norm.1", "norm.2"]
    text = motoko("status", cwd=ex).stdout
    assert "outdated (motoko run asks before reusing them)" in text
    with Workflow(ex, run_name="pipeline") as workflow:  # what the dashboard shows
        assert [o["total"] for o in overview(workflow)["outdated"]] == [8]
    with open(ex / "motoko.yaml", "a") as config:
        config.write("resume: {outdated: rerun}\n")
    result = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert remult(result.stdout) == pytest.approx(expected(mult=10.0))
    assert json.loads(motoko("status", "--format", "json", cwd=ex).stdout)["outdated"] == []


def test_status_counts_the_outdated_runs_of_a_run_name_too_big_to_read(ex, monkeypatch):
    from motoko.flow.outdated import OutdatedCount, run_name_size
    from motoko.views import status as status_view

    ten_times_mult(ex)
    with Workflow(ex, run_name="pipeline") as workflow:
        size = run_name_size(workflow, "pipeline", 1000)
        assert size >= 8 and run_name_size(workflow, "pipeline", 3) == 4, "counting stops past the limit"
        assert [r.total for r in status_view.collect_status(workflow).outdated] == [8]
        monkeypatch.setattr(status_view, "OUTDATED_CHECK_LIMIT", size - 1)
        before = last_transaction(ex)
        status = status_view.collect_status(workflow)
        assert last_transaction(ex) == before, "reading wrote nothing"
    # counted, not read: mult's 4 runs whose doIt.py changed; their descendants are not counted
    assert [(type(r), r.total, r.direct) for r in status.outdated] == [(OutdatedCount, 4, {"mult": 4})]
    assert status.outdated[0].summary() == (
        "4 finished run(s) of pipeline are outdated: files of studies/mult changed (4 of mult; runs "
        "descending from them not counted: `motoko run FILE --dry-run` lists them)"
    )
    assert not any("not checked" in note for note in status.notes)
    assert status_view.to_json(status)["outdated"][0]["total"] == 4


def test_status_of_studies_made_before_the_counts_leaves_a_big_run_name_to_the_dry_run(ex, monkeypatch):
    from motoko.views import status as status_view

    ten_times_mult(ex)
    with Workflow(ex, run_name="pipeline") as workflow:
        for name in ("mult", "add", "norm"):  # as stored by a motoko without the counts
            db = workflow.db_for(name)
            db.transact(lambda db=db, name=name: delattr(db.study(name), "outdated_counts"))
        assert [r.total for r in status_view.collect_status(workflow).outdated] == [8], "small: read whole"
        monkeypatch.setattr(status_view, "OUTDATED_CHECK_LIMIT", 3)
        status = status_view.collect_status(workflow)
    assert status.outdated == []
    assert "outdated runs of pipeline not checked: it holds more than 3 runs" in " ".join(status.notes)


def test_status_reads_no_run_when_the_counts_say_nothing_is_outdated(ex, monkeypatch):
    from motoko.flow import outdated
    from motoko.views import status as status_view

    def must_not_read(*args, **kwargs):
        raise AssertionError("status read the runs although the counts said nothing is outdated")

    monkeypatch.setattr(outdated, "find_outdated", must_not_read)
    with Workflow(ex, run_name="pipeline") as workflow:
        status = status_view.collect_status(workflow)
    assert status.outdated == [] and not any("not checked" in note for note in status.notes)


def test_on_a_terminal_motoko_run_lists_the_outdated_runs_and_asks(ex):
    ten_times_mult(ex)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "run", "workflows/pipeline.py"],
            cwd=ex, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        os.write(master, b"y\n")
        out, err = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err
    assert "studies/mult/doIt.py changed" in err
    assert "  mult: 4 run(s) outdated: 1, 2, 3, 4" in err
    assert "  add: 2 run(s) descending from them: 1, 2" in err
    assert "Run them (and their descendants) again? [Y/n]" in err
    assert remult(out) == pytest.approx(expected(mult=10.0))


def test_conflicting_options_and_a_bad_resume_setting_are_one_line_errors(ex):
    ten_times_mult(ex)
    before = last_transaction(ex)
    assert_user_error(
        motoko("run", "workflows/pipeline.py", "--rerun-outdated", "--keep-outdated", cwd=ex),
        "give --rerun-outdated or --keep-outdated, not both (see `motoko run --help`)",
    )
    with open(ex / "motoko.yaml", "a") as config:
        config.write("resume: {outdated: always}\n")
    line = len((ex / "motoko.yaml").read_text().splitlines())
    assert_user_error(
        motoko("run", "workflows/pipeline.py", cwd=ex),
        f"{ex / 'motoko.yaml'}:{line}: resume outdated must be one of ask, rerun, keep, got 'always' "
        "(ask: ask on a terminal, stop otherwise; rerun: run them again; keep: reuse them)",
    )
    assert last_transaction(ex) == before


# -- dry runs ------------------------------------------------------------------------------------------


def test_dry_run_says_what_would_happen_and_changes_nothing(ex):
    unchanged = motoko("run", "workflows/pipeline.py", "--dry-run", cwd=ex)
    assert unchanged.returncode == 0, unchanged.stderr
    assert unchanged.stdout.splitlines() == [
        "dry run of workflows/pipeline.py (run name pipeline); nothing was changed",
        "step mult: mult: 2 run(s) reused",
        "step add: add: 2 run(s) reused",
        "step norm: norm: 2 run(s) reused",
        "step remult: mult: 2 run(s) reused",
    ]
    ten_times_mult(ex)
    before, runs = last_transaction(ex), snapshot(ex)
    rerun = motoko("run", "workflows/pipeline.py", "--dry-run", "--rerun-outdated", cwd=ex)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[1:] == [
        OUTDATED_MULT.split(" (give")[0],
        "step mult: mult: 2 run(s) would be rerun (studies/mult/doIt.py changed); would wait for 2 run(s) of mult",
        "step add: would wait for step mult",
        "step norm: would wait for step add",
        "step remult: would wait for step norm",
    ]
    asked = motoko("run", "workflows/pipeline.py", "--dry-run", cwd=ex)
    assert "mult: 2 run(s) outdated (studies/mult/doIt.py changed): `motoko run` would ask" in asked.stdout
    new_params = motoko("run", "workflows/pipeline.py", "--dry-run", "--keep-outdated", "-p", "rescale=3", cwd=ex)
    assert new_params.stdout.splitlines()[2:] == [
        "step mult: mult: 2 run(s) reused although outdated (studies/mult/doIt.py changed)",
        "step add: add: 2 run(s) reused",
        "step norm: norm: 2 run(s) reused",
        "step remult: mult: 2 run(s) would be created; would wait for 2 run(s) of mult",
    ]
    assert last_transaction(ex) == before
    assert snapshot(ex) == runs


# -- motoko rerun ----------------------------------------------------------------------------------------


def test_rerun_without_descendants_and_its_undo(ex):
    before = snapshot(ex)
    dry = motoko("rerun", "event_name = mult, a > 0", "--study", "mult", "--dry-run", cwd=ex)
    assert dry.stdout == "mult: requeue 1 run(s) now: 1\ndry run: 1 run(s) would be rerun; nothing was changed\n"
    assert snapshot(ex) == before
    result = motoko("rerun", "event_name = mult, a > 0", "--study", "mult", "-y", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("rerun 1 run(s); undo with `motoko rerun --undo` before they start\n")
    with Workflow(ex, run_name="pipeline") as workflow:
        run = workflow.mult.runs[1]
        assert (run.state, run.attempt, run.history[-1]["results"]["y"]) == ("CREATED", 2, pytest.approx([0.342, 0.684, 1.026]))
    undo = motoko("rerun", "--undo", cwd=ex)
    assert undo.stdout == "undid the last rerun: 1 run(s) have their previous results back\n"
    assert snapshot(ex) == before
    with Workflow(ex, run_name="pipeline") as workflow:
        assert workflow.mult.runs[1].y == pytest.approx([0.342, 0.684, 1.026])
        assert workflow.mult.runs[1].history == ()
    # once more, and this time the workflow runs it: its descendants are reused (same result)
    assert motoko("rerun", "event_name = mult, a > 0", "-s", "mult", "-y", cwd=ex).returncode == 0
    done = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert done.returncode == 0, done.stderr
    after = snapshot(ex)
    assert after["mult"][1][:2] == ("FINISHED", 2)
    changed = [(s, i) for s, runs in after.items() for i in runs if runs[i] != before[s][i]]
    assert changed == [("mult", 1)]
    too_late = motoko("rerun", "--undo", cwd=ex)
    assert_user_error(
        too_late,
        "cannot undo the last rerun: mult.1 started its new attempt 2 (it is FINISHED) "
        "(its previous results stay in its history, see `motoko runs show`)",
    )


def test_rerun_with_descendants_runs_the_branch_again_after_its_parent(ex):
    before = snapshot(ex)
    result = motoko("rerun", "event_name = mult, a > 0", "-s", "mult", "--with-descendants", "-y", cwd=ex)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "mult: requeue 1 run(s) now: 1",
        "add: run 1 descendant(s) again when the workflow next asks for them: 1",
        "mult: run 1 descendant(s) again when the workflow next asks for them: 3",
        "norm: run 1 descendant(s) again when the workflow next asks for them: 1",
        "rerun 4 run(s); undo with `motoko rerun --undo` before they start",
    ]
    done = motoko("run", "workflows/pipeline.py", cwd=ex)
    assert done.returncode == 0, done.stderr
    assert remult(done.stdout) == pytest.approx(expected())
    after = snapshot(ex)
    again = sorted((s, i) for s, runs in after.items() for i, (_, attempt, _) in runs.items() if attempt == 2)
    assert again == [("add", 1), ("mult", 1), ("mult", 3), ("norm", 1)]  # one branch, nothing else
    assert all(after[s][i] == before[s][i] for s, runs in before.items() for i in runs if (s, i) not in again)
    with Workflow(ex, run_name="pipeline") as workflow:  # each ran after its parent's new attempt
        for study, rid in (("add", 1), ("norm", 1), ("mult", 3)):
            run = workflow[study].runs[rid]
            (parent_study, parent_id), = run.parents
            assert run.started > workflow[parent_study].runs[parent_id].finished


def test_rerun_failure_paths_are_one_line_errors_that_change_nothing(ex):
    before = last_transaction(ex)
    assert_user_error(motoko("rerun", "--undo", cwd=ex), "there is no rerun to undo (`motoko rerun CONSTRAINTS` records one)")
    bad = motoko("rerun", "a >", "-y", cwd=ex)
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.startswith("motoko: error: ")
    assert len(bad.stderr.splitlines()) == 1 and "a >" in bad.stderr
    assert_user_error(
        motoko("rerun", "a > 0", "--study", "mul", "-y", cwd=ex),
        f"{ex / 'motoko.yaml'}: unknown study 'mul' (did you mean 'mult'?)",
    )
    assert_user_error(
        motoko("rerun", "-y", cwd=ex),
        'give CONSTRAINTS saying which runs to rerun (e.g. "a > 0"), or --undo (see `motoko rerun --help`)',
    )
    assert_user_error(
        motoko("rerun", "a > 0", "--undo", cwd=ex), "--undo takes no constraints or other options (see `motoko rerun --help`)"
    )
    assert last_transaction(ex) == before
    assert motoko("rerun", "a > 100", "-s", "mult", "-y", cwd=ex).stdout == "no finished run matches\n"


def test_a_dry_run_drops_what_the_steps_write(ex):
    (ex / "workflows" / "marks.py").write_text(
        "from motoko import step\n\n\n"
        "@step\nasync def mult(workflow):\n"
        "    runs = await workflow.mult.createTask(a=[5.0])\n"
        "    workflow.vars.seen = workflow.vars.seen + 1 if 'seen' in workflow.vars else 1\n"
        "    for run, _ in runs:\n"
        "        run.note = f'seen {workflow.vars.seen}'\n"
        "    return workflow.vars.seen\n"
    )
    first = motoko("run", "workflows/marks.py", cwd=ex)
    assert first.returncode == 0, first.stderr
    assert "mult: 1\n" in first.stdout
    before = last_transaction(ex)
    dry = motoko("run", "workflows/marks.py", "--dry-run", cwd=ex)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[1:] == ["step mult: mult: 1 run(s) reused"]
    assert last_transaction(ex) == before
    with Workflow(ex, run_name="marks") as workflow:
        assert workflow.vars.seen == 1
        assert [run.note for run, _ in workflow.mult.select()] == ["seen 1"]

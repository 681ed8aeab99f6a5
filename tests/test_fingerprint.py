"""Fingerprints of studies, the outdated rule's building blocks, restoring a requeued run, resume settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from motoko.config import load_config
from motoko.errors import ConfigError, OutdatedRunsError, RerunUndoError, TransitionError
from motoko.study.database import StudyDB
from motoko.study.fingerprint import MISSING, changed_files, file_hash, study_fingerprint
from motoko.study.records import CREATED, FINISHED, LAUNCHED
from motoko.study.schema import load_schema, parse_schema
from motoko.study.space import expand

BD = """\
# y = a · x
study: calc
job:
  a: float   # the coefficient
exec_file: launch.sh
config_files: [doIt.py, data]
"""


@pytest.fixture
def study_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "calc"
    folder.mkdir()
    (folder / "bd.yaml").write_text(BD)
    (folder / "launch.sh").write_text("#!/bin/bash\npython3 doIt.py\n")
    (folder / "doIt.py").write_text("print(1)\n")
    (folder / "data").mkdir()
    (folder / "data" / "table.csv").write_text("1,2\n")
    return folder


def fingerprint(folder: Path) -> dict:
    result = study_fingerprint(load_schema(folder))
    assert result is not None
    return result


def test_the_fingerprint_hashes_every_input_file_and_names_what_changed(study_folder):
    before = fingerprint(study_folder)
    assert set(before["files"]) == {"bd.yaml", "launch.sh", "doIt.py", "data"}
    assert all(h.startswith("sha256:") for h in before["files"].values())
    (study_folder / "doIt.py").write_text("print(2)\n")  # same size, new content
    os.utime(study_folder / "doIt.py", ns=(1, 1))  # and a different mtime, as any edit gives
    (study_folder / "data" / "table.csv").write_text("1,3\n")
    after = fingerprint(study_folder)
    assert changed_files(before, after) == ["data", "doIt.py"]
    assert after["digest"] != before["digest"]


def test_comments_and_layout_of_bd_yaml_do_not_count(study_folder):
    before = fingerprint(study_folder)
    (study_folder / "bd.yaml").write_text("study: calc\njob: {a: float}\nexec_file: launch.sh\nconfig_files:\n  - doIt.py\n  - data\n")
    assert changed_files(before, fingerprint(study_folder)) == []
    (study_folder / "bd.yaml").write_text(BD.replace("a: float", "a: int"))
    assert changed_files(before, fingerprint(study_folder)) == ["bd.yaml"]


def test_a_deleted_file_counts_as_changed_and_unknown_fingerprints_prove_nothing(study_folder):
    schema = load_schema(study_folder)  # loading checks the files exist; a run's may go later
    before = study_fingerprint(schema)
    (study_folder / "launch.sh").unlink()
    assert file_hash(study_folder / "launch.sh") == MISSING
    assert changed_files(before, study_fingerprint(schema)) == ["launch.sh"]
    assert changed_files(None, before) == [] and changed_files(before, None) == []
    assert study_fingerprint(parse_schema("study: x\njob: {a: float}\n", check_files=False)) is None


def test_requeue_keeping_results_then_restore_gives_the_previous_attempt_back(address):
    db = StudyDB(address)
    try:
        db.create_study(parse_schema("study: demo\njob: {x: float}\n", check_files=False))
        run = db.insert("demo", expand(db.study("demo").schema, {"x": 1.0}), {}, run_name="r")[0][0]
        study = db.study("demo")

        def finish() -> None:
            study.transition(run, LAUNCHED)
            study.transition(run, FINISHED, exit_code=0)
            run.y = [1.0, 2.0]
            run.fingerprint = {"digest": "old"}

        db.transact(finish)
        finished = run.finished
        db.transact(lambda: study.requeue(run, "rerun", keep_results=True))
        assert (run.state, run.attempt, run.history[-1]["results"]["y"]) == (CREATED, 2, [1.0, 2.0])
        assert not hasattr(run, "y")  # the new attempt starts without the old result
        assert run.history[-1]["fingerprint"] == {"digest": "old"}
        db.transact(lambda: setattr(run, "fingerprint", {"digest": "new"}))
        db.transact(lambda: study.restore(run))
        assert (run.state, run.attempt, run.finished, run.exit_code) == (FINISHED, 1, finished, 0)
        assert run.fingerprint == {"digest": "old"} and run.y == [1.0, 2.0] and run.history == ()
        assert study.check_indexes() == []
        assert list(study.ids_in_state(FINISHED)) == [run.id] and not study.ids_in_state(CREATED)
        with pytest.raises(TransitionError) as refused:
            study.restore(run)
        assert str(refused.value) == (
            f"run demo.{run.id} cannot be restored: it is FINISHED and has no previous attempt "
            "(only a requeued run whose new attempt has not started can be restored)"
        )
    finally:
        db.close()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("resume: rerun", "resume must be a mapping, got 'rerun' (e.g. `resume: {outdated: rerun}`)"),
        ("resume: {outdate: rerun}", "unknown resume setting 'outdate' (did you mean 'outdated'?)"),
        (
            "resume: {outdated: yes}",
            "resume outdated must be one of ask, rerun, keep, got True "
            "(ask: ask on a terminal, stop otherwise; rerun: run them again; keep: reuse them)",
        ),
    ],
)
def test_a_bad_resume_setting_is_one_line_naming_the_line(tmp_path, setting, message):
    (tmp_path / "calc").mkdir()
    (tmp_path / "calc" / "bd.yaml").write_text("study: calc\njob: {a: float}\n")
    (tmp_path / "motoko.yaml").write_text(f"task_managers: [calc]\n{setting}\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    assert str(error.value) == f"{tmp_path / 'motoko.yaml'}:2: {message}"


def test_resume_settings_are_read(tmp_path):
    (tmp_path / "calc").mkdir()
    (tmp_path / "calc" / "bd.yaml").write_text("study: calc\njob: {a: float}\n")
    (tmp_path / "motoko.yaml").write_text("task_managers: [calc]\n")
    assert load_config(tmp_path).resume_outdated == "ask"
    for choice in ("ask", "rerun", "keep"):
        (tmp_path / "motoko.yaml").write_text(f"task_managers: [calc]\nresume: {{outdated: {choice}}}\n")
        assert load_config(tmp_path).resume_outdated == choice


def test_the_new_errors_say_what_and_how_to_fix():
    error = OutdatedRunsError("2 finished run(s) of p are outdated: studies/m/doIt.py changed (2 of m)", ["studies/m/doIt.py"], 2)
    assert isinstance(error, RuntimeError) and error.files == ["studies/m/doIt.py"] and error.count == 2
    assert str(error) == (
        "2 finished run(s) of p are outdated: studies/m/doIt.py changed (2 of m) (give --rerun-outdated to run them "
        "again, --keep-outdated to reuse them, or set `resume: {outdated: rerun}` in motoko.yaml)"
    )
    undo = RerunUndoError("there is no rerun to undo", hint="`motoko rerun CONSTRAINTS` records one")
    assert isinstance(undo, RuntimeError) and undo.exit_code == 2
    assert str(undo) == "there is no rerun to undo (`motoko rerun CONSTRAINTS` records one)"


def test_a_script_reusing_outdated_runs_is_warned_and_the_rule_finds_descendants(example, caplog):
    from motoko.flow.outdated import find_outdated
    from motoko.flow.workflow import Workflow

    with Workflow(example, run_name="api") as workflow:
        (run, _), = workflow.mult.createTask(a=[1.0])
        (child, _), = workflow.add.createTask(x=[[1.0]], parents=[run])
        for study, done in (("mult", run), ("add", child)):
            db = workflow.db_for(study)
            records = db.study(study)
            db.transact(lambda records=records, done=done: (records.transition(done, LAUNCHED), records.transition(done, FINISHED)))
        assert not find_outdated(workflow)
        doit = example / "studies" / "mult" / "doIt.py"
        doit.write_text(doit.read_text() + "# changed\n")
        report = find_outdated(workflow)
        assert (report.direct, report.descendants, report.total) == ({"mult": [run.id]}, {"add": [child.id]}, 2)
        assert report.reasons[("add", child.id)] == "descends from an outdated run of mult"
        with caplog.at_level("WARNING", logger="motoko.flow.rerun"):
            workflow.mult.createTask(a=[1.0])
        assert f"reusing 1 outdated run(s) of mult (its files changed since they were made): {run.id};" in caplog.text

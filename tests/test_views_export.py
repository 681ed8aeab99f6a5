"""Export: to_dataframe, ``motoko export`` (csv, json, parquet, motoko) and ``motoko import``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import motoko
from views_support import copy_example

from motoko import Workflow
from motoko.flow.futures import RunList
from motoko.study.database import StudyDB
from motoko.study.server import stop_server
from motoko.views.export import (
    DumpError,
    ExportError,
    ImportConflict,
    load_dump,
    to_dataframe,
    write_table,
)

TARGET = [3.3, 2.34, 0.148]


def squared(a: float) -> float:
    return sum((a * x + 0.56 - t) ** 2 for x, t in zip([1.0, 2.0, 3.0], TARGET, strict=True))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    root = copy_example(tmp_path_factory.mktemp("export") / "example")
    done = motoko("run", "workflows/pipeline.py", cwd=root)
    assert done.returncode == 0, done.stderr
    yield root
    stop_server(root, grace=5)


def test_to_dataframe_of_a_selection_and_of_a_runlist(pipeline: Path):
    with Workflow(pipeline, run_name="pipeline") as workflow:
        frame = to_dataframe(workflow.norm.select("state = FINISHED"))
        mults = to_dataframe(RunList(workflow, "mult", [2, 1]), quantities=[])
    assert list(frame.columns[:5]) == ["study", "id", "job_id", "x", "target"]
    assert {"state", "run_name", "event_name", "created", "finished", "parents", "y", "q.l2", "q.squared"} <= set(frame.columns)
    assert frame["id"].tolist() == [1, 2] and set(frame["state"]) == {"FINISHED"}
    assert frame["parents"].tolist() == [["add.1"], ["add.2"]]
    assert frame["q.squared"].tolist() == pytest.approx([squared(0.342), squared(-2.31)])
    assert frame["q.l2"].tolist() == pytest.approx([math.sqrt(squared(0.342)), math.sqrt(squared(-2.31))])
    assert str(frame["finished"].dtype).startswith("datetime64") and str(frame["finished"].dt.tz) == "UTC"
    assert mults["id"].tolist() == [2, 1] and mults["a"].tolist() == [-2.31, 0.342]
    assert not any(c.startswith("q.") for c in mults.columns)
    # mult runs set a free attribute y and push a quantity y: both appear, apart.
    assert "y" in mults.columns


def test_export_csv_to_stdout_reads_back(pipeline: Path):
    result = motoko("export", "state = FINISHED", "--study", "norm", cwd=pipeline)
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(io.StringIO(result.stdout))
    assert frame["study"].tolist() == ["norm", "norm"]
    assert frame["q.squared"].tolist() == pytest.approx([squared(0.342), squared(-2.31)])
    assert json.loads(frame["target"][0]) == TARGET  # lists are JSON in CSV cells
    assert json.loads(frame["parents"][1]) == ["add.2"]


def test_export_json_of_every_study_with_chosen_quantities(pipeline: Path, tmp_path: Path):
    out = tmp_path / "runs.json"
    result = motoko("export", "--format", "json", "--quantities", "l2", "-o", str(out), cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"exported 8 run(s) to {out}\n" and result.stdout == ""
    rows = json.loads(out.read_text())
    assert [r["study"] for r in rows] == ["mult"] * 4 + ["add"] * 2 + ["norm"] * 2
    assert [k for k in rows[-1] if k.startswith("q.")] == ["q.l2"]
    assert rows[-1]["q.l2"] == pytest.approx(math.sqrt(squared(-2.31)))
    assert rows[0]["created"].endswith("+00:00")


def test_export_parquet_keeps_types(pipeline: Path, tmp_path: Path):
    out = tmp_path / "runs.parquet"
    result = motoko("export", "--format", "parquet", "-s", "mult", "-o", str(out), cwd=pipeline)
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(out)
    assert frame["a"].tolist() == [0.342, -2.31, 2.0, 2.0]
    assert list(frame["x"][0]) == [1.0, 2.0, 3.0]
    assert str(frame["finished"].dtype).startswith("datetime64")
    assert list(frame["parents"][2]) == ["norm.1"]
    bad = motoko("export", "--format", "parquet", cwd=pipeline)
    assert bad.returncode == 2 and "give -o FILE.parquet" in bad.stderr


def test_export_of_a_bad_constraint_names_the_column(pipeline: Path):
    result = motoko("export", "a >", "--study", "mult", cwd=pipeline)
    assert result.returncode == 2 and "column 4" in result.stderr and len(result.stderr.splitlines()) == 1


def test_export_and_import_keep_ids_states_quantities_and_provenance(example: Path, tmp_path: Path):
    with open(example / "motoko.yaml", "a") as config:
        config.write("\npoll: {initial: 0.05, factor: 2, maximum: 0.5}\n")
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    with Workflow(example) as workflow:
        db = workflow.db_for("norm")

        def mark() -> None:
            study = db.study("norm")
            study.runs[1].state = "FORWARDED"  # a user state, after FINISHED
            study.requeue(study.runs[2], "again")  # attempt 2, with history

        db.transact(mark)
        before = {name: to_dataframe(workflow[name].select(run_name=None)) for name in workflow.task_managers}
        quantity = workflow.db_for("mult").run("mult", 1).get_quantity("y")
    dump = tmp_path / "backup.json"
    assert motoko("export", "--format", "motoko", "-o", str(dump), cwd=example).returncode == 0

    target = copy_example(tmp_path / "other")
    try:
        result = motoko("import", str(dump), cwd=target)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == f"study mult: 4 run(s) imported into zeo://{target}/.motoko/zeo.sock"
        with Workflow(target) as workflow:
            after = {name: to_dataframe(workflow[name].select(run_name=None)) for name in workflow.task_managers}
            norm = workflow.db_for("norm").study("norm")
            assert norm.runs[2].attempt == 2 and norm.runs[2].history[0]["reason"] == "again"
            assert norm.check_indexes() == [] and sorted(norm.counts().items()) == [("CREATED", 1), ("FORWARDED", 1)]
            assert workflow.db_for("mult").run("mult", 1).get_quantity("y").equals(quantity)
            address = str(workflow.db_for("mult").address)
            # New runs continue after the imported ids.
            assert workflow.mult.createTask(a=[7.0]).ids == [5]
        for name in before:
            pd.testing.assert_frame_equal(before[name].drop(columns=["run_path"]), after[name].drop(columns=["run_path"]))
        # Importing again changes nothing (idempotent), here through --database.
        again = motoko("import", str(dump), "--database", address, cwd=tmp_path)
        assert again.returncode == 0 and "study norm: 0 run(s) imported" in again.stdout
    finally:
        stop_server(target, grace=5)


def test_import_refuses_to_overwrite_other_runs(pipeline: Path, tmp_path: Path):
    dump = tmp_path / "mult.json"
    assert motoko("export", "--format", "motoko", "-s", "mult", "-o", str(dump), cwd=pipeline).returncode == 0
    data = json.loads(dump.read_text())
    data["studies"][0]["runs"][0]["job_id"] = 2  # run 1 of another job than the stored one
    dump.write_text(json.dumps(data))
    result = motoko("import", str(dump), cwd=pipeline)
    assert result.returncode == 2
    assert result.stderr == (
        "motoko: error: study 'mult' already has runs [1] of other jobs "
        "(import into an empty study (`motoko create -y` empties them))\n"
    )


def test_exception_messages(tmp_path: Path):
    not_export = tmp_path / "x.json"
    not_export.write_text("[1, 2]")
    with pytest.raises(DumpError) as caught:
        load_dump(not_export)
    assert str(caught.value) == f"{not_export} is not a motoko export (write one with `motoko export --format motoko -o FILE`)"
    with pytest.raises(DumpError, match="is not JSON"):
        not_export.write_text("{")
        load_dump(not_export)
    with pytest.raises(ExportError) as export_error:
        write_table(pd.DataFrame({"a": [1]}), "parquet", None)
    assert str(export_error.value) == "parquet is a binary format and needs an output file (add -o FILE.parquet)"
    conflict = ImportConflict("in the way", study="s", ids=[3], hint="empty it")
    assert (conflict.study, conflict.ids, str(conflict)) == ("s", [3], "in the way (empty it)")
    assert isinstance(conflict, ValueError)


def test_a_dump_is_readable_json(pipeline: Path):
    result = motoko("export", "--format", "motoko", "-s", "norm", "id = 1", cwd=pipeline)
    data = json.loads(result.stdout)
    assert data["format"] == "motoko-export" and data["version"] == 1
    (study,) = data["studies"]
    assert [j["id"] for j in study["jobs"]] == [1] and [r["id"] for r in study["runs"]] == [1]
    run = study["runs"][0]
    assert run["state"] == "FINISHED" and run["attributes"]["parents"] == [["add", 1]]
    assert run["quantities"]["l2"] == [[0, pytest.approx(math.sqrt(squared(0.342)))]]
    assert set(run["attributes"]["created"]) == {"$datetime"}
    db_address = f"zeo://{pipeline}/.motoko/zeo.sock"
    with StudyDB(db_address) as db:
        assert db.run("norm", 1).parents == (("add", 1),)


def test_a_run_name_is_a_value_never_part_of_the_query(pipeline: Path):
    """--run-name is passed as a structure: quotes in it cannot widen the selection."""
    plain = motoko("export", "--format", "json", "--run-name", "pipeline", cwd=pipeline)
    assert plain.returncode == 0, plain.stderr
    assert len(json.loads(plain.stdout)) == 8
    sneaky = motoko("export", "--format", "json", "--run-name", "x' or run_name != 'x", cwd=pipeline)
    assert sneaky.returncode == 0, sneaky.stderr
    assert json.loads(sneaky.stdout) == []

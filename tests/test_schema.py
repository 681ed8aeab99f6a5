"""Tests of bd.yaml → StudySchema: every error names file, line, field and hint."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from motoko.errors import MotokoError, ParameterError, SchemaError, UnknownNameError
from motoko.study.fields import BUILTIN_RUN_FIELDS, FIELD_TYPES
from motoko.study.schema import StudySchema, load_schema, parse_schema

MINIMAL = """\
study: mult
job: {x: float}
"""


def make_study(
    root: Path, text: str, name: str = "mult", files: tuple[str, ...] = ("launch.sh", "doIt.py")
) -> Path:
    """Write studies/<name>/bd.yaml and the given files; return the folder."""
    folder = root / "studies" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bd.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for file in files:
        path = folder / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# file\n", encoding="utf-8")
    return folder


@pytest.fixture
def study_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work inside tmp_path so that messages show `studies/mult/bd.yaml`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_text(root: Path, text: str, **kw: object) -> StudySchema:
    make_study(root, text)
    return load_schema("studies/mult", **kw)  # type: ignore[arg-type]


# -- loading and defaults -----------------------------------------------------


def test_minimal_study_has_documented_defaults(study_dir: Path) -> None:
    schema = load_text(study_dir, MINIMAL)
    assert schema.name == "mult"
    assert list(schema.job_fields) == ["x"]
    assert schema.job_fields["x"] is FIELD_TYPES["float"]
    assert schema.run_fields == {}
    assert schema.job_space == {} and schema.run_params == {}
    assert schema.exec_file == "launch.sh"
    assert schema.config_files == ["doIt.py"]
    assert schema.retries == 0
    assert schema.retry_on == ["LOST"]
    assert schema.lost_after is None
    assert schema.slurm_options == []
    assert schema.description == ""
    assert schema.source == "studies/mult/bd.yaml"
    assert schema.folder == (study_dir / "studies" / "mult").absolute()


def test_full_example_is_read(study_dir: Path) -> None:
    schema = load_text(
        study_dir,
        """\
        study: mult
        job: {x: float, n: int}
        run: {compiler: str}
        job_space: {x: [1.0, 2.0]}
        run_params: {compiler: gcc}
        exec_file: launch.sh
        config_files: [doIt.py]
        retries: 2
        retry_on: [LOST, FAILED]
        lost_after: 30
        slurm_options: [--mem=4G, "-t 10"]
        description: multiplies x
        """,
    )
    assert list(schema.job_fields) == ["x", "n"]
    assert schema.run_fields["compiler"].name == "str"
    assert schema.job_space == {"x": [1.0, 2.0]}
    assert schema.run_params == {"compiler": "gcc"}
    assert schema.retries == 2
    assert schema.retry_on == ["LOST", "FAILED"]
    assert schema.lost_after == 30.0 and isinstance(schema.lost_after, float)
    assert schema.slurm_options == ["--mem=4G", "-t 10"]
    assert schema.description == "multiplies x"


def test_job_fields_keep_file_order(study_dir: Path) -> None:
    schema = load_text(study_dir, "job: {z: int, a: int, m: int}\n")
    assert list(schema.job_fields) == ["z", "a", "m"]


def test_load_from_the_bd_yaml_file_itself(study_dir: Path) -> None:
    make_study(study_dir, MINIMAL)
    schema = load_schema(Path("studies/mult/bd.yaml"))
    assert schema.name == "mult"
    assert schema.source == "studies/mult/bd.yaml"


def test_study_name_defaults_to_folder_name(study_dir: Path) -> None:
    make_study(study_dir, "job: {x: float}\n", name="add-2")
    assert load_schema("studies/add-2").name == "add-2"


def test_folder_name_that_is_not_a_study_name_is_refused(study_dir: Path) -> None:
    make_study(study_dir, "job: {x: float}\n", name="my study")
    with pytest.raises(ParameterError) as info:
        load_schema("studies/my study")
    assert "'my study'" in str(info.value)
    assert "study: NAME" in str(info.value)


def test_bad_study_name_names_its_line(study_dir: Path) -> None:
    with pytest.raises(ParameterError) as info:
        load_text(study_dir, "job: {x: int}\nstudy: 1abc\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:2:")
    assert "study name '1abc' is not valid" in message
    assert info.value.field == "study"


def test_parse_without_folder_needs_a_study_name() -> None:
    with pytest.raises(SchemaError, match="no study name"):
        parse_schema("job: {x: int}\n")


def test_parse_schema_from_text_without_files() -> None:
    schema = parse_schema(MINIMAL, source="inline.yaml")
    assert schema.folder is None
    assert schema.source == "inline.yaml"


def test_empty_job_and_run_sections_are_allowed() -> None:
    schema = parse_schema("study: s\njob:\nrun:\n")
    assert schema.job_fields == {} and schema.run_fields == {}


# -- types ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["int", "float", "str", "bool", "list", "dict", "datetime"])
def test_every_field_type_is_accepted(name: str) -> None:
    schema = parse_schema(f"study: s\njob: {{v: {name}}}\nrun: {{w: {name}}}\n")
    assert schema.job_fields["v"] is FIELD_TYPES[name]
    assert schema.run_fields["w"] is FIELD_TYPES[name]


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("integer", "int"),
        ("double", "float"),
        ("real", "float"),
        ("string", "str"),
        ("text", "str"),
        ("boolean", "bool"),
        ("timestamp", "datetime"),
        ("Float", "float"),
    ],
)
def test_blackdynamite_type_spellings_are_accepted(alias: str, name: str) -> None:
    schema = parse_schema(f"study: s\njob: {{v: {alias}}}\n")
    assert schema.job_fields["v"].name == name


def test_unknown_type_suggests_the_close_one(study_dir: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        load_text(study_dir, "study: mult\njob:\n  n: int\n  x: flaot\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:4:")
    assert "'flaot'" in message and "'x'" in message
    assert "did you mean 'float'?" in message


def test_type_that_is_not_a_string_is_refused(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, "study: mult\njob:\n  x: [float]\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:3:")
    assert "job field 'x'" in message and "type name" in message
    assert "possible types: int, float" in message


def test_missing_type_is_refused() -> None:
    with pytest.raises(SchemaError, match="'x' must be a type name, got None"):
        parse_schema("study: s\njob:\n  x:\n")


# -- file shape -----------------------------------------------------------------


def test_unknown_key_suggests_job_space(study_dir: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        load_text(study_dir, "study: mult\njob: {x: float}\njobspace: {x: 1}\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:3:")
    assert "unknown bd.yaml key 'jobspace'" in message
    assert "did you mean 'job_space'?" in message
    assert isinstance(info.value, KeyError)


def test_yaml_syntax_error_gives_line_and_column(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, "study: mult\njob: {x: float\nrun: {}\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:3:")
    assert "invalid YAML, column" in message
    assert "indentation" in message


def test_bad_indentation_is_a_syntax_error(study_dir: Path) -> None:
    with pytest.raises(SchemaError, match=r"bd.yaml:\d+: invalid YAML"):
        load_text(study_dir, "study: mult\njob:\n  x: float\n y: int\n")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_is_refused(study_dir: Path, text: str) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, text)
    assert str(info.value).startswith("studies/mult/bd.yaml: the file is empty")
    assert "study: NAME" in str(info.value)


def test_top_level_list_is_refused(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, "- study\n- mult\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:1:")
    assert "must be a mapping" in message and "got list" in message


def test_several_documents_are_refused() -> None:
    with pytest.raises(SchemaError, match="bd.yaml:2: invalid YAML"):
        parse_schema("study: a\n---\nstudy: b\n")


def test_job_that_is_not_a_mapping_is_refused(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, "study: mult\njob: [x, y]\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:2:")
    assert "'job' must be a mapping" in message and "got list" in message
    assert "job: {x: float, n: int}" in message


def test_duplicate_key_is_refused_not_silently_overwritten(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, "study: mult\njob:\n  x: float\n  x: int\n")
    assert str(info.value).startswith("studies/mult/bd.yaml:4: key 'x' appears twice")


# -- field names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["state", "id", "run_name", "progress"])
def test_run_field_may_not_shadow_a_builtin(name: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(f"study: s\nrun:\n  {name}: str\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:3:")
    assert f"run field {name!r} is built in" in message
    assert "built-in run fields: id, job_id, state" in message


def test_job_field_may_not_be_id() -> None:
    with pytest.raises(SchemaError, match=r"bd.yaml:2: job field 'id' is built in"):
        parse_schema("study: s\njob: {id: int}\n")


def test_job_field_may_share_a_name_with_a_run_field() -> None:
    schema = parse_schema("study: s\njob: {x: float, phase: str}\nrun: {x: float}\n")
    assert "x" in schema.job_fields and "x" in schema.run_fields
    assert "phase" in schema.job_fields


@pytest.mark.parametrize("name", ["2x", "a-b", "class", "x y"])
def test_field_name_must_be_an_identifier(name: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(f"study: s\njob:\n  '{name}': int\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:3:")
    assert f"job field name {name!r} is not valid" in message
    assert "rename the field" in message


def test_unquoted_yaml_boolean_as_field_name_gets_a_quoting_hint() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema("study: s\njob:\n  on: bool\n")
    message = str(info.value)
    assert "job field name True is a bool" in message
    assert "quote it" in message


# -- settings -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "two", "true", "1.5"])
def test_retries_must_be_a_non_negative_integer(value: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_schema(f"study: s\njob: {{x: int}}\nretries: {value}\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:3: 'retries' expects an integer >= 0")
    assert info.value.field == "retries"
    assert "0 (never retry)" in message


def test_retry_on_unknown_state_names_the_item_line() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_schema("study: s\nretry_on:\n  - LOST\n  - CRASHED\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:4:")
    assert "'CRASHED'" in message
    assert "possible: FAILED, LOST" in message


def test_retry_on_typo_gets_suggestion() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'FAILED'"):
        parse_schema("study: s\nretry_on: [FAILD]\n")


def test_retry_on_accepts_lower_case_and_a_single_state() -> None:
    assert parse_schema("study: s\nretry_on: failed\n").retry_on == ["FAILED"]
    assert parse_schema("study: s\nretry_on: [lost, LOST]\n").retry_on == ["LOST"]
    assert parse_schema("study: s\nretry_on: []\n").retry_on == []


@pytest.mark.parametrize("value", ["0", "-5", "soon", ".nan", "true"])
def test_lost_after_must_be_positive_seconds(value: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_schema(f"study: s\n\nlost_after: {value}\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:3: 'lost_after' expects a number of seconds > 0")
    assert "lost_after: 60" in message


def test_lost_after_accepts_a_float() -> None:
    assert parse_schema("study: s\nlost_after: 2.5\n").lost_after == 2.5


@pytest.mark.parametrize("option", ["mem=4G", "--mem=4G\n#SBATCH --x", "42"])
def test_slurm_options_must_be_single_options(option: str) -> None:
    text = "study: s\nslurm_options:\n  - --ntasks=2\n  - " + json.dumps(option) + "\n"
    with pytest.raises(ParameterError) as info:
        parse_schema(text)
    message = str(info.value)
    assert message.startswith("bd.yaml:4:")
    assert "--mem=4G" in message  # the hint shows the expected form


def test_description_must_be_text() -> None:
    with pytest.raises(ParameterError, match=r"bd.yaml:2: 'description' expects a string, got \["):
        parse_schema("study: s\ndescription: [a]\n")


def test_config_files_must_be_a_list_of_strings() -> None:
    with pytest.raises(
        ParameterError, match=r"bd.yaml:2: 'config_files' expects a list of strings"
    ):
        parse_schema("study: s\nconfig_files: {a: 1}\n")
    with pytest.raises(ParameterError, match=r"bd.yaml:4: 'config_files' expects .* item 2 is 3"):
        parse_schema("study: s\nconfig_files:\n  - a.py\n  - 3\n")


# -- files ------------------------------------------------------------------------------


def test_missing_default_exec_file_says_it_is_the_default(study_dir: Path) -> None:
    make_study(study_dir, MINIMAL, files=("doIt.py",))
    with pytest.raises(SchemaError) as info:
        load_schema("studies/mult")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml: exec_file 'launch.sh' (the default) not found")
    assert "set `exec_file:` in bd.yaml" in message


def test_missing_exec_file_names_its_line(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, MINIMAL + "exec_file: run.sh\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:3: exec_file 'run.sh' not found")


def test_missing_config_file_names_the_item_line(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, MINIMAL + "config_files:\n  - doIt.py\n  - mesh.msh\n")
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:5: config_files 'mesh.msh' not found")
    assert "config_files: []" in message


def test_no_config_files_needs_no_doit(study_dir: Path) -> None:
    make_study(study_dir, MINIMAL + "config_files: []\n", files=("launch.sh",))
    assert load_schema("studies/mult").config_files == []


def test_check_files_false_skips_existence(study_dir: Path) -> None:
    make_study(study_dir, MINIMAL + "exec_file: nowhere.sh\n", files=())
    assert load_schema("studies/mult", check_files=False).exec_file == "nowhere.sh"


def test_files_in_subfolders_are_allowed(study_dir: Path) -> None:
    make_study(
        study_dir,
        MINIMAL + "config_files: [doIt.py, inputs/mesh.msh, ./extra.txt]\n",
        files=("launch.sh", "doIt.py", "inputs/mesh.msh", "extra.txt"),
    )
    schema = load_schema("studies/mult")
    assert schema.config_files == ["doIt.py", "inputs/mesh.msh", "extra.txt"]


@pytest.mark.parametrize(
    ("key", "name", "expected"),
    [
        ("exec_file", "../launch.sh", "contains '..'"),
        ("exec_file", "/bin/sh", "is an absolute path"),
        ("config_files", "inputs/../../secret", "contains '..'"),
        ("config_files", "C:\\\\x\\\\doIt.py", "is an absolute path"),
        ("config_files", "..\\\\doIt.py", "contains '..'"),
    ],
)
@pytest.mark.parametrize("check_files", [True, False])
def test_paths_leaving_the_study_folder_are_refused(
    study_dir: Path, key: str, name: str, expected: str, check_files: bool
) -> None:
    value = f'"{name}"' if key == "exec_file" else f'["{name}"]'
    with pytest.raises(SchemaError) as info:
        load_text(study_dir, f"{MINIMAL}{key}: {value}\n", check_files=check_files)
    message = str(info.value)
    assert message.startswith("studies/mult/bd.yaml:3:")
    assert expected in message and "inside the study folder" in message


def test_link_leading_out_of_the_folder_is_refused(study_dir: Path) -> None:
    folder = make_study(study_dir, MINIMAL + "config_files: [doIt.py, data.txt]\n")
    (study_dir / "secret.txt").write_text("x")
    (folder / "data.txt").symlink_to(study_dir / "secret.txt")
    with pytest.raises(SchemaError, match=r"bd.yaml:3: config_files 'data.txt' leads outside"):
        load_schema("studies/mult")


def test_exec_file_must_be_a_file(study_dir: Path) -> None:
    folder = make_study(study_dir, MINIMAL + "exec_file: bin\n")
    (folder / "bin").mkdir()
    with pytest.raises(SchemaError, match=r"bd.yaml:3: exec_file 'bin' is not a file"):
        load_schema("studies/mult")


def test_config_file_listed_twice_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"bd.yaml:2: config file './a.py' is listed twice"):
        parse_schema("study: s\nconfig_files: [a.py, ./a.py]\n")


def test_missing_folder_is_refused(study_dir: Path) -> None:
    with pytest.raises(SchemaError) as info:
        load_schema("studies/nope")
    assert str(info.value).startswith("studies/nope: no such study folder")


def test_folder_without_bd_yaml_is_refused(study_dir: Path) -> None:
    (study_dir / "studies" / "empty").mkdir(parents=True)
    with pytest.raises(SchemaError) as info:
        load_schema("studies/empty")
    message = str(info.value)
    assert message.startswith("studies/empty/bd.yaml: no bd.yaml in study folder")
    assert "create bd.yaml" in message


def test_file_that_is_not_utf8_is_refused(study_dir: Path) -> None:
    folder = make_study(study_dir, MINIMAL)
    (folder / "bd.yaml").write_bytes(b"study: \xff\xfe\n")
    with pytest.raises(SchemaError, match="not UTF-8"):
        load_schema("studies/mult")


# -- run_params and job_space ------------------------------------------------------------


def test_run_params_are_coerced_at_load() -> None:
    schema = parse_schema(
        "study: s\nrun: {tol: float, when: datetime}\n"
        "run_params: {tol: 1, when: 2024-01-02, nproc: 4, machine_name: m1}\n"
    )
    assert schema.run_params == {
        "tol": 1.0,
        "when": dt.datetime(2024, 1, 2),
        "nproc": 4,
        "machine_name": "m1",
    }
    assert isinstance(schema.run_params["tol"], float)


def test_run_params_bad_value_names_line_and_field() -> None:
    with pytest.raises(ParameterError) as info:
        parse_schema("study: s\nrun: {tol: float}\nrun_params:\n  tol: small\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:4: field 'tol' expects a number, got 'small'")
    assert info.value.field == "tol"


def test_run_params_unknown_field_suggests_and_says_declare() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_schema("study: s\nrun: {compiler: str}\nrun_params: {compiller: gcc}\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:3: unknown run field 'compiller'")
    assert "did you mean 'compiler'?" in message and "declare it under `run:`" in message


def test_run_params_may_not_set_motoko_fields() -> None:
    with pytest.raises(ParameterError) as info:
        parse_schema("study: s\nrun_params: {state: FINISHED}\n")
    message = str(info.value)
    assert "run field 'state' is set by motoko" in message
    assert "machine_name, nproc" in message


def test_run_params_must_be_a_mapping() -> None:
    with pytest.raises(SchemaError, match=r"bd.yaml:2: 'run_params' must be a mapping"):
        parse_schema("study: s\nrun_params: [a]\n")


def test_job_space_is_checked_but_stored_as_written() -> None:
    schema = parse_schema(
        "study: s\njob: {x: float, n: int}\njob_space:\n  x: {range: [0, 1, 0.5]}\n  n: 3\n"
    )
    assert schema.job_space == {"x": {"range": [0, 1, 0.5]}, "n": 3}


def test_job_space_unknown_field_suggests_with_line() -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_schema("study: s\njob: {alpha: float}\njob_space:\n  alpah: 1\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:4: unknown job field 'alpah'")
    assert "did you mean 'alpha'?" in message


def test_job_space_bad_value_names_line_and_field() -> None:
    with pytest.raises(ParameterError) as info:
        parse_schema("study: s\njob: {x: float}\njob_space:\n  x: [1, abc]\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:4: field 'x' expects a number, got 'abc'")


def test_job_space_field_given_alone_and_in_a_group_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"bd.yaml:3: field 'x' is given twice"):
        parse_schema('study: s\njob: {x: int, y: int}\njob_space:\n  x: 1\n  "x,y": [[1, 2]]\n')


# -- coercion helpers -----------------------------------------------------------------------


@pytest.fixture
def schema() -> StudySchema:
    return parse_schema("study: s\njob: {x: float, n: int}\nrun: {compiler: str}\n")


def test_coerce_job_returns_field_order_and_types(schema: StudySchema) -> None:
    assert schema.coerce_job({"n": "3", "x": 2}) == {"x": 2.0, "n": 3}
    assert list(schema.coerce_job({"n": 1, "x": 1.0})) == ["x", "n"]


def test_coerce_job_unknown_field_suggests(schema: StudySchema) -> None:
    with pytest.raises(UnknownNameError) as info:
        schema.coerce_job({"xx": 1.0, "n": 1}, where="task 1")
    assert str(info.value) == "task 1: unknown job field 'xx' (did you mean 'x'?)"


def test_coerce_job_refuses_id(schema: StudySchema) -> None:
    with pytest.raises(UnknownNameError, match="unknown job field 'id'"):
        schema.coerce_job({"id": 1, "x": 1.0, "n": 1})


def test_coerce_job_lists_missing_fields(schema: StudySchema) -> None:
    with pytest.raises(ParameterError) as info:
        schema.coerce_job({})
    assert "missing job field(s) 'x', 'n' of study 's'" in str(info.value)


def test_coerce_job_bad_value(schema: StudySchema) -> None:
    with pytest.raises(ParameterError, match="field 'n' expects an integer, got 1.5"):
        schema.coerce_job({"x": 1.0, "n": 1.5})


def test_coerce_run_accepts_own_and_builtin_fields(schema: StudySchema) -> None:
    assert schema.coerce_run({"compiler": 4, "nproc": "2"}) == {"compiler": "4", "nproc": 2}
    assert schema.coerce_run({}) == {}


def test_coerce_run_unknown_field(schema: StudySchema) -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown run field 'compilr' \(did you mean 'compiler'"
    ):
        schema.coerce_run({"compilr": "gcc"})


def test_coerce_run_suggests_builtins_but_lists_own_fields(schema: StudySchema) -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean 'nproc'\?"):
        schema.coerce_run({"nprocs": 2})
    with pytest.raises(UnknownNameError, match=r"\(possible: compiler\)"):
        schema.coerce_run({"zzz": 2})


def test_impossible_yaml_date_names_its_line() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema("study: s\njob: {t: datetime}\njob_space:\n  t: 2024-13-01\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:4: invalid value: month must be in 1..12")
    assert "quote the value" in message


def test_unsafe_yaml_tag_is_refused() -> None:
    with pytest.raises(SchemaError, match="could not determine a constructor"):
        parse_schema("study: !!python/object/apply:os.system [ls]\n")


def test_single_config_file_may_be_a_string() -> None:
    assert parse_schema("study: s\nconfig_files: run.py\n").config_files == ["run.py"]


def test_all_fields_put_builtins_first(schema: StudySchema) -> None:
    run_fields = schema.all_run_fields()
    assert list(run_fields)[: len(BUILTIN_RUN_FIELDS)] == list(BUILTIN_RUN_FIELDS)
    assert run_fields["state"] is FIELD_TYPES["str"]
    assert run_fields["compiler"] is FIELD_TYPES["str"]
    assert list(schema.all_job_fields()) == ["id", "x", "n"]


# -- storing ----------------------------------------------------------------------------


def test_to_dict_is_json_and_round_trips(study_dir: Path) -> None:
    schema = load_text(
        study_dir,
        """\
        study: mult
        job: {x: float, when: datetime, tags: list}
        run: {at: datetime}
        job_space: {x: {linspace: [0, 1, 3]}, when: 2024-05-01, tags: [a]}
        run_params: {at: 2024-01-01T10:00:00}
        retries: 1
        retry_on: [FAILED]
        lost_after: 5
        """,
    )
    data = schema.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["job_fields"] == {"x": "float", "when": "datetime", "tags": "list"}
    again = StudySchema.from_dict(data)
    assert again == StudySchema.from_dict(again.to_dict())
    assert again.run_params == schema.run_params
    assert again.job_fields == schema.job_fields
    assert again.folder == schema.folder and again.source == schema.source
    assert (again.retries, again.retry_on, again.lost_after) == (1, ["FAILED"], 5.0)


def test_to_dict_of_a_plain_schema_round_trips_equal() -> None:
    schema = parse_schema("study: s\njob: {x: float}\nrun: {c: str}\nrun_params: {c: gcc}\n")
    assert StudySchema.from_dict(schema.to_dict()) == schema


def test_from_dict_refuses_unknown_keys() -> None:
    data = parse_schema(MINIMAL).to_dict()
    data["job_feilds"] = {}
    with pytest.raises(UnknownNameError, match="did you mean 'job_fields'"):
        StudySchema.from_dict(data)


def test_from_dict_refuses_non_mapping() -> None:
    with pytest.raises(SchemaError, match="mapping with a 'name'"):
        StudySchema.from_dict([])  # type: ignore[arg-type]


def test_from_dict_checks_types_again() -> None:
    data = parse_schema(MINIMAL).to_dict()
    data["job_fields"] = {"x": "flaot"}
    with pytest.raises(UnknownNameError, match="did you mean 'float'"):
        StudySchema.from_dict(data)


def test_every_error_is_a_motoko_error_and_a_builtin() -> None:
    cases = ["study: s\njob: 3\n", "study: s\njobs: {}\n", "study: s\nretries: -1\n"]
    builtins = [ValueError, KeyError, ValueError]
    for text, builtin in zip(cases, builtins, strict=True):
        with pytest.raises(MotokoError) as info:
            parse_schema(text)
        assert isinstance(info.value, builtin)
        assert info.value.where is not None and info.value.hint

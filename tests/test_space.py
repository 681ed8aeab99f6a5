"""Tests of parameter-space expansion: sweeps, ranges, groups, order, dedupe."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from motoko.errors import ParameterError, UnknownNameError
from motoko.study.schema import StudySchema, load_schema, parse_schema
from motoko.study.space import expand, space_size
from motoko.study.sweeps import (
    MAX_SWEEP_VALUES,
    Linspace,
    Range,
    Sweep,
    Together,
    together,
)


def study(job: str, job_space: str = "", run: str = "{}") -> StudySchema:
    """Return a schema from inline bd.yaml parts (no files)."""
    text = f"study: s\njob: {job}\nrun: {run}\n"
    if job_space:
        text += "job_space:\n" + textwrap.indent(textwrap.dedent(job_space), "  ")
    return parse_schema(text)


XN = "{x: float, n: int}"


# -- plain values and sweeps ---------------------------------------------------------


def test_plain_values_give_one_job() -> None:
    assert expand(study(XN), {"x": 1.5, "n": 2}) == [{"x": 1.5, "n": 2}]


def test_list_for_scalar_field_is_a_sweep() -> None:
    assert expand(study(XN), {"x": [1.0, 2.0], "n": 0}) == [
        {"x": 1.0, "n": 0},
        {"x": 2.0, "n": 0},
    ]


def test_tuple_and_range_for_scalar_field_are_sweeps() -> None:
    jobs = expand(study(XN), {"x": (1.0,), "n": range(3)})
    assert [j["n"] for j in jobs] == [0, 1, 2]


def test_numpy_array_is_a_sweep() -> None:
    np = pytest.importorskip("numpy")
    jobs = expand(study(XN), {"x": np.array([0.5, 1.5]), "n": np.int64(3)})
    assert jobs == [{"x": 0.5, "n": 3}, {"x": 1.5, "n": 3}]
    assert type(jobs[0]["x"]) is float and type(jobs[0]["n"]) is int


def test_list_for_list_field_is_one_value() -> None:
    schema = study("{v: list}")
    assert expand(schema, {"v": [1, 2]}) == [{"v": [1, 2]}]
    assert expand(schema, {"v": (1, 2)}) == [{"v": [1, 2]}]
    assert expand(schema, {"v": []}) == [{"v": []}]


def test_sweep_of_lists_gives_a_list_field_several_values() -> None:
    jobs = expand(study("{v: list}"), {"v": Sweep([[1, 2], [3, 4]])})
    assert jobs == [{"v": [1, 2]}, {"v": [3, 4]}]


def test_mapping_for_dict_field_is_one_value_and_sweep_sweeps() -> None:
    schema = study("{d: dict}")
    assert expand(schema, {"d": {"range": [1, 2]}}) == [{"d": {"range": [1, 2]}}]
    assert expand(schema, {"d": Sweep([{"a": 1}, {"a": 2}])}) == [{"d": {"a": 1}}, {"d": {"a": 2}}]


def test_sweep_works_for_scalar_fields_too() -> None:
    assert expand(study("{n: int}"), {"n": Sweep([3, 1])}) == [{"n": 3}, {"n": 1}]


def test_sweep_refuses_a_string() -> None:
    with pytest.raises(ParameterError, match="a sweep takes a list of values"):
        Sweep("abc")


# -- product, order, dedupe ---------------------------------------------------------


def test_cartesian_product_in_field_order_last_fastest() -> None:
    schema = study("{a: int, b: str, c: int}")
    jobs = expand(schema, {"c": [1, 2], "b": "k", "a": [10, 20]})
    assert [(j["a"], j["c"]) for j in jobs] == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert all(list(j) == ["a", "b", "c"] for j in jobs)


def test_duplicates_are_dropped_keeping_the_first() -> None:
    jobs = expand(study("{n: int}"), {"n": [2, 1, 2, 3, 1]})
    assert [j["n"] for j in jobs] == [2, 1, 3]


def test_int_and_float_duplicates_merge_after_coercion() -> None:
    jobs = expand(study("{x: float}"), {"x": [1, 1.0, "1"]})
    assert jobs == [{"x": 1.0}]
    assert type(jobs[0]["x"]) is float


def test_list_values_that_differ_in_type_are_different_jobs() -> None:
    jobs = expand(study("{v: list}"), {"v": Sweep([[1], [1.0], [1]])})
    assert jobs == [{"v": [1]}, {"v": [1.0]}]


def test_expansion_is_deterministic() -> None:
    schema = study(XN)
    params = {"x": [3.0, 1.0], "n": [2, 1]}
    assert expand(schema, params) == expand(schema, params)


def test_study_without_job_fields_gives_one_empty_job() -> None:
    assert expand(study("{}"), {}) == [{}]


# -- coercion and errors -------------------------------------------------------------


def test_values_are_coerced_to_the_field_type() -> None:
    schema = study("{x: float, n: int, b: bool, s: str, t: datetime}")
    job = expand(schema, {"x": 2, "n": "7", "b": "yes", "s": 3, "t": "2024-01-02T03:04:05"})[0]
    assert job == {"x": 2.0, "n": 7, "b": True, "s": "3", "t": dt.datetime(2024, 1, 2, 3, 4, 5)}


def test_wrong_value_names_field_and_place() -> None:
    with pytest.raises(ParameterError) as info:
        expand(study(XN), {"x": [1.0, "abc"], "n": 1}, where="createTask in step mult")
    message = str(info.value)
    assert message.startswith("createTask in step mult: field 'x' expects a number, got 'abc'")
    assert info.value.field == "x" and info.value.value == "abc"


def test_non_integral_float_for_int_field_is_refused() -> None:
    with pytest.raises(ParameterError, match="field 'n' expects an integer, got 1.5"):
        expand(study(XN), {"x": 1, "n": 1.5})


def test_unknown_field_suggests_close_name() -> None:
    with pytest.raises(UnknownNameError) as info:
        expand(study("{alpha: float}"), {"alpah": 1}, where="task")
    assert str(info.value) == "task: unknown job field 'alpah' (did you mean 'alpha'?)"


def test_run_field_given_as_job_field_says_so() -> None:
    with pytest.raises(UnknownNameError) as info:
        expand(study("{x: float}", run="{compiler: str}"), {"x": 1, "compiler": "gcc"})
    assert "'compiler' is a run field of study 's'" in str(info.value)


def test_missing_fields_are_listed_with_the_fix() -> None:
    with pytest.raises(ParameterError) as info:
        expand(study("{x: float, n: int, s: str}"), {"n": 1})
    message = str(info.value)
    assert "no value for job field(s) 'x', 's' of study 's'" in message
    assert "createTask" in message and "job_space" in message


@pytest.mark.parametrize("empty", [[], (), Sweep([]), Range(3, 1)])
def test_empty_sweep_is_refused(empty: object) -> None:
    with pytest.raises(ParameterError) as info:
        expand(study(XN), {"x": 1.0, "n": empty})
    assert "field 'n' got an empty sweep" in str(info.value)
    assert info.value.field == "n"


# -- job_space defaults ------------------------------------------------------------------


def test_job_space_defaults_fill_missing_fields() -> None:
    schema = study(XN, "x: [1.0, 2.0]\nn: 5\n")
    assert expand(schema, {}) == [{"x": 1.0, "n": 5}, {"x": 2.0, "n": 5}]


def test_params_override_defaults_key_by_key() -> None:
    schema = study(XN, "x: [1.0, 2.0]\nn: 5\n")
    assert expand(schema, {"x": 9}) == [{"x": 9.0, "n": 5}]


def test_python_sweep_objects_in_job_space_work_and_store() -> None:
    schema = study(XN)
    schema.job_space = {"x": Range(0, 1, 0.5), "n": 1}
    assert [j["x"] for j in expand(schema, {})] == [0.0, 0.5, 1.0]
    assert schema.to_dict()["job_space"] == {"x": {"range": [0, 1, 0.5]}, "n": 1}


# -- Range and Linspace ---------------------------------------------------------------------


def test_integer_range_includes_stop_and_stays_int() -> None:
    assert Range(1, 5, 2).values == (1, 3, 5)
    assert Range(1, 3).values == (1, 2, 3)
    assert all(type(v) is int for v in Range(1, 3).values)


def test_integer_range_not_landing_on_stop() -> None:
    assert Range(0, 5, 2).values == (0, 2, 4)


def test_float_range_is_exact_in_decimal() -> None:
    assert Range(0, 0.3, 0.1).values == (0.0, 0.1, 0.2, 0.3)
    assert Range(0, 1, 0.25).values == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert Range(0, 0.95, 0.1).values[-1] == 0.9


def test_range_stop_within_tolerance_is_included() -> None:
    assert Range(0, 0.1 + 0.2, 0.1).values[-1] == pytest.approx(0.3)
    assert len(Range(0, 0.1 + 0.2, 0.1)) == 4


def test_descending_range() -> None:
    assert Range(3, 1, -1).values == (3, 2, 1)
    assert Range(1.0, 0.0, -0.5).values == (1.0, 0.5, 0.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, 0), "range step must not be 0"),
        ((True, 2), "range start must be a number"),
        (("0", 2), "range start must be a number, got '0'"),
        ((0, float("inf")), "range stop must be a finite number"),
        ((0, 1, 1e-9), "more than"),
    ],
)
def test_bad_range_is_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Range(*args)


def test_empty_range_fails_in_expand_naming_the_field() -> None:
    with pytest.raises(ParameterError, match="field 'x' got an empty sweep"):
        expand(study("{x: float}"), {"x": Range(1, 0, 0.5)})


def test_linspace_includes_both_ends() -> None:
    assert Linspace(0, 1, 5).values == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert Linspace(0, 1, 11).values[3] == 0.3
    assert Linspace(2, 2.5, 1).values == (2.0,)


@pytest.mark.parametrize(("num", "message"), [(0, "between 1 and"), (2.0, "must be an integer")])
def test_bad_linspace_num(num: object, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        Linspace(0, 1, num)


def test_linspace_for_int_field_needs_whole_numbers() -> None:
    assert expand(study("{n: int}"), {"n": Linspace(0, 4, 3)}) == [{"n": 0}, {"n": 2}, {"n": 4}]
    with pytest.raises(ParameterError, match="field 'n' expects an integer, got 0.5"):
        expand(study("{n: int}"), {"n": Linspace(0, 1, 3)})


def test_sweep_objects_compare_print_and_store() -> None:
    assert Range(0, 2) == Range(0, 2) and Range(0, 2) != Sweep([0, 1, 2])
    assert repr(Range(0, 2, 1)) == "Range(0, 2, 1)"
    assert repr(Linspace(0, 1, 3)) == "Linspace(0, 1, 3)"
    assert repr(Sweep([1])) == "Sweep([1])"
    assert Linspace(0, 1, 3).to_data() == {"linspace": [0, 1, 3]}
    assert Sweep((1, 2)).to_data() == {"sweep": [1, 2]}
    assert list(Range(1, 2)) == [1, 2]


# -- Together ----------------------------------------------------------------------------------


def test_together_zips_and_multiplies_with_the_rest() -> None:
    schema = study("{a: int, b: int, c: str}")
    jobs = expand(schema, {"c": ["p", "q"]}, [together(a=[1, 2], b=[3, 4])])
    assert [(j["a"], j["b"], j["c"]) for j in jobs] == [
        (1, 3, "p"),
        (1, 3, "q"),
        (2, 4, "p"),
        (2, 4, "q"),
    ]


def test_together_sits_at_its_first_field_in_the_order() -> None:
    schema = study("{a: int, b: int, c: int}")
    jobs = expand(schema, {"b": [7, 8]}, [Together(c=[1, 2], a=[3, 4])])
    assert [(j["a"], j["b"], j["c"]) for j in jobs] == [(3, 7, 1), (3, 8, 1), (4, 7, 2), (4, 8, 2)]


def test_together_values_are_single_values_even_for_list_fields() -> None:
    schema = study("{v: list, n: int}")
    jobs = expand(schema, {}, [Together(v=[[1, 2], [3]], n=Range(1, 2))])
    assert jobs == [{"v": [1, 2], "n": 1}, {"v": [3], "n": 2}]


def test_together_length_mismatch_is_refused() -> None:
    with pytest.raises(ParameterError) as info:
        Together(a=[1, 2], b=[3, 4, 5])
    message = str(info.value)
    assert "'a' has 2, 'b' has 3" in message
    assert "one value per job" in message


def test_together_needs_fields_and_lists() -> None:
    with pytest.raises(ParameterError, match="at least one field"):
        Together()
    with pytest.raises(ParameterError, match="field 'a' of a group expects a list of values"):
        Together(a=3)


def test_together_overrides_a_default() -> None:
    schema = study("{a: int, b: int}", "a: 100\nb: 200\n")
    assert expand(schema, {}, [Together(a=[1, 2])]) == [{"a": 1, "b": 200}, {"a": 2, "b": 200}]


def test_field_in_params_and_in_a_group_is_refused() -> None:
    with pytest.raises(ParameterError, match="field 'a' is given twice"):
        expand(study("{a: int, b: int}"), {"a": 1}, [Together(a=[1], b=[2])])
    with pytest.raises(ParameterError, match="field 'b' is given twice"):
        expand(study("{a: int, b: int}"), {}, [Together(a=[1], b=[2]), Together(b=[3])])


def test_group_with_unknown_field_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        expand(study("{alpha: int}"), {}, [Together(alpah=[1])])


def test_together_given_as_a_value_gets_a_hint() -> None:
    with pytest.raises(ParameterError, match="pass groups separately"):
        expand(study("{a: int}"), {"a": Together(a=[1])})


def test_groups_may_be_plain_mappings() -> None:
    jobs = expand(study("{a: int, b: int}"), {}, [{"a": [1, 2], "b": [3, 4]}])  # type: ignore[list-item]
    assert len(jobs) == 2


# -- bd.yaml forms ------------------------------------------------------------------------------


def test_yaml_range_linspace_and_sweep_forms() -> None:
    schema = study(
        "{a: int, x: float, v: list}",
        """\
        a: {range: [1, 3]}
        x: {linspace: [0, 1, 3]}
        v: {sweep: [[1], [2, 3]]}
        """,
    )
    jobs = expand(schema, {})
    assert len(jobs) == 3 * 3 * 2
    assert sorted({j["a"] for j in jobs}) == [1, 2, 3]
    assert sorted({j["x"] for j in jobs}) == [0.0, 0.5, 1.0]
    assert jobs[:2] == [{"a": 1, "x": 0.0, "v": [1]}, {"a": 1, "x": 0.0, "v": [2, 3]}]


def test_yaml_mapping_forms_work_in_create_task_params_too() -> None:
    jobs = expand(study("{x: float}"), {"x": {"range": [0, 1, 0.5]}})
    assert [j["x"] for j in jobs] == [0.0, 0.5, 1.0]


def test_yaml_comma_key_zips_fields(tmp_path: Path) -> None:
    schema = study("{a: int, b: float, c: int}", '"a, b": [[1, 3], [2, 4]]\nc: [7, 8]\n')
    jobs = expand(schema, {})
    assert [(j["a"], j["b"], j["c"]) for j in jobs] == [
        (1, 3.0, 7),
        (1, 3.0, 8),
        (2, 4.0, 7),
        (2, 4.0, 8),
    ]


def test_overriding_part_of_a_default_group_keeps_the_rest_varying() -> None:
    schema = study("{a: int, b: int}", '"a,b": [[1, 3], [2, 4]]\n')
    assert expand(schema, {"a": 9}) == [{"a": 9, "b": 3}, {"a": 9, "b": 4}]


def test_yaml_bool_sweep() -> None:
    schema = study("{flag: bool}", "flag: [true, false]\n")
    assert expand(schema, {}) == [{"flag": True}, {"flag": False}]


def test_yaml_unknown_form_suggests_with_line() -> None:
    with pytest.raises(UnknownNameError) as info:
        study("{x: float}", "x: {ragne: [0, 1]}\n")
    message = str(info.value)
    assert message.startswith("bd.yaml:5: unknown sweep form 'ragne' for field 'x'")
    assert "did you mean 'range'?" in message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{range: [0]}", "field 'x': range expects \\[start, stop, step\\]"),
        ("{linspace: [0, 1]}", "field 'x': linspace expects \\[start, stop, num\\]"),
        ("{range: [0, 1], sweep: [1]}", "field 'x' \\(float\\) got a mapping with 2 keys"),
        ("{sweep: 3}", "field 'x': a sweep takes a list of values"),
        ("{range: [0, a, 1]}", "field 'x': range stop must be a number"),
        ("{linspace: [0, 1, 0]}", "field 'x': linspace num must be between 1"),
        ("{sweep: []}", "field 'x' got an empty sweep"),
    ],
)
def test_yaml_bad_forms_name_line_and_field(value: str, message: str) -> None:
    with pytest.raises(ParameterError, match="^bd.yaml:5: " + message):
        study("{x: float}", f"x: {value}\n")


def test_yaml_group_row_of_wrong_length_names_the_row() -> None:
    with pytest.raises(ParameterError) as info:
        study("{a: int, b: int}", '"a,b": [[1, 2], [3]]\n')
    message = str(info.value)
    assert message.startswith("bd.yaml:5: group 'a,b': row 2 is [3]")
    assert "expected a list of 2 values (a, b)" in message


@pytest.mark.parametrize("key", ['"a,,b"', '"a,a"', '","'])
def test_yaml_group_key_must_name_distinct_fields(key: str) -> None:
    with pytest.raises(ParameterError, match="must name distinct fields"):
        study("{a: int, b: int}", f"{key}: [[1, 2]]\n")


def test_yaml_group_unknown_field_and_non_list() -> None:
    with pytest.raises(
        UnknownNameError, match=r"bd.yaml:5: unknown job field 'bb' \(did you mean 'b'"
    ):
        study("{a: int, b: int}", '"a,bb": [[1, 2]]\n')
    with pytest.raises(ParameterError, match="expects a list of rows \\[a, b\\]"):
        study("{a: int, b: int}", '"a,b": 3\n')


def test_yaml_forms_in_a_study_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "launch.sh").write_text("")
    (folder / "doIt.py").write_text("")
    (folder / "bd.yaml").write_text("job: {x: float}\njob_space:\n  x: {range: [0.5, 1.5, 0.5]}\n")
    schema = load_schema(folder)
    assert schema.name == "sweep"
    assert expand(schema, {}) == [{"x": 0.5}, {"x": 1.0}, {"x": 1.5}]


# -- sizes --------------------------------------------------------------------------------------


def test_space_size_counts_before_dedupe() -> None:
    schema = study("{a: int, b: int, c: int}", "c: [1, 2, 3]\n")
    assert space_size(schema, {"a": [1, 1]}, [Together(b=[5, 6])]) == 2 * 2 * 3
    assert len(expand(schema, {"a": [1, 1]}, [Together(b=[5, 6])])) == 2 * 3


def test_max_sweep_values_is_large_enough_for_real_studies() -> None:
    assert MAX_SWEEP_VALUES >= 100_000
    assert len(Range(1, 100_000)) == 100_000

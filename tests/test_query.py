"""Tests of the constraint language (motoko.study.query).

Pure unit tests: runs and jobs are plain namespaces, since a query only reads
attributes (and ``get_metadata()``) from them.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest

from motoko.errors import MotokoError, QueryError
from motoko.study.fields import BUILTIN_RUN_FIELDS, FIELD_TYPES
from motoko.study.query import (
    TRUE,
    And,
    Compare,
    Field,
    Not,
    Or,
    Query,
    TrueNode,
    describe,
    parse_query,
)

JOB_FIELDS = {
    "x": FIELD_TYPES["float"],
    "name": FIELD_TYPES["str"],
    "n": FIELD_TYPES["int"],
    "flag": FIELD_TYPES["bool"],
    "tags": FIELD_TYPES["list"],
    "opts": FIELD_TYPES["dict"],
}
RUN_FIELDS = {name: FIELD_TYPES[kind] for name, kind in BUILTIN_RUN_FIELDS.items()}
RUN_FIELDS["compiler"] = FIELD_TYPES["str"]
# "x" on both sides: the ambiguity cases use these.
AMBIGUOUS_RUN_FIELDS = {**RUN_FIELDS, "x": FIELD_TYPES["float"]}


def parse(constraints: Any, run_fields: dict[str, Any] | None = None) -> Query:
    return parse_query(constraints, JOB_FIELDS, RUN_FIELDS if run_fields is None else run_fields)


class FakeRun(SimpleNamespace):
    """A run with metadata, like records.Run."""

    def get_metadata(self) -> dict[str, str]:
        return dict(self.__dict__.get("_meta", {}))


RUN = FakeRun(
    id=7,
    state="FINISHED",
    compiler="gcc",
    nproc=4,
    created=dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.timezone.utc),
    energy=1.5,
    label="Alpha beta",
    count=3,
    done=True,
    _meta={"user": "ann", "size": "10"},
)
JOB = SimpleNamespace(id=3, x=2.5, name="ab, cd", n=4, flag=False, tags=[1, 2], opts={"a": 1})


# ---------------------------------------------------------------- AST shapes

# (constraint, canonical text of the parsed tree)
SHAPES = [
    ("state = FINISHED", "runs.state = 'FINISHED'"),
    ("state == FINISHED", "runs.state = 'FINISHED'"),
    ("state <> FINISHED", "runs.state != 'FINISHED'"),
    ("x > 2", "jobs.x > 2.0"),
    ("x>=-3", "jobs.x >= -3.0"),
    ("x < 1.5e3", "jobs.x < 1500.0"),
    ("state = FINISHED, x > 2", "runs.state = 'FINISHED' and jobs.x > 2.0"),
    ("state = FINISHED and x > 2", "runs.state = 'FINISHED' and jobs.x > 2.0"),
    ("state = A or state = B", "runs.state = 'A' or runs.state = 'B'"),
    ("n = 1 or n = 2, x > 0", "jobs.n = 1 or jobs.n = 2 and jobs.x > 0.0"),
    ("(n = 1 or n = 2), x > 0", "(jobs.n = 1 or jobs.n = 2) and jobs.x > 0.0"),
    ("not n = 1 and n = 2", "not jobs.n = 1 and jobs.n = 2"),
    ("not (n = 1 and n = 2)", "not (jobs.n = 1 and jobs.n = 2)"),
    ("not not n = 1", "not not jobs.n = 1"),
    ("NOT n = 1 OR n = 2 AND flag = yes", "not jobs.n = 1 or jobs.n = 2 and jobs.flag = true"),
    ("n in (1, 2, 3)", "jobs.n in (1, 2, 3)"),
    ("n IN (1)", "jobs.n in (1)"),
    ("state not in (FAILED, LOST)", "runs.state not in ('FAILED', 'LOST')"),
    ("state NOT IN ('A, B', C)", "runs.state not in ('A, B', 'C')"),
    ("not n in (1, 2)", "not jobs.n in (1, 2)"),
    ("name = 'ab, cd'", "jobs.name = 'ab, cd'"),
    ('name = "it\\"s (here)"', "jobs.name = 'it\"s (here)'"),
    ("name = 'a\\'b'", "jobs.name = 'a\\'b'"),
    ("run_path = /scratch/a-b/c:d.1", "runs.run_path = '/scratch/a-b/c:d.1'"),
    ("name = 3", "jobs.name = '3'"),
    ("name ~ '^a.*\\d+$'", "jobs.name ~ '^a.*\\\\d+$'"),
    ("name ~* ^ab", "jobs.name ~* '^ab'"),
    ("name !~ x", "jobs.name !~ 'x'"),
    ("name !~* x", "jobs.name !~* 'x'"),
    ("created > 2026-01-01T10:00+01:00", "runs.created > 2026-01-01T10:00:00+01:00"),
    ("flag = TRUE", "jobs.flag = true"),
    ("tags = [1, 2]", "jobs.tags = '[1, 2]'"),
    ('tags != \'["a", "b"]\'', 'jobs.tags != \'["a", "b"]\''),
    ('opts = {"a": 1}', "jobs.opts = '{\"a\": 1}'"),
    ("id = 3", "runs.id = 3"),
    ("jobs.id = 3", "jobs.id = 3"),
    ("job_id = 3", "runs.job_id = 3"),
    ("run.state = A", "runs.state = 'A'"),
    ("JOB.x = 1", "jobs.x = 1.0"),
    ("meta.user = ann", "meta.user = 'ann'"),
    ("metadata.size > 10", "meta.size > '10'"),
    ("runs.energy > 1", "runs.energy > 1"),
    ("runs.energy > 1.0", "runs.energy > 1.0"),
    ("runs.label = '3'", "runs.label = '3'"),
    ("runs.done = true", "runs.done = true"),
    ("runs.gone = null", "runs.gone = null"),
    ("runs.gone != None", "runs.gone != null"),
    ("runs.word = hello", "runs.word = 'hello'"),
    ("runs.count in (1, two, 3.5)", "runs.count in (1, 'two', 3.5)"),
    ("", ""),
    ("   ", ""),
    ("((n = 1))", "jobs.n = 1"),
    ("(n = 1 or (n = 2 or n = 3))", "jobs.n = 1 or jobs.n = 2 or jobs.n = 3"),
    ("n = 1, (n = 2, n = 3)", "jobs.n = 1 and jobs.n = 2 and jobs.n = 3"),
]


@pytest.mark.parametrize(("text", "expected"), SHAPES)
def test_shape(text: str, expected: str) -> None:
    query = parse(text)
    assert describe(query) == expected
    # The canonical text is itself a valid constraint that means the same.
    assert parse(expected).root == query.root


def test_tree_is_flat_and_typed() -> None:
    root = parse("state = FINISHED, x > 2 and (n in (1, 2) or not flag = true)").root
    assert isinstance(root, And)
    assert len(root.items) == 3
    first, second, third = root.items
    assert first == Compare(Field("state", "runs", FIELD_TYPES["str"]), "=", "FINISHED")
    assert isinstance(second, Compare)
    assert second.value == 2.0 and isinstance(second.value, float)
    assert second.field == Field("x", "jobs", FIELD_TYPES["float"])
    assert second.column == 19
    assert isinstance(third, Or)
    assert third.items[0] == Compare(Field("n", "jobs", FIELD_TYPES["int"]), "in", (1, 2))
    assert isinstance(third.items[1], Not)


def test_field_tables() -> None:
    query = parse("meta.user = a, runs.free = 1, runs.compiler = gcc, jobs.n = 1")
    assert query.fields() == {
        Field("user", "meta", None),
        Field("free", "free", None),
        Field("compiler", "runs", FIELD_TYPES["str"]),
        Field("n", "jobs", FIELD_TYPES["int"]),
    }


@pytest.mark.parametrize("empty", [None, "", "  ", [], (), ["", " "]])
def test_empty_means_everything(empty: Any) -> None:
    query = parse(empty)
    assert query.root == TRUE
    assert isinstance(query.root, TrueNode)
    assert query.matches(RUN, JOB)
    assert query.fields() == set()


def test_list_input_is_anded() -> None:
    query = parse(["state = FINISHED", "n = 1 or n = 4", "x > 2, flag = false"])
    assert describe(query) == (
        "runs.state = 'FINISHED' and (jobs.n = 1 or jobs.n = 4) and jobs.x > 2.0 and jobs.flag = false"
    )
    assert query.text == "(state = FINISHED) and (n = 1 or n = 4) and (x > 2, flag = false)"
    assert query.matches(RUN, JOB)
    assert parse(("state = FINISHED",)).text == "state = FINISHED"


def test_error_in_list_item_reports_that_item() -> None:
    with pytest.raises(QueryError) as info:
        parse(["state = FINISHED", "x > abc"])
    assert info.value.text == "x > abc"
    assert info.value.column == 5


@pytest.mark.parametrize("bad", [3, ["state = A", 4], {"state": "A"}])
def test_non_string_input(bad: Any) -> None:
    with pytest.raises(QueryError, match="string"):
        parse(bad)


# ------------------------------------------------------------------- matching

# (constraint, expected match on RUN/JOB)
MATCHES = [
    ("state = FINISHED", True),
    ("state = finished", False),
    ("state != FINISHED", False),
    ("x > 2", True),
    ("x > 2.5", False),
    ("x >= 2.5", True),
    ("n = 4, x < 3", True),
    ("n = 4, x > 3", False),
    ("n = 5 or x < 3", True),
    ("n = 5 or x > 3", False),
    ("n = 5 or n = 4 and x > 3", False),
    ("(n = 5 or n = 4) and x < 3", True),
    ("not n = 4", False),
    ("not (n = 5 or x > 3)", True),
    ("n in (1, 4)", True),
    ("n not in (1, 4)", False),
    ("state in (FAILED, LOST)", False),
    ("name = 'ab, cd'", True),
    ("name ~ 'b, c'", True),
    ("name ~ '^B'", False),
    ("name ~* '^A'", True),
    ("name !~ '^A'", True),
    ("name !~* '^A'", False),
    ("x ~ '^2\\.5$'", True),  # regexes see str() of numbers
    ("flag = false", True),
    ("flag = 1", False),
    ("tags = [1, 2]", True),
    ("tags = [1.0, 2.0]", True),
    ("tags != [2, 1]", True),
    ('opts = {"a": 1}', True),
    ("created > 2026-01-01", True),
    ("created < 2026-01-02T09:00+00:00", False),
    ("created > 2026-01-02T09:00+00:00", True),
    ("created = 2026-01-02T11:00+01:00", True),
    ("created in (2026-01-02T10:00Z, 2027-01-01T00:00Z)", True),
    ("id = 7", True),
    ("jobs.id = 3", True),
    ("meta.user = ann", True),
    ("meta.size = 10", True),
    ("meta.size > 9", False),  # metadata compares as strings: "10" < "9"
    ("meta.missing = x", False),
    ("meta.missing != x", True),
    ("runs.energy > 1", True),
    ("runs.energy = 1.5", True),
    ("runs.count = 3", True),
    ("runs.count = '3'", False),  # quoted: a string, and 3 != "3"
    ("runs.label ~ beta", True),
    ("runs.done = true", True),
    ("runs.count in (1, two, 3)", True),
    ("runs.gone = null", True),
    ("runs.gone != null", False),
    ("runs.energy = null", False),
    ("runs.energy != null", True),
    # A missing attribute: False, except for the negative operators.
    ("runs.gone = 1", False),
    ("runs.gone < 1", False),
    ("runs.gone > 1", False),
    ("runs.gone ~ a", False),
    ("runs.gone != 1", True),
    ("runs.gone !~ a", True),
    ("runs.gone !~* a", True),
    ("runs.gone in (1, 2)", False),
    ("runs.gone not in (1, 2)", True),
    ("not runs.gone > 1", True),
    # Incomparable types are False, never an exception.
    ("runs.label > 3", False),
    ("runs.label < 3", False),
    ("runs.energy < abc", False),
]


@pytest.mark.parametrize(("text", "expected"), MATCHES)
def test_matches(text: str, expected: bool) -> None:
    query = parse(text)
    assert query.matches(RUN, JOB) is expected
    # The canonical form selects the same runs.
    assert parse(describe(query)).matches(RUN, JOB) is expected


def test_naive_times_are_local_times() -> None:
    query = parse("created > 2026-01-01T10:00")
    leaf = query.root
    assert isinstance(leaf, Compare)
    assert leaf.value == dt.datetime(2026, 1, 1, 10, 0).astimezone()
    assert query.matches(RUN, JOB)  # an aware UTC time, as records store
    assert query.matches(FakeRun(created=dt.datetime(2026, 1, 3)), JOB)  # a naive one
    assert not query.matches(FakeRun(created=dt.datetime(2025, 12, 30)), JOB)


def test_run_without_metadata_support() -> None:
    query = parse("meta.user = ann")
    assert not query.matches(SimpleNamespace(), JOB)
    assert parse("meta.user != ann").matches(SimpleNamespace(), JOB)


def test_non_string_metadata_is_compared_as_string() -> None:
    run = FakeRun(_meta={"size": 10})
    assert parse("meta.size = 10").matches(run, JOB)


def test_array_truth_is_false_not_an_error() -> None:
    class Ambiguous:
        def __eq__(self, other: object) -> bool:
            raise ValueError("truth value of an array is ambiguous")

    assert not parse("runs.arr = 1").matches(FakeRun(arr=Ambiguous()), JOB)


def test_compare_built_by_hand() -> None:
    """The database may build nodes itself; they match like parsed ones."""
    leaf = Compare(Field("n", "jobs", FIELD_TYPES["int"]), "in", [1, 4])
    assert leaf.value == (1, 4)
    assert leaf.matches(RUN, JOB)
    assert Or((leaf, TRUE)).matches(RUN, JOB)
    assert not And((leaf, Not(TRUE))).matches(RUN, JOB)
    with pytest.raises(ValueError, match="unknown operator"):
        Compare(Field("n", "jobs", FIELD_TYPES["int"]), "=>", 1)


def test_regex_is_compiled_once() -> None:
    from motoko.study import query as module

    module.compile_pattern.cache_clear()
    parse("name ~ 'zz+', name ~ 'zz+'").matches(RUN, JOB)
    info = module.compile_pattern.cache_info()
    assert info.misses == 1


# --------------------------------------------------------------------- errors

# (constraint, column, words the message must contain)
ERRORS = [
    ("state = FINISHED)", 17, ["unexpected ')'", "unbalanced"]),
    ("(state = FINISHED", 1, ["unclosed '('"]),
    ("((n = 1)", 1, ["unclosed '('"]),
    ("(n = 1))", 8, ["unexpected ')'"]),
    ("n = 1 n = 2", 7, ["expected ',', 'and', 'or'", "'n'"]),
    ("state =", 8, ["expected a value after '='", "end"]),
    ("state = , n = 1", 9, ["expected a value", "','"]),
    ("state = and", 9, ["expected a value", "'and'"]),
    ("state FINISHED", 7, ["expected an operator after 'state'", "'FINISHED'"]),
    ("state", 6, ["expected an operator", "end"]),
    ("x => 2", 3, ["unknown operator '=>'", "~*"]),
    ("x =~ 2", 3, ["unknown operator '=~'"]),
    ("x ! 2", 3, ["unknown operator '!'"]),
    ("n = 1 and", 10, ["expected a field name", "end"]),
    ("n = 1,", 7, ["expected a field name"]),
    ("n = 1 or", 9, ["expected a field name"]),
    ("and n = 1", 1, ["expected a field name", "'and'"]),
    ("not", 4, ["expected a field name"]),
    ("()", 2, ["expected a field name", "')'"]),
    (",", 1, ["expected a field name"]),
    ("3 > x", 1, ["expected a field name", "'3'"]),
    ("'x' = 3", 1, ["expected a field name"]),
    ("name = 'abc", 8, ["unterminated string"]),
    ("name = ''", 8, ["empty value", "^$"]),
    ("tags = [1, 2", 8, ["unclosed '['"]),
    ("x = abc", 5, ["'x'", "expects a number", "'abc'"]),
    ("n = 1.5", 5, ["'n'", "expects an integer"]),
    ("n in (1, b)", 10, ["'n'", "expects an integer", "'b'"]),
    ("flag = maybe", 8, ["'flag'", "true or false"]),
    ("created > yesterday", 11, ["'created'", "ISO date-time"]),
    ("x in 1, 2", 6, ["expected '(' after 'in'"]),
    ("x in (1, 2", 6, ["unclosed '('"]),
    ("x in (1 2)", 9, ["expected ',' or ')'"]),
    ("x in ()", 7, ["expected a value"]),
    ("name ~ '('", 8, ["invalid regular expression", "'name'"]),
    ("name !~* '[a-'", 10, ["invalid regular expression"]),
    ("tags > [1]", 1, ["'tags' is a list", "only = and !="]),
    ("tags ~ 1", 1, ["only = and !="]),
    ("tags in ([1], [2])", 1, ["only = and !="]),
    ("tags = abc", 8, ["expects a JSON list"]),
    ("tags = '{\"a\": 1}'", 8, ["'tags'", "expects a list"]),
    ("opts = [1]", 8, ["'opts'", "expects a mapping"]),
    ("runs.gone > null", 13, ["null", "= or !="]),
    ("jobs.nope = 1", 1, ["unknown job field 'nope'", "no free attributes"]),
    ("jobs.nmae = 1", 1, ["unknown job field", "did you mean 'name'"]),
    ("runs. = 1", 1, ["missing field name after 'runs.'"]),
    ("runs.a-b = 1", 6, ["invalid field name 'a-b'"]),
    ("meta. = 1", 1, ["missing field name"]),
    ("foo.bar = 1", 1, ["expected a field name", "runs., jobs. or meta."]),
]


@pytest.mark.parametrize(("text", "column", "words"), ERRORS)
def test_errors(text: str, column: int, words: list[str]) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    error = info.value
    assert error.column == column, str(error)
    assert error.text == text
    message = str(error)
    for word in words:
        assert word in message, message
    assert f"column {column}" in message
    # Callers may catch it as a ValueError or as any motoko error.
    assert isinstance(error, ValueError) and isinstance(error, MotokoError)


def test_ambiguous_field_suggests_both_prefixes() -> None:
    with pytest.raises(QueryError) as info:
        parse("state = A, x > 2", AMBIGUOUS_RUN_FIELDS)
    assert info.value.column == 12
    assert "ambiguous field 'x'" in info.value.message
    assert "runs.x" in (info.value.hint or "") and "jobs.x" in (info.value.hint or "")
    assert describe(parse("runs.x > 2, jobs.x < 1", AMBIGUOUS_RUN_FIELDS)) == (
        "runs.x > 2.0 and jobs.x < 1.0"
    )


def test_id_is_the_run_id_even_though_jobs_have_one() -> None:
    assert parse("id = 1").fields() == {Field("id", "runs", FIELD_TYPES["int"])}


def test_unknown_field_suggests_close_names() -> None:
    with pytest.raises(QueryError) as info:
        parse("nmae = abc")
    hint = info.value.hint or ""
    assert info.value.column == 1
    assert "unknown field 'nmae'" in info.value.message
    assert "did you mean 'name'" in hint
    assert "runs.nmae" in hint and "free attribute" in hint


def test_unknown_field_lists_possible_names() -> None:
    with pytest.raises(QueryError) as info:
        parse_query("zzz = 1", {"x": FIELD_TYPES["float"]}, {"compiler": FIELD_TYPES["str"]})
    hint = info.value.hint or ""
    assert "possible:" in hint and "compiler" in hint and "attempt" in hint


def test_builtins_are_added_when_missing() -> None:
    query = parse_query("state = A, jobs.id = 2, id = 1", {}, {})
    assert {f.table for f in query.fields()} == {"runs", "jobs"}


# -- constraints given as structures (Where) -------------------------------------------------


def test_where_selects_by_a_value_with_quotes_exactly():
    from motoko.study.query import Where

    query = parse_query([Where("run_name", "=", "it's a \\ name' or 'x")], {}, {})
    (leaf,) = query.root.items if hasattr(query.root, "items") else (query.root,)
    assert leaf.field.name == "run_name" and leaf.value == "it's a \\ name' or 'x"
    # its description parses back to the same tree
    assert parse_query(str(query), {}, {}).root == query.root


def test_where_coerces_and_refuses_like_a_constraint_string():
    from motoko.errors import QueryError
    from motoko.study.fields import FIELD_TYPES
    from motoko.study.query import Where

    jobs = {"x": FIELD_TYPES["int"]}
    assert parse_query([Where("x", "in", ["1", 2])], jobs, {}).root.value == (1, 2)
    assert str(Where("x", "in", [1, "a'b"])) == "x in (1, 'a\\'b')"
    with pytest.raises(QueryError, match="expects"):
        parse_query([Where("x", "=", "not a number")], jobs, {})
    with pytest.raises(QueryError, match="unknown field 'y'"):
        parse_query([Where("y", "=", 1)], jobs, {})
    with pytest.raises(QueryError, match="unsupported operator"):
        parse_query([Where("x", "~", "a")], jobs, {})

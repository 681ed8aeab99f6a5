"""The constraint language: ``"state = FINISHED, x > 2"`` → a :class:`Query`.

Users select runs with BlackDynamite-style constraint strings. This module
parses them into a small, immutable tree (:class:`Compare` leaves joined by
:class:`And`, :class:`Or`, :class:`Not`) that serves two readers: ``matches``
evaluates it on one run/job pair (a full scan), and the database walks it to
answer what it can from its indexes.
The text is cut into tokens by :mod:`motoko.study.query_tokens`; this module
parses them and resolves fields and values against the study's schema.

Syntax (keywords ``and or not in`` and the prefixes are case-insensitive)::

    query      := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr (("," | "and") not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := FIELD OP VALUE | FIELD ["not"] "in" "(" VALUE ("," VALUE)* ")"

So ``not`` binds tighter than ``and``/``,``, which bind tighter than ``or``.
Operators: ``< > <= >= = != ~ ~* !~ !~*`` (``==`` is ``=``, ``<>`` is ``!=``).
``~`` is a case-sensitive regex search, ``~*`` a case-insensitive one (RE2:
linear time, no backreferences or lookaround), and
``!~``/``!~*`` their negations; they compare ``str()`` of non-string values.

Values are bare words (``FINISHED``, ``-3``, ``1.5``, ``2026-01-01T10:00``,
``a/b:c``) or quoted with ``'`` or ``"`` (a backslash escapes the quote or a
backslash; any other backslash is kept, so ``'\\d+'`` is the regex ``\\d+``).
Quote values that contain spaces, commas, parentheses or ``< > = ! ~``, and
values spelled ``and``/``or``. Inside a bare ``[...]`` or ``{...}`` commas and
spaces belong to the value, so ``tags = [1, 2]`` needs no quotes. An empty
value, even ``''``, is an error: match empty strings with ``name ~ '^$'``.

Fields:
    * ``x`` — a job field or a run field (built-in or declared in bd.yaml).
      A name that is both is refused as ambiguous; write ``runs.x`` or
      ``jobs.x``. Exception: a bare ``id`` means ``runs.id``, because a query
      selects runs (the job's id is ``jobs.id``, or ``job_id``).
    * ``runs.x``/``run.x``, ``jobs.x``/``job.x`` — explicitly one table.
    * ``runs.x`` where ``x`` is not a declared run field — a *free attribute*
      of the run (set by ``doIt.py``). Its value is not coerced: a bare
      literal compares as an int, else a float, else ``true``/``false``, else
      ``null``/``none`` (None), else a string; a quoted literal is a string.
    * ``meta.KEY``/``metadata.KEY`` — the run's metadata, compared as strings.

Values of typed fields are coerced with :meth:`FieldType.coerce` when the
query is parsed (``x > 2`` on a float field compares with ``2.0``), so a typo
fails once, with its column, instead of silently matching nothing. ``list``
and ``dict`` fields take a JSON literal and only ``=`` and ``!=``. A date-time
without a UTC offset (``created > 2026-01-01T10:00``) is local time; runs
store aware UTC times, and the two compare correctly.

Missing values: a run without the attribute (or metadata key) has the value
None, and every comparison with None is False, except the negative ones
(``!=``, ``!~``, ``!~*``, ``not in``), which are True. ``runs.x = null`` is True
exactly for a missing (or None) ``x``. Comparing incomparable types (a string
with a number) is False, never an exception.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from motoko.errors import QueryError, did_you_mean
from motoko.study.constraints import (  # noqa: F401 (the tree is part of this API)
    OPERATORS,
    REGEX_OPERATORS,
    TRUE,
    And,
    Compare,
    Field,
    Node,
    Not,
    Or,
    PatternError,
    Query,
    TrueNode,
    compile_pattern,
    describe,
    literal,
    pattern_problem,
)
from motoko.study.fields import BUILTIN_JOB_FIELDS, BUILTIN_RUN_FIELDS, FIELD_TYPES, FieldType
from motoko.study.query_tokens import OPERATOR_HINT, SPELLINGS, Token, tokenize

_KEYWORDS = frozenset({"and", "or", "not", "in"})
_PREFIXES = {"runs": "runs", "run": "runs", "jobs": "jobs", "job": "jobs"}
_PREFIXES |= {"meta": "meta", "metadata": "meta"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --------------------------------------------------------------------- parser


@dataclass(frozen=True)
class _Raw:
    text: str
    quoted: bool
    column: int


def _free_literal(text: str) -> Any:
    """Guess the type of a bare literal compared with an untyped free attribute."""
    for convert in (int, float):
        try:
            value = convert(text)
        except ValueError:
            continue
        if value == value:  # "nan" stays a string: NaN never equals anything
            return value
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return None if low in ("null", "none") else text


def _join(kind: type[And] | type[Or], items: Sequence[Node]) -> Node:
    """Build an n-ary node, flattening nested ones of the same kind.

    Flat nodes give the database one list of conditions to pick indexes from.
    """
    flat: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            flat.extend(item.items)
        elif not (kind is And and isinstance(item, TrueNode)):
            flat.append(item)
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


#: Most levels of parentheses and ``not`` a constraint may nest.
MAX_DEPTH = 100


class _Parser:
    """Recursive descent over one constraint string (grammar: module docstring)."""

    def __init__(self, text: str, jobs: Mapping[str, FieldType], runs: Mapping[str, FieldType]):
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0
        self.jobs = jobs
        self.runs = runs
        self.depth = 0

    # -- helpers

    def error(self, message: str, column: int, hint: str | None = None) -> QueryError:
        return QueryError(message, text=self.text, column=column, hint=hint)

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def keyword(self, ahead: int = 0) -> str:
        """Return the keyword at the current (or a later) token, or ``""``."""
        token = self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]
        low = token.text.lower()
        return low if token.kind == "word" and low in _KEYWORDS else ""

    def expected(self, what: str, token: Token, hint: str | None = None) -> QueryError:
        got = "the end of the constraint" if token.kind == "end" else repr(token.text)
        return self.error(f"expected {what}, got {got}", token.column, hint)

    # -- grammar

    def parse(self) -> Node:
        if self.token.kind == "end":
            return TRUE
        node = self.parse_or()
        token = self.token
        if token.kind == ")":
            raise self.error("unexpected ')'", token.column, "parentheses are unbalanced")
        if token.kind != "end":
            raise self.expected(
                "',', 'and', 'or' or the end", token, "quote values that contain spaces or commas"
            )
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.keyword() == "or":
            self.advance()
            items.append(self.parse_and())
        return _join(Or, items)

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.token.kind == "," or self.keyword() == "and":
            self.advance()
            items.append(self.parse_not())
        return _join(And, items)

    def parse_not(self) -> Node:
        # Each '(' and 'not' nests one call: bounded, so that 1,000 parentheses
        # give one line instead of a RecursionError.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise self.error(f"conditions nested more than {MAX_DEPTH} levels deep", self.token.column,
                                 "remove redundant parentheses or 'not'")
            return self._parse_not()
        finally:
            self.depth -= 1

    def _parse_not(self) -> Node:
        if self.keyword() == "not":
            self.advance()
            return Not(self.parse_not())
        opening = self.token
        if opening.kind != "(":
            return self.parse_comparison()
        self.advance()
        node = self.parse_or()
        if self.token.kind == "end":
            raise self.error("unclosed '('", opening.column, "add the matching ')'")
        if self.token.kind != ")":
            raise self.expected(
                "')', ',', 'and' or 'or'", self.token, "join conditions with , and or"
            )
        self.advance()
        return node

    def parse_comparison(self) -> Compare:
        name = self.token
        if name.kind != "word" or self.keyword():
            raise self.expected("a field name", name, "write FIELD OP VALUE, e.g. state = FINISHED")
        self.advance()
        field = self.resolve(name)
        op = self.token
        if self.keyword() == "in" or (self.keyword() == "not" and self.keyword(1) == "in"):
            negated = self.keyword() == "not"
            self.pos += 2 if negated else 1
            return self.build(name, field, "not in" if negated else "in", self.parse_list(op))
        if op.kind != "op":
            raise self.expected(f"an operator after {name.text!r}", op, OPERATOR_HINT)
        self.advance()
        return self.build(name, field, op.text, [self.parse_value(op)])

    def parse_list(self, op: Token) -> list[_Raw]:
        opening = self.token
        if opening.kind != "(":
            raise self.expected("'(' after 'in'", opening, "write x in (a, b, c)")
        self.advance()
        values = [self.parse_value(opening)]
        while self.token.kind == ",":
            values.append(self.parse_value(self.advance()))
        if self.token.kind == "end":
            raise self.error("unclosed '('", opening.column, "add the matching ')'")
        if self.token.kind != ")":
            raise self.expected(
                "',' or ')' in the list of values",
                self.token,
                "write x in (a, b, c); quote values with spaces",
            )
        self.advance()
        return values

    def parse_value(self, after: Token) -> _Raw:
        token = self.token
        if token.kind == "string" and token.text:
            self.advance()
            return _Raw(token.text, True, token.column)
        if token.kind == "word" and self.keyword() not in ("and", "or"):
            self.advance()
            return _Raw(token.text, False, token.column)
        if token.kind == "string":
            raise self.error("empty value", token.column, "match an empty string with FIELD ~ '^$'")
        raise self.expected(
            f"a value after {after.text!r}",
            token,
            "quote values that are keywords or contain spaces",
        )

    # -- fields and values

    def resolve(self, name: Token) -> Field:
        """Turn a written field name into a :class:`Field` (see the module docstring)."""
        prefix, dot, rest = name.text.partition(".")
        table = _PREFIXES.get(prefix.lower()) if dot else None
        if table is None:
            return self.resolve_bare(name)
        if not rest:
            raise self.error(
                f"missing field name after {name.text!r}", name.column, f"write e.g. {name.text}x"
            )
        if table == "meta":
            return Field(rest, "meta", None)
        if not _IDENTIFIER.match(rest):
            raise self.error(
                f"invalid field name {rest!r}",
                name.column + len(prefix) + 1,
                "a field name is a letter or _ followed by letters, digits or _",
            )
        if table == "runs":
            kind = self.runs.get(rest)
            return Field(rest, "runs", kind) if kind else Field(rest, "free", None)
        if rest in self.jobs:
            return Field(rest, "jobs", self.jobs[rest])
        raise self.error(
            f"unknown job field {rest!r}",
            name.column,
            did_you_mean(rest, self.jobs) + "; jobs have no free attributes",
        )

    def resolve_bare(self, name: Token) -> Field:
        written = name.text
        if not _IDENTIFIER.match(written):
            hint = "prefix it with runs., jobs. or meta." if "." in written else None
            raise self.expected("a field name", name, hint)
        if written == "id":  # queries select runs: "id" is the run's id
            return Field("id", "runs", self.runs["id"])
        if written in self.jobs and written in self.runs:
            raise self.error(
                f"ambiguous field {written!r}: both a job field and a run field",
                name.column,
                f"write runs.{written} or jobs.{written}",
            )
        if written in self.jobs:
            return Field(written, "jobs", self.jobs[written])
        if written in self.runs:
            return Field(written, "runs", self.runs[written])
        hint = did_you_mean(written, {*self.jobs, *self.runs})
        hint += " " if hint.endswith("?") else "; "
        hint += f"runs.{written} addresses a free attribute of the run, meta.{written} its metadata"
        raise self.error(f"unknown field {written!r}", name.column, hint)

    def build(self, name: Token, field: Field, op: str, raws: list[_Raw]) -> Compare:
        """Check the operator against the field and convert the literal(s)."""
        kind = field.type
        if kind is not None and not kind.scalar and op not in ("=", "!="):
            raise self.error(
                f"field {name.text!r} is a {kind.name}: only = and != apply to it",
                name.column,
                f"compare it with a JSON literal, e.g. {name.text} = "
                + ("[1, 2]" if kind.name == "list" else '{"a": 1}'),
            )
        if op in REGEX_OPERATORS:
            try:
                compile_pattern(raws[0].text, op.endswith("*"))
            except PatternError as exc:
                raise self.error(
                    f"invalid regular expression for {name.text!r}: {pattern_problem(exc)}",
                    raws[0].column,
                    "quote patterns that contain spaces, commas, parentheses or < > = ! ~",
                ) from None
            return Compare(field, op, raws[0].text, name.column)
        if op in ("in", "not in"):
            return Compare(
                field, op, tuple(self.convert(name, field, r) for r in raws), name.column
            )
        value = self.convert(name, field, raws[0])
        if value is None and op not in ("=", "!="):
            raise self.error(
                f"null can only be compared with = or !=, not {op!r}",
                raws[0].column,
                f"write {name.text} = null or {name.text} != null",
            )
        return Compare(field, op, value, name.column)

    def convert(self, name: Token, field: Field, raw: _Raw) -> Any:
        """Coerce a literal to the field's type, failing at the literal's column."""
        kind = field.type
        if kind is None:
            return raw.text if field.table == "meta" or raw.quoted else _free_literal(raw.text)
        value: Any = raw.text
        if not kind.scalar:
            try:
                value = json.loads(raw.text)
            except ValueError:
                raise self.error(
                    f"field {name.text!r} expects a JSON {kind.name}, got {raw.text!r}",
                    raw.column,
                    'write e.g. [1, 2] or {"a": 1}',
                ) from None
        try:
            value = kind.coerce(value, field=name.text, stored=False)
        except ValueError:
            raise self.error(
                f"field {name.text!r} expects {kind.expected}, got {raw.text!r}",
                raw.column,
                f"{name.text!r} is a {kind.name} field: compare it with {kind.expected}",
            ) from None
        if isinstance(value, _dt.datetime) and value.tzinfo is None:
            value = value.astimezone()  # naive means local time; runs store aware UTC times
        return value


# ---------------------------------------------------------------------- entry


@dataclass(frozen=True)
class Where:
    """One comparison given as a structure, never as text: ``Where("run_name", "=", name)``.

    Code that selects by a value it did not write itself (a run name, a
    user's string) passes a ``Where`` among the constraints instead of
    formatting a constraint string, so no quoting can break or widen the
    selection. The field is resolved and the value coerced exactly as in a
    constraint string.

    Attributes:
        field: A field name as in a constraint string (``x``, ``runs.x``, ``state``).
        op: An operator (``=``, ``!=``, ``<``, ..., ``in``, ``not in``).
        value: The value; a sequence of values for ``in``/``not in``.
    """

    field: str
    op: str
    value: Any

    def resolve(self, jobs: Mapping[str, FieldType], runs: Mapping[str, FieldType]) -> Compare:
        """Return the comparison node, the field resolved against the study's fields.

        Raises:
            QueryError: for an unknown field or operator, or a value of the wrong type.
        """
        op = SPELLINGS.get(self.op, self.op)
        text = f"{self.field} {op} ..."
        parser = _Parser(self.field, jobs, runs)
        if op not in OPERATORS or op in REGEX_OPERATORS:
            raise QueryError(f"unsupported operator {self.op!r} in a Where", text=text, hint=OPERATOR_HINT)
        field = parser.resolve(parser.token) if parser.token.kind == "word" else None
        if field is None:
            raise QueryError(f"not a field name: {self.field!r}", text=text)
        values = tuple(self.value) if op in ("in", "not in") else (self.value,)
        coerced = []
        for value in values:
            if field.type is None or value is None:
                coerced.append(value)
                continue
            try:
                coerced.append(field.type.coerce(value, field=self.field))
            except ValueError:
                raise QueryError(
                    f"field {self.field!r} expects {field.type.expected}, got {value!r}", text=text
                ) from None
        return Compare(field, op, tuple(coerced) if op in ("in", "not in") else coerced[0])

    def __str__(self) -> str:
        if self.op in ("in", "not in"):
            return f"{self.field} {self.op} (" + ", ".join(literal(v) for v in self.value) + ")"
        return f"{self.field} {self.op} {literal(self.value)}"


Constraint = str | Where


def _texts(constraints: Constraint | Sequence[Constraint] | None) -> list[Constraint]:
    if constraints is None:
        return []
    if isinstance(constraints, str | Where):
        return [constraints]
    if isinstance(constraints, list | tuple):
        for item in constraints:
            if not isinstance(item, str | Where):
                raise QueryError(
                    f"a constraint must be a string, got {item!r} ({type(item).__name__})",
                    text=repr(constraints),
                    hint='write e.g. ["state = FINISHED", "x > 2"]',
                )
        return list(constraints)
    raise QueryError(
        f"constraints must be a string or a list of strings, got {type(constraints).__name__}",
        text=repr(constraints),
        hint='write e.g. "state = FINISHED, x > 2"',
    )


def parse_query(
    constraints: Constraint | Sequence[Constraint] | None,
    job_fields: Mapping[str, FieldType],
    run_fields: Mapping[str, FieldType],
) -> Query:
    """Parse constraint text into a :class:`Query`.

    Args:
        constraints: One string, a list/tuple of strings (AND-ed; each may use
            the whole syntax) or :class:`Where` structures, or None. None, ``""`` and ``[]`` mean "every run".
        job_fields: The study's job fields by name. The built-in ones
            (:data:`BUILTIN_JOB_FIELDS`) are added when missing.
        run_fields: The study's run fields by name, built-in ones
            (:data:`BUILTIN_RUN_FIELDS`) added when missing.

    Returns:
        The query; its ``root`` is flattened (no And directly inside an And,
        no Or directly inside an Or) and is :data:`TRUE` when empty.

    Raises:
        QueryError: on any syntax error, unknown or ambiguous field, value of
            the wrong type or invalid regex, with the 1-based column and a hint.
    """
    items = _texts(constraints)
    jobs = {name: FIELD_TYPES[kind] for name, kind in BUILTIN_JOB_FIELDS.items()} | dict(job_fields)
    runs = {name: FIELD_TYPES[kind] for name, kind in BUILTIN_RUN_FIELDS.items()} | dict(run_fields)
    roots = [
        item.resolve(jobs, runs) if isinstance(item, Where) else _Parser(item, jobs, runs).parse()
        for item in items
    ]
    texts = [item if isinstance(item, str) else describe(root) for item, root in zip(items, roots, strict=True)]
    shown = [text.strip() for text in texts if text.strip()]
    text = shown[0] if len(shown) == 1 else " and ".join(f"({t})" for t in shown)
    return Query(text, _join(And, roots))


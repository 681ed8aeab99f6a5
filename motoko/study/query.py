"""The constraint language: ``"state = FINISHED, x > 2"`` → a :class:`Query`.

Users select runs with BlackDynamite-style constraint strings. This module
parses them into a small, immutable tree (:class:`Compare` leaves joined by
:class:`And`, :class:`Or`, :class:`Not`) that serves two readers: ``matches``
evaluates it on one run/job pair (a full scan), and the database walks it to
answer what it can from its indexes.

Syntax (keywords ``and or not in`` and the prefixes are case-insensitive)::

    query      := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr (("," | "and") not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := FIELD OP VALUE | FIELD ["not"] "in" "(" VALUE ("," VALUE)* ")"

So ``not`` binds tighter than ``and``/``,``, which bind tighter than ``or``.
Operators: ``< > <= >= = != ~ ~* !~ !~*`` (``==`` is ``=``, ``<>`` is ``!=``).
``~`` is a case-sensitive ``re.search``, ``~*`` a case-insensitive one, and
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

import dataclasses
import datetime as _dt
import functools
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from motoko.errors import QueryError, did_you_mean
from motoko.study.fields import BUILTIN_JOB_FIELDS, BUILTIN_RUN_FIELDS, FIELD_TYPES, FieldType

#: Every operator a :class:`Compare` may carry, in canonical spelling.
OPERATORS = ("<", ">", "<=", ">=", "=", "!=", "~", "~*", "!~", "!~*", "in", "not in")
#: The operators whose value is a regex pattern (never coerced).
REGEX_OPERATORS = frozenset({"~", "~*", "!~", "!~*"})
_SPELLINGS = {op: op for op in OPERATORS[:10]} | {"==": "=", "<>": "!="}
_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}
# Operators true of a missing value (None): "x != 3" holds when x is absent.
_NEGATIVE = frozenset({"!=", "!~", "!~*", "not in"})
_KEYWORDS = frozenset({"and", "or", "not", "in"})
_PREFIXES = {"runs": "runs", "run": "runs", "jobs": "jobs", "job": "jobs"}
_PREFIXES |= {"meta": "meta", "metadata": "meta"}
_OP_CHARS = "<>=!~"
_WORD_STOP = "()," + _OP_CHARS
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPERATOR_HINT = "operators: < > <= >= = != ~ ~* !~ !~*, in (...), not in (...)"


@dataclass(frozen=True)
class Field:
    """A resolved field: which table it lives in and how its values are typed.

    Attributes:
        name: The name without prefix (for ``meta``: the metadata key).
        table: ``"runs"``, ``"jobs"``, ``"meta"`` or ``"free"`` (a free run
            attribute, read like a run field but never coerced).
        type: The declared type; None for ``meta`` and ``free``.
    """

    name: str
    table: str
    type: FieldType | None

    @property
    def qualified(self) -> str:
        """The unambiguous spelling (``runs.x``, ``jobs.x``, ``meta.k``)."""
        prefix = "runs" if self.table == "free" else self.table
        return f"{prefix}.{self.name}"


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """Compile a regex once, however many queries or nodes use it."""
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


def _metadata(key: str, run: Any) -> Any:
    get_metadata = getattr(run, "get_metadata", None)
    if get_metadata is None:
        return None
    value = get_metadata().get(key)
    return value if value is None or isinstance(value, str) else str(value)


def _getter(field: Field) -> Callable[[Any, Any], Any]:
    """Return ``(run, job) -> value`` for ``field``; None when it is missing."""
    name = field.name
    if field.table == "jobs":
        return lambda run, job: getattr(job, name, None)
    if field.table == "meta":
        return lambda run, job: _metadata(name, run)
    return lambda run, job: getattr(run, name, None)


def _predicate(op: str, value: Any) -> tuple[Callable[[Any], Any], bool]:
    """Return the test of a present value and the result for a missing one."""
    if op in REGEX_OPERATORS:
        search = _compile(value, op.endswith("*")).search
        if op.startswith("!"):
            return (lambda a: search(a if isinstance(a, str) else str(a)) is None), True
        return (lambda a: search(a if isinstance(a, str) else str(a)) is not None), False
    if op in ("in", "not in"):
        try:
            members: frozenset[Any] | tuple[Any, ...] = frozenset(value)
        except TypeError:  # unhashable literals: fall back to a linear scan
            members = tuple(value)
        if op == "in":
            return (lambda a: a in members), None in members
        return (lambda a: a not in members), None not in members
    if value is None:  # "runs.x = null": only a missing value equals null
        present = op == "!="
        return (lambda a: present), op == "="
    compare = _COMPARISONS[op]
    if isinstance(value, _dt.datetime) and value.tzinfo is not None:
        # A naive stored time (not written by motoko) is read as local time,
        # instead of failing every comparison with an aware literal.
        def moment(a: Any) -> Any:
            if isinstance(a, _dt.datetime) and a.tzinfo is None:
                a = a.astimezone()
            return compare(a, value)

        return moment, op in _NEGATIVE
    return (lambda a: compare(a, value)), op in _NEGATIVE


def _build_test(field: Field, op: str, value: Any) -> Callable[[Any, Any], bool]:
    """Build the closure ``Compare.matches`` calls: all decisions made up front."""
    get = _getter(field)
    check, if_missing = _predicate(op, value)

    def test(run: Any, job: Any) -> bool:
        actual = get(run, job)
        if actual is None:
            return if_missing
        try:
            return bool(check(actual))
        except (TypeError, ValueError):  # "abc" < 2, or an array's ambiguous truth
            return False

    return test


@dataclass(frozen=True)
class Compare:
    """A leaf: ``field op value``.

    Attributes:
        field: The resolved field.
        op: One of :data:`OPERATORS` (canonical spelling).
        value: The literal, already coerced to the field's type; a tuple of
            them for ``in``/``not in``; the pattern string for regex operators.
        column: 1-based column of the comparison in its constraint string
            (not part of equality: the same condition written elsewhere is equal).
    """

    field: Field
    op: str
    value: Any
    column: int = dataclasses.field(default=0, compare=False)
    _test: Callable[[Any, Any], bool] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}; expected one of {OPERATORS}")
        if self.op in ("in", "not in") and not isinstance(self.value, tuple):
            object.__setattr__(self, "value", tuple(self.value))
        object.__setattr__(self, "_test", _build_test(self.field, self.op, self.value))

    def matches(self, run: Any, job: Any) -> bool:
        """Return whether the run/job pair satisfies this comparison (never raises)."""
        return self._test(run, job)


@dataclass(frozen=True)
class And:
    """True when every item is (items are never And themselves: the parser flattens)."""

    items: tuple[Node, ...]

    def matches(self, run: Any, job: Any) -> bool:
        """Return whether all items match, stopping at the first that does not."""
        # An explicit loop: cheaper than all() over a generator in a 100k-run scan.
        for item in self.items:  # noqa: SIM110
            if not item.matches(run, job):
                return False
        return True


@dataclass(frozen=True)
class Or:
    """True when any item is."""

    items: tuple[Node, ...]

    def matches(self, run: Any, job: Any) -> bool:
        """Return whether any item matches, stopping at the first that does."""
        for item in self.items:  # noqa: SIM110
            if item.matches(run, job):
                return True
        return False


@dataclass(frozen=True)
class Not:
    """True when its item is not (so ``not x > 2`` holds for a run without x)."""

    item: Node

    def matches(self, run: Any, job: Any) -> bool:
        """Return the negation of the item's match."""
        return not self.item.matches(run, job)


@dataclass(frozen=True)
class TrueNode:
    """The empty constraint: matches every run."""

    def matches(self, run: Any, job: Any) -> bool:
        """Return True."""
        return True


#: Any node of a query tree; each has ``matches(run, job) -> bool``.
Node: TypeAlias = Compare | And | Or | Not | TrueNode
#: The root of an empty query.
TRUE = TrueNode()


def _leaves(node: Node) -> Iterator[Compare]:
    if isinstance(node, Compare):
        yield node
    elif isinstance(node, And | Or):
        for item in node.items:
            yield from _leaves(item)
    elif isinstance(node, Not):
        yield from _leaves(node.item)


@dataclass(frozen=True)
class Query:
    """A parsed constraint.

    Attributes:
        text: The constraint as given (several strings are shown parenthesised
            and joined by ``and``).
        root: The tree; :data:`TRUE` for an empty constraint.
    """

    text: str
    root: Node

    def matches(self, run: Any, job: Any) -> bool:
        """Return whether the run (and its job) satisfy the constraint."""
        return self.root.matches(run, job)

    def fields(self) -> set[Field]:
        """Return every field the constraint refers to."""
        return {leaf.field for leaf in _leaves(self.root)}

    def __str__(self) -> str:
        return describe(self.root)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _literal(value: Any) -> str:
    """Spell a coerced value so that parsing it back gives the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, list | dict):
        return _quote(json.dumps(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return _quote(str(value))


def describe(node: Node | Query) -> str:
    """Return the canonical text of a query, for logs and error messages.

    Fields are always prefixed and strings always quoted, so the text parses
    back to an equal tree whatever fields the study declares.
    An empty constraint describes as ``""``.
    """
    if isinstance(node, Query):
        node = node.root
    if isinstance(node, Compare):
        if node.op in ("in", "not in"):
            value = "(" + ", ".join(_literal(v) for v in node.value) + ")"
        elif node.op in REGEX_OPERATORS:
            value = _quote(node.value)
        else:
            value = _literal(node.value)
        return f"{node.field.qualified} {node.op} {value}"
    if isinstance(node, And):
        return " and ".join(
            f"({describe(i)})" if isinstance(i, Or) else describe(i) for i in node.items
        )
    if isinstance(node, Or):
        return " or ".join(describe(i) for i in node.items)
    if isinstance(node, Not):
        inner = describe(node.item)
        return "not " + (inner if isinstance(node.item, Compare | Not) else f"({inner})")
    return ""


# --------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "op", "(", ")", ",", "end"
    text: str  # for strings: unescaped; for operators: canonical spelling
    column: int


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    quote, i, parts = text[start], start + 1, []
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            parts.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            return _Token("string", "".join(parts), start + 1), i + 1
        parts.append(char)
        i += 1
    raise QueryError(
        f"unterminated string: no closing {quote}",
        text=text,
        column=start + 1,
        hint=f"close it with {quote}; write \\{quote} for a quote inside the value",
    )


def _read_operator(text: str, start: int) -> tuple[_Token, int]:
    end = start
    while end < len(text) and text[end] in _OP_CHARS:
        end += 1
    if text[end - 1] == "~" and end < len(text) and text[end] == "*":
        end += 1
    spelled = text[start:end]
    if spelled not in _SPELLINGS:
        raise QueryError(
            f"unknown operator {spelled!r}", text=text, column=start + 1, hint=_OPERATOR_HINT
        )
    return _Token("op", _SPELLINGS[spelled], start + 1), end


def _read_word(text: str, start: int) -> tuple[_Token, int]:
    # Brackets nest so that JSON literals (tags = [1, 2]) need no quotes.
    end, depth, opener = start, 0, start
    while end < len(text):
        char = text[end]
        if char in "[{":
            opener = end if depth == 0 else opener
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        elif not depth and (char.isspace() or char in _WORD_STOP):
            break
        end += 1
    if depth:
        raise QueryError(
            f"unclosed {text[opener]!r}",
            text=text,
            column=opener + 1,
            hint="close it, or quote the value",
        )
    return _Token("word", text[start:end], start + 1), end


def _tokenize(text: str) -> list[_Token]:
    """Split a constraint into tokens, each with its 1-based column."""
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in "(),":
            token, i = _Token(char, char, i + 1), i + 1
        elif char in "'\"":
            token, i = _read_string(text, i)
        elif char in _OP_CHARS:
            token, i = _read_operator(text, i)
        else:
            token, i = _read_word(text, i)
        tokens.append(token)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


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


class _Parser:
    """Recursive descent over one constraint string (grammar: module docstring)."""

    def __init__(self, text: str, jobs: Mapping[str, FieldType], runs: Mapping[str, FieldType]):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.jobs = jobs
        self.runs = runs

    # -- helpers

    def error(self, message: str, column: int, hint: str | None = None) -> QueryError:
        return QueryError(message, text=self.text, column=column, hint=hint)

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return token

    def keyword(self, ahead: int = 0) -> str:
        """Return the keyword at the current (or a later) token, or ``""``."""
        token = self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]
        low = token.text.lower()
        return low if token.kind == "word" and low in _KEYWORDS else ""

    def expected(self, what: str, token: _Token, hint: str | None = None) -> QueryError:
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
            raise self.expected(f"an operator after {name.text!r}", op, _OPERATOR_HINT)
        self.advance()
        return self.build(name, field, op.text, [self.parse_value(op)])

    def parse_list(self, op: _Token) -> list[_Raw]:
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

    def parse_value(self, after: _Token) -> _Raw:
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

    def resolve(self, name: _Token) -> Field:
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

    def resolve_bare(self, name: _Token) -> Field:
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

    def build(self, name: _Token, field: Field, op: str, raws: list[_Raw]) -> Compare:
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
                _compile(raws[0].text, op.endswith("*"))
            except re.error as exc:
                raise self.error(
                    f"invalid regular expression for {name.text!r}: {exc}",
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

    def convert(self, name: _Token, field: Field, raw: _Raw) -> Any:
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
            value = kind.coerce(value, field=name.text)
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


def _texts(constraints: str | Sequence[str] | None) -> list[str]:
    if constraints is None:
        return []
    if isinstance(constraints, str):
        return [constraints]
    if isinstance(constraints, list | tuple):
        for item in constraints:
            if not isinstance(item, str):
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
    constraints: str | Sequence[str] | None,
    job_fields: Mapping[str, FieldType],
    run_fields: Mapping[str, FieldType],
) -> Query:
    """Parse constraint text into a :class:`Query`.

    Args:
        constraints: One string, a list/tuple of strings (AND-ed; each may use
            the whole syntax), or None. None, ``""`` and ``[]`` mean "every run".
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
    texts = _texts(constraints)
    jobs = {name: FIELD_TYPES[kind] for name, kind in BUILTIN_JOB_FIELDS.items()} | dict(job_fields)
    runs = {name: FIELD_TYPES[kind] for name, kind in BUILTIN_RUN_FIELDS.items()} | dict(run_fields)
    roots = [_Parser(text, jobs, runs).parse() for text in texts]
    shown = [text.strip() for text in texts if text.strip()]
    text = shown[0] if len(shown) == 1 else " and ".join(f"({t})" for t in shown)
    return Query(text, _join(And, roots))

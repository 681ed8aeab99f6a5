"""Parsed constraints: a small immutable tree that evaluates runs.

:func:`motoko.study.query.parse_query` turns a constraint string into this
tree: :class:`Compare` leaves (a :class:`Field`, an operator, a coerced value)
joined by :class:`And`, :class:`Or` and :class:`Not`. It serves two readers:
``matches`` evaluates a run/job pair (a full scan), and the planner
(:mod:`motoko.study.planner`) walks it to answer what it can from indexes.
:func:`describe` prints a tree back as canonical constraint text.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

import re2

from motoko.study.fields import FieldType

OPERATORS = ("<", ">", "<=", ">=", "=", "!=", "~", "~*", "!~", "!~*", "in", "not in")
#: The operators whose value is a regex pattern (never coerced).
REGEX_OPERATORS = frozenset({"~", "~*", "!~", "!~*"})
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


#: Raised by :func:`compile_pattern` for a pattern RE2 cannot compile.
PatternError = re2.error


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str, ignore_case: bool) -> Any:
    """Compile a regex once, however many queries or nodes use it.

    RE2 matches in time linear in the text, so a pattern like ``(a+)+$``
    cannot make a selection (or the dashboard's filter) run for ever; the
    price is no backreferences and no lookaround, refused at parse time.

    Raises:
        PatternError: for a pattern RE2 cannot compile.
    """
    options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr; the caller words the error
    options.case_sensitive = not ignore_case
    return re2.compile(pattern, options)


def pattern_problem(exc: Exception) -> str:
    """The readable reason of a :data:`PatternError`."""
    reason = exc.args[0] if exc.args else exc
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    return text + " (RE2 syntax: no backreferences or lookaround)"


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


def predicate(op: str, value: Any) -> tuple[Callable[[Any], Any], bool]:
    """Return the test of a present value and the result for a missing one.

    The test may raise TypeError or ValueError (``"abc" < 2``): that value
    does not match. Column scans (:mod:`motoko.study.columns`) use the same
    test as run-by-run filtering, so both answer alike.
    """
    if op in REGEX_OPERATORS:
        search = compile_pattern(value, op.endswith("*")).search
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
    check, if_missing = predicate(op, value)

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


def literal(value: Any) -> str:
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
            value = "(" + ", ".join(literal(v) for v in node.value) + ")"
        elif node.op in REGEX_OPERATORS:
            value = _quote(node.value)
        else:
            value = literal(node.value)
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


"""Parameter spaces: from ``createTask`` arguments and ``job_space`` to jobs.

A study's job fields span a space. ``createTask(x=[1, 2], n=3)`` names a part
of it: every value given as a sweep multiplies the number of jobs, every plain
value fixes a field. :func:`expand` turns such arguments, merged over the
study's ``job_space`` defaults, into the list of job parameter dicts to insert.

What counts as a sweep:

* :class:`Sweep`, :class:`Range` and :class:`Linspace` always do, whatever the
  field's type (``Sweep([[1, 2], [3, 4]])`` gives a ``list`` field two values);
* a Python list, tuple, ``range`` or array given for a *scalar* field does
  (BlackDynamite's convention), while for a ``list`` field it is one value;
* :class:`Together` groups make fields vary together (zip) instead of
  multiplying;
* in bd.yaml, where Python objects cannot be written, ``{range: [a, b, step]}``,
  ``{linspace: [a, b, num]}`` and ``{sweep: [...]}`` (for any field that is not
  ``dict``-typed: for a ``dict`` field a mapping is one value), and a key
  joining fields by commas, ``"a,b": [[1, 3], [2, 4]]``, for a group.

Every value is coerced with its field's type before it reaches the database,
so a wrong value is refused before anything is written.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Protocol

from motoko.errors import ParameterError, UnknownNameError
from motoko.study.fields import FieldType


class StudySchema(Protocol):
    """What expanding a space needs of a study's schema.

    A protocol rather than :class:`motoko.study.schema.StudySchema` itself:
    the schema checks its ``job_space`` with this module while it is read, so
    importing it here would make the two modules need each other.
    """

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def job_fields(self) -> Mapping[str, FieldType]: ...
    @property
    def run_fields(self) -> Mapping[str, FieldType]: ...
    @property
    def job_space(self) -> Mapping[str, Any]: ...

#: Most values one Range or Linspace may produce: a mistyped step (``1e-9``
#: instead of ``1e-3``) must fail with a message, not exhaust the memory.
MAX_SWEEP_VALUES = 1_000_000

#: Most jobs one createTask may name by default (``max_jobs`` in motoko.yaml):
#: ten fields of ten values are 10^10 jobs, which must fail with a message
#: before anything is multiplied out, not after the memory is gone.
MAX_JOBS = 100_000

#: The mapping forms of a sweep that bd.yaml (and createTask) understand.
FORMS = ("range", "linspace", "sweep")

# Relative tolerance under which a Range's stop counts as landing on a step.
_TOLERANCE = Decimal("1e-9")


class Sweep:
    """An explicit list of values for one field, one job per value.

    Use it where a plain list would be taken as one value: for ``list``-typed
    fields (``Sweep([[1, 2], [3, 4]])``) or to make intent obvious.

    Attributes:
        values: The values, in order (duplicates are removed by :func:`expand`).
    """

    def __init__(self, values: Iterable[Any]):
        if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
            raise ParameterError(
                f"a sweep takes a list of values, got {values!r} ({type(values).__name__})",
                value=values,
                hint="write Sweep([v1, v2, ...])",
            )
        self.values: tuple[Any, ...] = tuple(_plain_sequence(values))

    def __iter__(self) -> Any:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.values == other.values  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sweep({list(self.values)!r})"

    def to_data(self) -> dict[str, list[Any]]:
        """Return the bd.yaml form (``{sweep: [...]}``), so schemas can be stored."""
        return {"sweep": list(self.values)}


class Range(Sweep):
    """A numeric range whose stop is *included* when it lands on a step.

    ``Range(0, 1, 0.25)`` is ``0, 0.25, 0.5, 0.75, 1.0``: parametric studies
    name both ends, and ``numpy.arange``'s exclusive, rounding-sensitive stop
    silently drops the last point. The stop is taken as landing on a step when
    ``(stop - start) / step`` is within 1e-9 (relative) of a whole number.
    Values are computed in decimal from the numbers as written, so
    ``Range(0, 0.3, 0.1)`` gives ``0.3``, not ``0.30000000000000004``.
    When start, stop and step are all integers the values are ints, otherwise
    floats. A range whose step points away from the stop is empty (and
    :func:`expand` refuses it, naming the field).

    Raises:
        ParameterError: a bound that is not a finite number, a zero step, or
            more than :data:`MAX_SWEEP_VALUES` values.
    """

    def __init__(self, start: Any, stop: Any, step: Any = 1):
        self.start = _number("range start", start)
        self.stop = _number("range stop", stop)
        self.step = _number("range step", step)
        super().__init__(_range_values(self.start, self.stop, self.step))

    def __repr__(self) -> str:
        return f"Range({self.start!r}, {self.stop!r}, {self.step!r})"

    def to_data(self) -> dict[str, list[Any]]:
        """Return the bd.yaml form (``{range: [start, stop, step]}``)."""
        return {"range": [self.start, self.stop, self.step]}


class Linspace(Sweep):
    """``num`` evenly spaced floats from ``start`` to ``stop``, both included.

    Like ``numpy.linspace``; ``num == 1`` gives ``[start]``. Values are floats
    (an ``int`` field accepts those that are whole numbers).

    Raises:
        ParameterError: bounds that are not finite numbers, or ``num`` not an
            integer between 1 and :data:`MAX_SWEEP_VALUES`.
    """

    def __init__(self, start: Any, stop: Any, num: Any):
        self.start = _number("linspace start", start)
        self.stop = _number("linspace stop", stop)
        if isinstance(num, bool) or not isinstance(num, numbers.Integral):
            raise ParameterError(f"linspace num must be an integer, got {num!r}", value=num)
        self.num = int(num)
        if not 1 <= self.num <= MAX_SWEEP_VALUES:
            raise ParameterError(
                f"linspace num must be between 1 and {MAX_SWEEP_VALUES}, got {self.num}",
                value=num,
            )
        super().__init__(_linspace_values(self.start, self.stop, self.num))

    def __repr__(self) -> str:
        return f"Linspace({self.start!r}, {self.stop!r}, {self.num!r})"

    def to_data(self) -> dict[str, list[Any]]:
        """Return the bd.yaml form (``{linspace: [start, stop, num]}``)."""
        return {"linspace": [self.start, self.stop, self.num]}


class Together:
    """Fields that vary together (zip) instead of multiplying (product).

    ``Together(a=[1, 2], b=[3, 4])`` gives the pairs ``(1, 3)`` and ``(2, 4)``.
    Each element of a column is one value, whatever the field's type.

    Attributes:
        columns: Field name → its values, all of the same length.

    Raises:
        ParameterError: no field, a column that is not a list of values, or
            columns of different lengths.
    """

    def __init__(self, **lists: Any):
        if not lists:
            raise ParameterError(
                "Together needs at least one field", hint="write Together(a=[1, 2], b=[3, 4])"
            )
        self.columns: dict[str, list[Any]] = {
            name: _column(name, values) for name, values in lists.items()
        }
        lengths = {name: len(col) for name, col in self.columns.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{name!r} has {n}" for name, n in lengths.items())
            raise ParameterError(
                f"fields given together must have as many values each: {shown}",
                value=lengths,
                hint="give every field of the group one value per job",
            )

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Together) and self.columns == other.columns

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Together(" + ", ".join(f"{k}={v!r}" for k, v in self.columns.items()) + ")"


def together(**lists: Any) -> Together:
    """Return a :class:`Together` group: ``createTask(groups=[together(a=.., b=..)])``."""
    return Together(**lists)


# -- building sweeps -----------------------------------------------------------


def _plain_sequence(values: Any) -> list[Any]:
    """Return a list of Python values (arrays become lists of scalars)."""
    if hasattr(values, "tolist") and getattr(values, "ndim", 1) >= 1:
        result = values.tolist()
        if isinstance(result, list):
            return result
    return list(values)


def _is_sequence(value: Any) -> bool:
    """Whether a value given for a scalar field is a sweep (BlackDynamite style)."""
    if isinstance(value, list | tuple | range):
        return True
    return hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1


def _column(name: str, values: Any) -> list[Any]:
    if isinstance(values, Sweep):
        return list(values.values)
    if not _is_sequence(values):
        raise ParameterError(
            f"field {name!r} of a group expects a list of values, got {values!r}",
            field=name,
            value=values,
            hint="give one value per job, e.g. Together(a=[1, 2], b=[3, 4])",
        )
    return _plain_sequence(values)


def _number(what: str, value: Any) -> int | float:
    """Return ``value`` as a finite int or float, refusing bools and strings."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(
            f"{what} must be a number, got {value!r} ({type(value).__name__})", value=value
        )
    if isinstance(value, numbers.Integral):
        return int(value)
    result = float(value)
    if not math.isfinite(result):
        raise ParameterError(f"{what} must be a finite number, got {value!r}", value=value)
    return result


def _decimal(value: int | float) -> Decimal:
    # repr gives the shortest text that reads back as the same float: the
    # number as the user wrote it, which is what decimal arithmetic should use.
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _count_check(count: int, what: str) -> None:
    if count > MAX_SWEEP_VALUES:
        raise ParameterError(
            f"{what} would give {count} values, more than {MAX_SWEEP_VALUES}",
            value=count,
            hint="check the step, or split the study",
        )


def _range_values(start: int | float, stop: int | float, step: int | float) -> list[Any]:
    if step == 0:
        raise ParameterError(
            "range step must not be 0", value=step, hint="use a step like 1 or 0.1"
        )
    d_start, d_step = _decimal(start), _decimal(step)
    span = (_decimal(stop) - d_start) / d_step
    nearest = span.to_integral_value()
    if abs(span - nearest) <= _TOLERANCE * max(Decimal(1), abs(span)):
        last = int(nearest)
    else:
        last = int(span.to_integral_value(rounding=ROUND_FLOOR))
    if last < 0:
        return []
    _count_check(last + 1, f"range({start}, {stop}, {step})")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return [int(start) + i * int(step) for i in range(last + 1)]
    return [float(d_start + i * d_step) for i in range(last + 1)]


def _linspace_values(start: int | float, stop: int | float, num: int) -> list[float]:
    if num == 1:
        return [float(start)]
    d_start, d_stop = _decimal(start), _decimal(stop)
    step = (d_stop - d_start) / (num - 1)
    values = [float(d_start + i * step) for i in range(num - 1)]
    return values + [float(stop)]


def _mapping_form(ftype: FieldType, name: str, value: Mapping[Any, Any]) -> list[Any]:
    """Read ``{range: [...]}``, ``{linspace: [...]}`` or ``{sweep: [...]}``."""
    if len(value) != 1:
        raise ParameterError(
            f"field {name!r} ({ftype.name}) got a mapping with {len(value)} keys; "
            "a sweep mapping has exactly one key",
            field=name,
            value=value,
            hint="write {range: [start, stop, step]}, {linspace: [start, stop, num]} or {sweep: [...]}",
        )
    ((form, args),) = value.items()
    if form not in FORMS:
        err = UnknownNameError("sweep form", str(form), FORMS)
        err.message = f"unknown sweep form {str(form)!r} for field {name!r}"
        raise err
    if form == "sweep":
        return list(Sweep(args).values)
    expected = "[start, stop, step] or [start, stop]" if form == "range" else "[start, stop, num]"
    sizes = (2, 3) if form == "range" else (3,)
    if not isinstance(args, list | tuple) or len(args) not in sizes:
        raise ParameterError(
            f"field {name!r}: {form} expects {expected}, got {args!r}", field=name, value=args
        )
    return list(Range(*args).values if form == "range" else Linspace(*args).values)


def _raw_values(ftype: FieldType, name: str, value: Any) -> list[Any]:
    """Return the values (before coercion) a field takes from one argument."""
    if isinstance(value, Together):
        raise ParameterError(
            f"field {name!r} got a Together group as its value",
            field=name,
            hint="pass groups separately: createTask(groups=[together(a=[..], b=[..])])",
        )
    if isinstance(value, Sweep):
        return list(value.values)
    if isinstance(value, Mapping) and ftype.name != "dict":
        return _mapping_form(ftype, name, value)
    if ftype.scalar and _is_sequence(value):
        return _plain_sequence(value)
    return [value]


def _locate(err: ParameterError, name: str, where: str | None) -> ParameterError:
    """Attach the field and place to an error raised before they were known."""
    if err.field is None:
        err.field = name
        if not err.message.startswith("field"):
            err.message = f"field {name!r}: {err.message}"
    if err.where is None:
        err.where = where
    err.args = (str(err),)
    return err


def _coerce_values(ftype: FieldType, name: str, values: list[Any], where: str | None) -> list[Any]:
    if not values:
        raise ParameterError(
            f"field {name!r} got an empty sweep",
            field=name,
            value=values,
            where=where,
            hint="give at least one value",
        )
    return [ftype.coerce(v, field=name, where=where) for v in values]


# -- the space of one createTask -------------------------------------------------


@dataclass
class _Space:
    """Field → its coerced values, and groups of fields varying together."""

    axes: dict[str, list[Any]] = field(default_factory=dict)
    groups: list[dict[str, list[Any]]] = field(default_factory=list)

    def fields(self) -> set[str]:
        return set(self.axes).union(*self.groups)


def _job_field(schema: StudySchema, name: Any, where: str | None) -> FieldType:
    if isinstance(name, str) and name in schema.job_fields:
        return schema.job_fields[name]
    err = UnknownNameError("job field", str(name), schema.job_fields, where=where)
    if str(name) in schema.run_fields:
        err.hint = f"{name!r} is a run field of study {schema.name!r}; give it as a run parameter"
        err.args = (str(err),)
    raise err


def _claim(space: _Space, names: Iterable[str], where: str | None) -> None:
    """Refuse a field given twice in one mapping (``x`` and ``"x,y"``)."""
    taken = space.fields()
    for name in names:
        if name in taken:
            raise ParameterError(
                f"field {name!r} is given twice (alone and in a group, or in two groups)",
                field=name,
                where=where,
                hint="give each field once",
            )


def _group(
    schema: StudySchema, columns: Mapping[str, list[Any]], where: str | None
) -> dict[str, list[Any]]:
    """Coerce a group's columns, checking its fields exist."""
    result = {}
    for name, values in columns.items():
        ftype = _job_field(schema, name, where)
        result[name] = _coerce_values(ftype, name, list(values), where)
    return result


def _rows_group(
    schema: StudySchema, key: str, rows: Any, where: str | None
) -> dict[str, list[Any]]:
    """Read the bd.yaml group form ``"a,b": [[1, 3], [2, 4]]``."""
    names = [n.strip() for n in key.split(",")]
    if "" in names or len(set(names)) != len(names):
        raise ParameterError(
            f"group key {key!r} must name distinct fields separated by commas",
            value=key,
            where=where,
            hint='write "a,b": [[1, 3], [2, 4]]',
        )
    for name in names:
        _job_field(schema, name, where)
    if not _is_sequence(rows):
        raise ParameterError(
            f"group {key!r} expects a list of rows [{', '.join(names)}], got {rows!r}",
            value=rows,
            where=where,
        )
    for number, row in enumerate(rows, 1):
        if not isinstance(row, list | tuple) or len(row) != len(names):
            raise ParameterError(
                f"group {key!r}: row {number} is {row!r}, expected a list of {len(names)} "
                f"values ({', '.join(names)})",
                value=row,
                where=where,
            )
    columns = {name: [row[i] for row in rows] for i, name in enumerate(names)}
    return _group(schema, columns, where)


def _parse(schema: StudySchema, raw: Mapping[Any, Any], where: str | None) -> _Space:
    """Read one mapping of arguments (createTask's or job_space) into a space."""
    space = _Space()
    for key, value in raw.items():
        if isinstance(key, str) and "," in key:
            group = _rows_group(schema, key, value, where)
            _claim(space, group, where)
            space.groups.append(group)
            continue
        ftype = _job_field(schema, key, where)
        _claim(space, [key], where)
        try:
            values = _raw_values(ftype, key, value)
        except ParameterError as err:
            raise _locate(err, key, where) from None
        except UnknownNameError as err:
            err.where = err.where or where
            err.args = (str(err),)
            raise
        space.axes[key] = _coerce_values(ftype, key, values, where)
    return space


def _override(defaults: _Space, given: _Space) -> _Space:
    """Let given fields replace defaults key by key.

    A default group loses the fields that were given; its remaining fields
    keep varying together.
    """
    taken = given.fields()
    merged = _Space({k: v for k, v in defaults.axes.items() if k not in taken})
    merged.axes.update(given.axes)
    for group in defaults.groups:
        rest = {k: v for k, v in group.items() if k not in taken}
        if rest:
            merged.groups.append(rest)
    merged.groups.extend(given.groups)
    return merged


def _resolve(
    schema: StudySchema,
    params: Mapping[str, Any],
    groups: Sequence[Together | Mapping[str, Any]],
    where: str | None,
) -> _Space:
    defaults = _parse(schema, schema.job_space, f"{schema.source or schema.name} (job_space)")
    given = _parse(schema, params, where)
    for group in groups:
        together_ = group if isinstance(group, Together) else Together(**group)
        columns = _group(schema, together_.columns, where)
        _claim(given, columns, where)
        given.groups.append(columns)
    space = _override(defaults, given)
    missing = [name for name in schema.job_fields if name not in space.fields()]
    if missing:
        raise ParameterError(
            f"no value for job field(s) {', '.join(repr(m) for m in missing)} of study {schema.name!r}",
            field=missing[0],
            where=where,
            hint="give them to createTask or set them in the study's job_space",
        )
    return space


def _factors(schema: StudySchema, space: _Space) -> list[list[dict[str, Any]]]:
    """Return the product's factors in field order (a group sits at its first field)."""
    order = {name: i for i, name in enumerate(schema.job_fields)}
    factors: list[tuple[int, list[dict[str, Any]]]] = []
    for name, values in space.axes.items():
        factors.append((order[name], [{name: v} for v in values]))
    for group in space.groups:
        size = len(next(iter(group.values())))
        rows = [{name: col[i] for name, col in group.items()} for i in range(size)]
        factors.append((min(order[name] for name in group), rows))
    factors.sort(key=lambda item: item[0])
    return [rows for _, rows in factors]


def _freeze(value: Any) -> Any:
    """Return a hashable key telling values apart exactly (``1`` is not ``1.0``)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("list", tuple(_freeze(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return (type(value).__name__, repr(value))
    return (type(value).__name__, value)


def expand(
    schema: StudySchema,
    params: Mapping[str, Any],
    groups: Sequence[Together] = (),
    *,
    where: str | None = None,
    max_jobs: int = MAX_JOBS,
) -> list[dict[str, Any]]:
    """Return the parameters of every job that ``params`` (over job_space) names.

    ``params`` win over the study's ``job_space`` key by key, and a group
    naming a field replaces that field's default too. Sweeps and groups
    combine as a Cartesian product, in the order of the study's job fields,
    the last field varying fastest; duplicates are dropped (the first kept),
    so the result is deterministic and calling it twice gives the same list.

    Args:
        schema: The study whose job fields and defaults apply.
        params: Field → value or sweep (see the module docstring).
        groups: Fields that vary together.
        where: Where the parameters come from, for error messages.
        max_jobs: Most jobs the space may hold, counted before expanding it.

    Returns:
        One dict per job, keys in the order of ``schema.job_fields``, values
        coerced to the fields' types.

    Raises:
        UnknownNameError: a field the study does not have (with suggestions).
        ParameterError: a value of the wrong type, an empty sweep, a field
            given twice, job fields with no value anywhere, or a space of
            more than ``max_jobs`` jobs.
    """
    space = _resolve(schema, params, groups, where)
    factors = _factors(schema, space)
    count = math.prod(len(rows) for rows in factors)
    if count > max_jobs:
        sizes = " x ".join(str(len(rows)) for rows in factors if len(rows) > 1)
        raise ParameterError(
            f"the space names {count} jobs ({sizes} values), more than max_jobs = {max_jobs}",
            where=where,
            hint="sweep fewer values, or raise `max_jobs:` in motoko.yaml",
        )
    order = list(schema.job_fields)
    jobs: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for combo in itertools.product(*factors):
        merged: dict[str, Any] = {}
        for part in combo:
            merged.update(part)
        job = {name: merged[name] for name in order}
        key = _freeze(job)
        if key not in seen:
            seen.add(key)
            jobs.append(job)
    return jobs


def space_size(
    schema: StudySchema,
    params: Mapping[str, Any],
    groups: Sequence[Together] = (),
    *,
    where: str | None = None,
) -> int:
    """Return how many jobs :func:`expand` would build, *before* dropping duplicates.

    Cheap (nothing is multiplied out), so callers can refuse or confirm a huge
    task before expanding it. Raises what :func:`expand` raises.
    """
    space = _resolve(schema, params, groups, where)
    return math.prod(len(rows) for rows in _factors(schema, space))


def check_space(schema: StudySchema, raw: Mapping[Any, Any], *, where: str | None = None) -> None:
    """Check a ``job_space`` mapping against the study's job fields.

    Used when bd.yaml is loaded so that a wrong default fails there, with its
    line, rather than at the first createTask. Missing fields are allowed: a
    default need not exist for every field.

    Raises:
        UnknownNameError: a key that is not a job field.
        ParameterError: a value that does not coerce, an empty sweep...
    """
    _parse(schema, raw, where)

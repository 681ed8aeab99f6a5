"""Parameter spaces: from ``createTask`` arguments and ``job_space`` to jobs.

A study's job fields span a space. ``createTask(x=[1, 2], n=3)`` names a part
of it: every value given as a sweep multiplies the number of jobs, every plain
value fixes a field. :func:`expand` turns such arguments, merged over the
study's ``job_space`` defaults, into the list of job parameter dicts to insert.

What counts as a sweep, and the values each form stands for, is
:mod:`motoko.study.sweeps`'. Here the fields' values combine: sweeps multiply,
:class:`~motoko.study.sweeps.Together` groups (and, in bd.yaml, a key joining
fields by commas, ``"a,b": [[1, 3], [2, 4]]``) vary together (zip), and what
``createTask`` gives replaces the ``job_space`` defaults field by field.

Every value is coerced with its field's type before it reaches the database,
so a wrong value is refused before anything is written.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from motoko.errors import ParameterError, UnknownNameError
from motoko.study.fields import FieldType
from motoko.study.sweeps import Together, field_values, is_sequence


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


#: Most jobs one createTask may name by default (``max_jobs`` in motoko.yaml):
#: ten fields of ten values are 10^10 jobs, which must fail with a message
#: before anything is multiplied out, not after the memory is gone.
MAX_JOBS = 100_000


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
    if not is_sequence(rows):
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
            values = field_values(ftype, key, value)
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

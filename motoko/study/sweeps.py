"""Sweeps: the values one job field takes from one argument.

A value given to ``createTask`` (or written in bd.yaml's ``job_space``) is
either one value or a sweep of several, one job each. This module holds what
a sweep may be written as and the values it stands for:

* :class:`Sweep`, :class:`Range` and :class:`Linspace` always sweep, whatever
  the field's type (``Sweep([[1, 2], [3, 4]])`` gives a ``list`` field two
  values); Range and Linspace compute their values in decimal, so
  ``Range(0, 1, 0.1)`` ends at 1.0 as written;
* a Python list, tuple, ``range`` or array given for a *scalar* field sweeps
  (BlackDynamite's convention), while for a ``list`` field it is one value;
* :class:`Together` (:func:`together`) groups fields that vary together;
* in bd.yaml, ``{range: [a, b, step]}``, ``{linspace: [a, b, num]}`` and
  ``{sweep: [...]}``.

How the fields' values combine into jobs (products, groups, defaults) is
:mod:`motoko.study.space`'s.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from motoko.errors import ParameterError, UnknownNameError
from motoko.study.fields import FieldType

#: Most values one Range or Linspace may produce: a mistyped step (``1e-9``
#: instead of ``1e-3``) must fail with a message, not exhaust the memory.
MAX_SWEEP_VALUES = 1_000_000

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


def is_sequence(value: Any) -> bool:
    """Whether a value given for a scalar field is a sweep (BlackDynamite style)."""
    if isinstance(value, list | tuple | range):
        return True
    return hasattr(value, "tolist") and getattr(value, "ndim", 0) >= 1


def _column(name: str, values: Any) -> list[Any]:
    if isinstance(values, Sweep):
        return list(values.values)
    if not is_sequence(values):
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


def field_values(ftype: FieldType, name: str, value: Any) -> list[Any]:
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
    if ftype.scalar and is_sequence(value):
        return _plain_sequence(value)
    return [value]

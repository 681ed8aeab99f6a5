"""Field types of jobs and runs, read from a fixed table.

motoko 0.1.4 passed the type names of bd.yaml to ``eval``, so a type string
could run arbitrary code. Here a type name is only ever a key of
:data:`FIELD_TYPES`; anything else is refused with the list of known names.

Coercion is deliberately strict where silent conversion would hide a mistake
(``"abc"`` is not a float, ``1.5`` is not an int, ``"yes"`` is not a bool) and
lenient where it is lossless (an int is a fine float, ``"3"`` from a command
line or a constraint string is a fine int).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from motoko.errors import ParameterError, UnknownNameError

#: Longest string (UTF-8 bytes) a field may hold: values travel to runs as
#: environment variables, whose total size the kernel limits (about 128 KiB each).
MAX_STRING_BYTES = 128 * 1024

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _fail(field: str, value: Any, expected: str, where: str | None) -> ParameterError:
    return ParameterError(
        f"field {field!r} expects {expected}, got {value!r} ({type(value).__name__})",
        field=field,
        value=value,
        where=where,
        hint=f"give {field!r} {expected}",
    )


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip(), 10)
    # numpy integers and the like
    if hasattr(value, "__index__"):
        return int(value.__index__())
    raise TypeError


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        result = float(value.strip())
        return result
    if hasattr(value, "__float__"):
        return float(value)
    raise TypeError


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise TypeError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise TypeError


def _to_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays
        result = value.tolist()
        if isinstance(result, list):
            return result
    raise TypeError


def _to_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    raise TypeError


def _to_datetime(value: Any) -> _dt.datetime:
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        return _dt.datetime.fromisoformat(value.strip())
    raise TypeError


@dataclass(frozen=True)
class FieldType:
    """A field type: its name, whether it is a scalar, and its coercion.

    Attributes:
        name: The name used in bd.yaml (``int``, ``float``...).
        scalar: True when a list given for the field means a sweep; False for
            ``list`` and ``dict``, which take a list or mapping as one value.
        expected: How the type is described in error messages.
    """

    name: str
    scalar: bool
    expected: str
    _convert: Callable[[Any], Any]

    def coerce(self, value: Any, *, field: str, where: str | None = None, stored: bool = True) -> Any:
        """Return ``value`` converted to this type.

        ``stored`` (the default) also refuses what could not be stored and
        read back as is (see :func:`check_storable`); a constraint's literal,
        which is only compared, passes False.

        Raises:
            ParameterError: naming ``field`` when the value cannot be converted
                without loss (``"abc"`` for a float, ``1.5`` for an int, NaN...).
        """
        try:
            result = self._convert(value)
        except (TypeError, ValueError, OverflowError):
            raise _fail(field, value, self.expected, where) from None
        # NaN breaks equality and ordering (dedupe, indexes).
        if isinstance(result, float) and self.name == "float" and math.isnan(result):
            raise _fail(field, value, "a number that is not NaN", where)
        if stored:
            check_storable(result, field=field, where=where)
        return result


def _unstorable(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` (or a part of it) cannot be stored, staged and read back as is; None if it can."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r}: run.json, exports and the dashboard's JSON have no infinity or NaN"
    if isinstance(value, str):
        if "\0" in value:
            return "a NUL byte: no environment variable or file can pass it to a run"
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "a lone surrogate (e.g. '\\ud800'): it is not text and cannot be written out"
        if size > MAX_STRING_BYTES:
            return f"a string of {size} bytes: more than {MAX_STRING_BYTES} (128 KiB) cannot reach a run"
        return None
    if depth > 100:
        return "values nested more than 100 levels deep"
    if isinstance(value, dict):
        parts: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        return None
    for part in parts:
        why = _unstorable(part, depth + 1)
        if why is not None:
            return why
    return None


def check_storable(value: Any, *, field: str, where: str | None = None) -> None:
    """Refuse a value that would break later: at launch, in listings or in JSON.

    Non-finite floats, strings with NUL bytes or lone surrogates, and strings
    over :data:`MAX_STRING_BYTES` are refused (also inside lists and mappings),
    so that every stored value can be staged, listed and exported losslessly.

    Raises:
        ParameterError: naming ``field`` and what is wrong with the value.
    """
    why = _unstorable(value)
    if why is not None:
        raise ParameterError(
            f"field {field!r} cannot hold {why}",
            field=field,
            value=value,
            where=where,
            hint="give a finite number and plain text (no NUL), or store large data in a file of the run",
        )


FIELD_TYPES: dict[str, FieldType] = {
    "int": FieldType("int", True, "an integer", _to_int),
    "float": FieldType("float", True, "a number", _to_float),
    "str": FieldType("str", True, "a string", _to_str),
    "bool": FieldType("bool", True, "true or false", _to_bool),
    "list": FieldType("list", False, "a list", _to_list),
    "dict": FieldType("dict", False, "a mapping", _to_dict),
    "datetime": FieldType("datetime", True, "an ISO date-time", _to_datetime),
}

# Spellings found in BlackDynamite and motoko 0.1.4 bd.yaml files.
TYPE_ALIASES = {
    "integer": "int",
    "double": "float",
    "real": "float",
    "string": "str",
    "text": "str",
    "boolean": "bool",
    "timestamp": "datetime",
}


def field_type(name: Any, *, field: str = "", where: str | None = None) -> FieldType:
    """Look a type name up in the fixed table (never ``eval``).

    Raises:
        UnknownNameError: naming the type and listing the possible ones.
    """
    key = str(name).strip().lower()
    key = TYPE_ALIASES.get(key, key)
    if key in FIELD_TYPES:
        return FIELD_TYPES[key]
    err = UnknownNameError("type", str(name), FIELD_TYPES, where=where)
    if field:
        err.message = f"unknown type {str(name)!r} for field {field!r}"
        err.args = (str(err),)
    raise err


#: Run fields every run has, whatever its study (name → type name).
BUILTIN_RUN_FIELDS: dict[str, str] = {
    "id": "int",
    "job_id": "int",
    "state": "str",
    "run_name": "str",
    "event_name": "str",
    "machine_name": "str",
    "launcher": "str",
    "nproc": "int",
    "run_path": "str",
    "exec": "str",
    "created": "datetime",
    "launched": "datetime",
    "started": "datetime",
    "finished": "datetime",
    "heartbeat": "datetime",
    "exit_code": "int",
    "error": "str",
    "progress": "float",
    "status": "str",
    "attempt": "int",
}

#: Job fields every job has, whatever its study.
BUILTIN_JOB_FIELDS: dict[str, str] = {"id": "int"}

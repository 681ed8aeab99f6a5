"""What counts as the same value, and how a stored value is shown as JSON.

Four places ask whether two stored values are the same: conflict resolution
of a run (:meth:`Run._p_resolveConflict`) and of a state index of runs
(:class:`RunIndex`), the columns of run attributes, and the journal that
replays a workflow's changes. They must agree, or a change
that one of them merges the other refuses; so they all call :func:`same`.
Likewise every view, export and run file turns stored values into JSON with
:func:`jsonable`.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any


def same(a: Any, b: Any) -> bool:
    """Return whether ``a`` and ``b`` are the same stored value.

    Types matter: ``1``, ``1.0`` and ``True`` are different values to keep
    (a column or a merge that confused them would change what a filter
    returns). Values whose comparison raises or is not a truth value (numpy
    arrays, persistent references across databases) are not the same unless
    they are one object.
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


#: Lone surrogates: a run may store them in a free attribute; UTF-8, JSON and pandas cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with lone surrogates shown as U+FFFD (they cannot be encoded)."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def jsonable(value: Any) -> Any:
    """Return a JSON-compatible copy of ``value``.

    Datetimes (and pandas Timestamps) become ISO text, NaN, ±inf and pandas'
    missing values None, tuples lists, numpy scalars Python numbers, mapping
    keys text; anything else its ``str()``. The result always passes
    ``json.dumps(..., allow_nan=False)`` and encodes as UTF-8: a lone
    surrogate stored by a run is shown as U+FFFD rather than breaking every
    listing and export of the study. Used for tables, exports, the dashboard
    and the ``run.json`` a run reads.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {valid_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    try:
        import pandas as pd  # only for values pandas made: it is loaded already

        if pd.isna(value):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    return valid_text(str(value))

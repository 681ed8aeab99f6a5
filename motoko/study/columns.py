"""Columns: a run attribute's values for a whole study, a few hundred runs a record.

A filter on an attribute that no index answers (``runs.score > 0``, a free
attribute set by ``doIt.py``, or a ``run:`` field of bd.yaml) would otherwise
load every run, one ZEO record per run: seconds for 100k runs from a new
process. A study therefore keeps, for every such attribute, a *column*: run
id → value, in pages of :data:`PAGE_SIZE` runs. Scanning a column loads
``N / PAGE_SIZE`` small records instead of ``N`` runs.

Only scalar values are copied (bool, int, float, short str); any other value
(a list, a date, a long text) is recorded as :data:`OTHER`, meaning "load the
run to check", so a column never needs to be trusted beyond what it holds.
Runs without the attribute are absent from the column.

:class:`motoko.study.records.Run` writes its column on every attribute
assignment, in the same transaction, so the two never disagree. Pages merge
concurrent changes of different runs (a page has fixed bounds, so it never
splits), which keeps two processes setting the same attribute on different
runs from conflicting, as they would not on the runs themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import persistent
from BTrees.IIBTree import IITreeSet
from BTrees.IOBTree import IOBTree
from ZODB.POSException import ConflictError

from motoko.study.prefetch import prefetch, prefetch_buckets
from motoko.study.values import same

#: Runs per page: run ids ``k * PAGE_SIZE`` to ``(k + 1) * PAGE_SIZE - 1``.
PAGE_SIZE = 256
#: Longer strings are not copied (a log excerpt, a whole file).
MAX_TEXT = 200
#: Stands for a value the column does not copy: the run must be read.
OTHER = ()
_ABSENT = object()


def column_value(value: Any) -> Any:
    """What a column stores for ``value``: the value itself if scalar, else :data:`OTHER`."""
    kind = type(value)
    if kind is bool or kind is int or kind is float:
        return value
    if kind is str and len(value) <= MAX_TEXT:
        return value
    return OTHER


class ColumnPage(persistent.Persistent):
    """The values of one attribute for up to :data:`PAGE_SIZE` consecutive run ids."""

    def __init__(self) -> None:
        self.values: dict[int, Any] = {}

    def _p_resolveConflict(  # noqa: N802
        self, old: dict[str, Any], committed: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge concurrent changes run by run; the same run changed differently conflicts."""
        base, theirs, mine = old.get("values", {}), committed.get("values", {}), new.get("values", {})
        merged = dict(theirs)
        for rid in set(base) | set(theirs) | set(mine):
            o, c, n = base.get(rid, _ABSENT), theirs.get(rid, _ABSENT), mine.get(rid, _ABSENT)
            if same(n, o):
                continue
            if not same(c, o) and not same(c, n):
                raise ConflictError(f"both changed the column value of run {rid}")
            if n is _ABSENT:
                merged.pop(rid, None)
            else:
                merged[rid] = n
        return {**committed, "values": merged}


def record(columns: Any, name: str, rid: int, value: Any) -> None:
    """Store run ``rid``'s ``name`` (``_ABSENT`` or None: remove it) in ``columns``."""
    stored = _ABSENT if value is None or value is _ABSENT else column_value(value)
    column: IOBTree | None = columns.get(name)
    if column is None:
        if stored is _ABSENT:
            return
        column = columns[name] = IOBTree()
    number = rid // PAGE_SIZE
    page: ColumnPage | None = column.get(number)
    if page is None:
        if stored is _ABSENT:
            return
        page = column[number] = ColumnPage()
    current = page.values.get(rid, _ABSENT)
    if same(current, stored):
        return
    if stored is _ABSENT:
        del page.values[rid]
    else:
        page.values[rid] = stored
    page._p_changed = True


def forget(columns: Any, rid: int, names: Any) -> None:
    """Remove run ``rid`` from the columns ``names``."""
    for name in names:
        record(columns, name, rid, None)


def scan(column: IOBTree | None, check: Callable[[Any], Any]) -> tuple[IITreeSet, IITreeSet, IITreeSet]:
    """Evaluate ``check`` over a column.

    Returns:
        ``(matching, unsure, present)``: the ids whose value passes, the ids
        whose value is :data:`OTHER` (their runs must be checked), and every
        id the column holds.
    """
    matching: list[int] = []
    unsure: list[int] = []
    present: list[int] = []
    if column is not None:
        prefetch_buckets(column)
        pages = list(column.values())
        prefetch(pages)
        for page in pages:
            for rid, value in page.values.items():
                present.append(rid)
                if type(value) is tuple:  # OTHER: the only tuple a column holds
                    unsure.append(rid)
                    continue
                try:
                    if check(value):
                        matching.append(rid)
                except (TypeError, ValueError):
                    pass
    return IITreeSet(matching), IITreeSet(unsure), IITreeSet(present)


def check(columns: Any, runs: Any, skip: frozenset[str]) -> list[str]:
    """Return every difference between ``columns`` and the attributes of ``runs`` (none expected).

    Args:
        columns: A study's columns.
        runs: The study's runs (run id → run).
        skip: Attribute names that have no column.
    """
    problems: list[str] = []
    seen: dict[str, dict[int, Any]] = {
        name: {rid: value for page in column.values() for rid, value in page.values.items()}
        for name, column in columns.items()
    }
    for rid, run in runs.items():
        run._p_activate()
        for name, value in run.__dict__.items():
            if name.startswith("_") or name in skip or value is None:
                continue
            stored = seen.get(name, {}).pop(rid, _ABSENT)
            wanted = column_value(value)
            if not (same(stored, wanted) or (stored != stored and wanted != wanted)):  # NaN
                problems.append(f"run {rid}: column {name} holds {stored!r}, the run {wanted!r}")
    for name, left in seen.items():
        for rid in left:
            problems.append(f"column {name} holds run {rid}, which has no such attribute")
    return problems

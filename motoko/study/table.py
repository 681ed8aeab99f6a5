"""Runs as rows and tables: what handles' ``to_dataframe()`` and every view show.

One run becomes one flat mapping (:func:`run_row`): the job's parameters, the
run's fields, its free attributes, metadata, outputs and the last value of
its quantities. Handles (``RunList.to_dataframe()``), exports, the dashboard
and the CLI all build their tables from these rows, so a column means the
same everywhere. pandas is imported only when a DataFrame is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from motoko.study.values import valid_text

if TYPE_CHECKING:
    import pandas

    from motoko.study.records import Run

#: Columns every exported row starts with, in this order.
LEADING = ("study", "id", "job_id")
#: Run fields exported as columns (after the job's parameters), in this order.
RUN_COLUMNS = (
    "state", "run_name", "event_name", "machine_name", "created", "launched", "started", "finished",
    "exit_code", "error", "progress", "status", "attempt", "nproc", "run_path", "parents",
)
#: Run attributes that are bookkeeping, not results: left out of tables.
_NOT_COLUMNS = frozenset({"history", "launcher", "heartbeat", "exec", "workflow", "stop_requested", "executor_id",
                          "metadata", "output", "study", "id", "job_id"})


def runs_of(selection: Any) -> list[Run]:
    """The runs of a RunList, TaskSelection, list of runs or of ``(run, job)`` pairs."""
    if hasattr(selection, "runs") and callable(selection.runs):
        return list(selection.runs())
    out = []
    for item in selection:
        out.append(item[0] if isinstance(item, tuple) else item)
    return out


def run_row(run: Run, quantities: Iterable[str] | None = None) -> dict[str, Any]:
    """One run as a flat mapping (see :func:`to_dataframe` for the columns)."""
    run._p_activate()  # a ghost's __dict__ is empty
    job = run.job
    row: dict[str, Any] = {"study": run.study, "id": run.id, "job_id": run.job_id}
    params = dict(job.params)
    row.update(params)

    def put(name: str, value: Any) -> None:
        row[f"runs.{name}" if name in params or name in LEADING else name] = value

    for name in RUN_COLUMNS:
        value = getattr(run, name, None)
        if name == "parents":
            value = [f"{s}.{i}" for s, i in run.parents]
        put(name, value)
    for name, value in run.__dict__.items():
        if not name.startswith("_") and name not in _NOT_COLUMNS and name not in RUN_COLUMNS:
            put(name, value)
    for key, value in run.get_metadata().items():
        row[f"meta.{key}"] = value
    for key, value in (run.output or {}).items():
        row[f"output.{key}"] = value
    wanted = run.list_quantities() if quantities is None else list(quantities)
    stored = run._quantities
    for name in wanted:
        quantity = stored.get(name) if stored is not None else None
        row[f"q.{name}"] = quantity.steps[quantity.steps.maxKey()] if quantity is not None and len(quantity.steps) else None
    return row


def to_dataframe(selection: Any, quantities: Iterable[str] | None = None) -> pandas.DataFrame:
    """A DataFrame with one row per run of ``selection``.

    Args:
        selection: A RunList, a TaskSelection, or runs / ``(run, job)`` pairs.
        quantities: Quantity names to include (default: every quantity any
            selected run pushed).

    Columns: ``study``, ``id`` (the run's), ``job_id``, the job's parameters,
    the run fields (``state``, ``run_name``, ``event_name``, ``machine_name``,
    timestamps as UTC datetimes, ``exit_code``, ``error``, ``progress``, ...),
    ``parents`` (``["study.id", ...]``), the run's free attributes (``y``),
    ``meta.KEY`` and ``output.KEY``, and ``q.NAME``: the value at the
    quantity's last step (a list for a vector quantity; empty when a run did
    not push it). A run field named like a job parameter is ``runs.NAME``.
    """
    import pandas as pd

    runs = runs_of(selection)
    names = list(quantities) if quantities is not None else _quantity_names(runs)
    rows = [{k: _valid(v) for k, v in run_row(run, names).items()} for run in runs]
    columns = _columns(rows)
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("created", "launched", "started", "finished"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _valid(value: Any) -> Any:
    """``value`` with lone surrogates (which a run may store; pandas cannot) shown as U+FFFD."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list | tuple):
        return [_valid(v) for v in value]
    if isinstance(value, dict):
        return {k: _valid(v) for k, v in value.items()}
    return value


def _quantity_names(runs: Sequence[Run]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [n for n in run.list_quantities() if n not in names]
    return names


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return columns or list(LEADING)

"""Runs as tables (CSV, JSON, Parquet) and as a lossless ``motoko`` file.

:func:`to_dataframe` turns a selection of runs into one row per run: the
study and run id, the job's parameters, the run's fields and free
attributes, and the last value of each quantity (columns ``q.NAME``).

The ``motoko`` format (:func:`dump_studies` / :func:`load_dump`) keeps
everything needed to rebuild the runs elsewhere: the study schema, job and run
ids, states, timestamps, attempts and history, free attributes, metadata,
every quantity value at every step, and the parents (provenance).
:func:`import_dump` writes it back, one transaction per study, refusing to
overwrite different data.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import DumpError, ExportError, ImportConflict  # noqa: F401 (defined there, importable from here)
from motoko.study.records import ACTIVE, CREATED, LAUNCHED, Run

if TYPE_CHECKING:
    import pandas

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

FORMAT_NAME = "motoko-export"
FORMAT_VERSION = 1
TABLE_FORMATS = ("csv", "json", "parquet")


# -- selections → rows ------------------------------------------------------------------------


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
    rows = [{k: _valid_text(v) for k, v in run_row(run, names).items()} for run in runs]
    columns = _columns(rows)
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("created", "launched", "started", "finished"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _valid_text(value: Any) -> Any:
    """``value`` with lone surrogates (which a run may store; pandas cannot) shown as U+FFFD."""
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _valid_text(v) for k, v in value.items()}
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


# -- writing tables -----------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def jsonable(value: Any) -> Any:
    """A JSON-compatible copy of ``value``: datetimes ISO, NaN and ±inf → None, tuples → lists.

    The result always passes ``json.dumps(..., allow_nan=False)`` and encodes
    as UTF-8: a lone surrogate a run stored in a free attribute is shown as
    U+FFFD rather than breaking every listing and export of the study.
    """
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {jsonable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def write_table(frame: pandas.DataFrame, fmt: str, path: Path | str | None) -> str | None:
    """Write ``frame`` as csv, json or parquet to ``path``; return the text if ``path`` is None.

    CSV cells holding lists or mappings are written as JSON; JSON is a list
    of objects with full float precision.

    Raises:
        ExportError: for parquet without a path or without pyarrow.
    """
    if fmt == "json":
        records = [{str(k): jsonable(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]
        text = json.dumps(records, indent=1)
        return _emit(text + "\n", path)
    if fmt == "csv":
        flat = frame.copy()
        for column in flat.columns:
            if flat[column].dtype == object:
                flat[column] = [json.dumps(jsonable(v)) if isinstance(v, list | tuple | dict) else v for v in flat[column]]
        return _emit(flat.to_csv(index=False), path)
    if fmt == "parquet":
        if path is None:
            raise ExportError("parquet is a binary format and needs an output file", hint="add -o FILE.parquet")
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("parquet export needs pyarrow", hint="pip install pyarrow (or motoko[views])") from None
        _parquet_safe(frame).to_parquet(path, index=False)
        return None
    raise ExportError(f"unknown table format {fmt!r}", hint=f"use one of {', '.join(TABLE_FORMATS)}")


def _emit(text: str, path: Path | str | None) -> str | None:
    if path is None:
        return text
    Path(path).write_text(text)
    return None


def _parquet_safe(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Object columns that Arrow cannot type (mixed lists/scalars, mappings) become JSON text."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        values = [v for v in out[column] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        kinds = {type(v) for v in values}
        if kinds <= {str} or kinds <= {bool}:
            continue
        if kinds <= {list} and all(all(isinstance(x, int | float) and not isinstance(x, bool) for x in v) for v in values):
            out[column] = [[float(x) for x in v] if isinstance(v, list) else None for v in out[column]]
            continue
        if kinds <= {list} and all(all(isinstance(x, str) for x in v) for v in values):
            continue
        out[column] = [json.dumps(jsonable(v)) if v is not None else None for v in out[column]]
    return out


# -- the lossless motoko format ------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """JSON with datetimes tagged, so that they come back as datetimes."""
    if isinstance(value, _dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$datetime"}:
            return _dt.datetime.fromisoformat(value["$datetime"])
        if set(value) == {"$float"}:
            return float(value["$float"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _run_record(run: Run) -> dict[str, Any]:
    run._p_activate()  # a ghost's __dict__ is empty
    attributes = {k: v for k, v in run.__dict__.items() if not k.startswith("_") and k not in ("id", "job_id")}
    quantities = {}
    if run._quantities is not None:
        for name, quantity in run._quantities.items():
            quantities[name] = [[step, value] for step, value in quantity.steps.items()]
    return {
        "id": run.id,
        "job_id": run.job_id,
        "state": run.state,
        "attributes": attributes,
        "metadata": run.get_metadata(),
        "quantities": quantities,
    }


def dump_studies(workflow: Any, studies: Iterable[str] | None = None, constraints: Any = None) -> dict[str, Any]:
    """Everything about the selected runs of ``studies``, as JSON-ready data.

    Only the jobs of the selected runs are included. Parents are kept as
    ``(study, id)``; they resolve after import when their study is imported
    into the same database too.
    """
    names = [workflow.config.resolve(s) for s in studies] if studies else list(workflow.task_managers)
    out = []
    for name in names:
        db = workflow.db_for(name)
        study = db.study(name)
        runs = db.select(name, constraints or None)
        job_ids = sorted({run.job_id for run in runs})
        out.append({
            "name": name,
            "schema": study.schema_data,
            "jobs": [{"id": jid, "params": study.jobs[jid].params} for jid in job_ids],
            "runs": [_run_record(run) for run in runs],
        })
    return _encode({"format": FORMAT_NAME, "version": FORMAT_VERSION, "studies": out})


def write_dump(data: Mapping[str, Any], path: Path | str | None) -> str | None:
    """Write a dump as JSON to ``path``; return the text if ``path`` is None."""
    # default=str: a free attribute holding an object JSON cannot represent
    # is kept as its text rather than failing the whole export.
    return _emit(json.dumps(data, indent=1, default=str) + "\n", path)


def load_dump(path: Path | str) -> dict[str, Any]:
    """Read and check a file written by ``motoko export --format motoko``.

    Raises:
        DumpError: naming the file, for anything else.
    """
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise DumpError(f"cannot read {source}: {exc.strerror}", hint="give the file written by `motoko export --format motoko -o FILE`") from None
    except ValueError as exc:
        raise DumpError(f"{source} is not JSON ({exc})", hint="give the file written by `motoko export --format motoko -o FILE`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise DumpError(f"{source} is not a motoko export", hint="write one with `motoko export --format motoko -o FILE`")
    if data.get("version") != FORMAT_VERSION:
        raise DumpError(
            f"{source} is a motoko export of version {data.get('version')}; this motoko reads version {FORMAT_VERSION}",
            hint="import it with the motoko release that wrote it",
        )
    decoded: dict[str, Any] = _decode(data)
    return decoded


# Paths through the life cycle from CREATED to each motoko state, so that an
# imported run reaches its state through Study.transition like any other.
_PATHS = {
    "CREATED": (),
    "LAUNCHED": ("LAUNCHED",),
    "RUNNING": ("LAUNCHED", "RUNNING"),
    "FINISHED": ("LAUNCHED", "FINISHED"),
    "FAILED": ("FAILED",),
    "CANCELLED": ("CANCELLED",),
    "LOST": ("LAUNCHED", "LOST"),
}


def import_dump(db: Any, data: Mapping[str, Any], studies: Iterable[str] | None = None) -> dict[str, int]:
    """Write the studies of a dump into ``db`` (a StudyDB); return runs imported per study.

    Ids, states, timestamps, attempts, history, attributes, metadata,
    quantities and parents are kept. Idempotent: importing the same dump
    again changes nothing (runs that exist with the same job are skipped).
    Each study is written in one transaction, after checking every id.

    Raises:
        ImportConflict: when a job or run id exists with different data.
        UnknownNameError: for a study name not in the dump.
    """
    from motoko.errors import UnknownNameError
    from motoko.study.schema import StudySchema

    by_name = {s["name"]: s for s in data["studies"]}
    wanted = list(studies) if studies else list(by_name)
    for name in wanted:
        if name not in by_name:
            raise UnknownNameError("study", name, by_name, where="the export file")
    imported = {}
    for name in wanted:
        entry = by_name[name]
        db.create_study(StudySchema.from_dict(entry["schema"]))
        imported[name] = db.transact(lambda entry=entry: _import_study(db, entry), what=f"import study {entry['name']!r}")
    return imported


def _import_study(db: Any, entry: Mapping[str, Any]) -> int:
    study = db.study(entry["name"])
    jobs = {}
    clashes = []
    for job in entry["jobs"]:
        existing = study.jobs.get(job["id"])
        if existing is not None and existing.params != job["params"]:
            clashes.append(job["id"])
        jobs[job["id"]] = job["params"]
    if clashes:
        raise ImportConflict(
            f"study {entry['name']!r} already has jobs {clashes[:10]} with other parameters",
            study=entry["name"], ids=clashes, hint="import into an empty study (`motoko create -y` empties them)",
        )
    new_runs = []
    for record in entry["runs"]:
        existing = study.runs.get(record["id"])
        if existing is None:
            new_runs.append(record)
        elif existing.job_id != record["job_id"]:
            clashes.append(record["id"])
    if clashes:
        raise ImportConflict(
            f"study {entry['name']!r} already has runs {clashes[:10]} of other jobs",
            study=entry["name"], ids=clashes, hint="import into an empty study (`motoko create -y` empties them)",
        )
    for jid in sorted(jobs):
        _restore_job(study, jid, jobs[jid])
    for record in new_runs:
        _restore_run(study, record)
    return len(new_runs)


def _restore_job(study: Any, jid: int, params: dict[str, Any]) -> None:
    if jid in study.jobs:
        return
    counter = study.job_counter
    top = counter.value
    # add_job takes the next id from the counter: point it at the exported id,
    # then put it back past every id in use.
    counter.value = jid - 1
    job = study.add_job(params)
    counter.value = max(top, jid)
    if job.id != jid:
        raise ImportConflict(
            f"study {study.name!r} has these parameters as job {job.id}, the export as job {jid}",
            study=study.name, ids=[jid], hint="import into an empty study (`motoko create -y` empties them)",
        )


def _restore_run(study: Any, record: Mapping[str, Any]) -> None:
    attributes = dict(record["attributes"])
    run_fields = study.schema.run_fields
    run_params = {k: attributes.pop(k) for k in list(attributes) if k in run_fields}
    run_name = attributes.pop("run_name", None)
    counter = study.run_counter
    top = counter.value
    counter.value = record["id"] - 1
    run, _ = study.add_run(study.jobs[record["job_id"]], run_params, run_name, {})
    counter.value = max(top, record["id"])
    attempt = attributes.pop("attempt", 1)
    history = tuple(attributes.pop("history", ()))
    parents = tuple(tuple(p) for p in attributes.pop("parents", ()))
    # The attempt is set after the state: reaching FAILED or LOST with
    # attempts left would requeue the run (the study's retry policy).
    run.attempt = 1 << 30
    state = record["state"]
    for step in _PATHS.get(state, (state,)):
        study.transition(run, step)
    run.attempt = attempt
    run.history = history
    run.parents = parents
    for name, value in attributes.items():
        setattr(run, name, value)
    if record.get("metadata"):
        run.set_metadata(record["metadata"])
    for name, steps in record.get("quantities", {}).items():
        for step, value in steps:
            run.push_quantity(value, int(step), name)


__all__ = [
    "to_dataframe", "write_table", "dump_studies", "write_dump", "load_dump", "import_dump",
    "ExportError", "ImportConflict", "DumpError", "ACTIVE", "CREATED", "LAUNCHED",
]

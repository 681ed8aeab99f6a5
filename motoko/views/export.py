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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import DumpError, ExportError, ImportConflict  # noqa: F401 (defined there, importable from here)
from motoko.study.records import Run
from motoko.study.restore import import_dump
from motoko.study.states import ACTIVE, CREATED, LAUNCHED
from motoko.study.table import LEADING, RUN_COLUMNS, run_row, runs_of, to_dataframe  # noqa: F401 (part of this API)
from motoko.study.values import jsonable

if TYPE_CHECKING:
    import pandas

FORMAT_NAME = "motoko-export"
FORMAT_VERSION = 1
TABLE_FORMATS = ("csv", "json", "parquet")


# -- writing tables -----------------------------------------------------------------------------


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


__all__ = [
    "to_dataframe", "write_table", "dump_studies", "write_dump", "load_dump", "import_dump",
    "ExportError", "ImportConflict", "DumpError", "ACTIVE", "CREATED", "LAUNCHED",
]

"""A study's bd.yaml, read into a validated :class:`StudySchema`.

bd.yaml declares a study's typed job and run fields, the defaults of its
parameter space and of its runs, and the files a run needs::

    study: mult
    job: {x: float}             # typed job fields
    run: {compiler: str}        # extra typed run fields
    job_space: {x: [1.0, 2.0]}  # defaults merged into every createTask
    run_params: {compiler: gcc} # defaults stored on every run
    exec_file: launch.sh
    config_files: [doIt.py]
    retries: 2
    retry_on: [LOST, FAILED]
    retry: {TIMEOUT: {time: x2, max_time: "08:00:00"}}   # see motoko.study.retry
    lost_after: 30

Everything is checked when the file is loaded, so that a typo fails at once,
with the file and line, rather than at the first createTask or inside a run:
unknown keys and types get a "did you mean", values are coerced, file names
must stay inside the study folder (no absolute paths, no ``..``), and the
files must exist. Types come from a fixed table
(:mod:`motoko.study.fields`), never from ``eval``.

Each key is read and checked at its line by :mod:`motoko.study.bd_yaml`;
this module assembles them into the schema, checks the files on disk, and
gives the schema its behaviour (coercing a job's and a run's values, storing
and restoring it).

Errors: :class:`SchemaError` for the file's shape (bad YAML, not a mapping,
bad field names, unsafe or missing files), :class:`UnknownNameError` for
unknown keys, types, fields and states, :class:`ParameterError` for wrong
values. All are :class:`MotokoError`.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motoko.errors import (
    ParameterError,
    SchemaError,
    UnknownNameError,
    did_you_mean,
    suggest,
)
from motoko.study import space
from motoko.study.bd_yaml import (
    DICT_KEYS,
    SETTABLE_BUILTIN_RUN_FIELDS,
    check_keys,
    read_fields,
    read_files,
    read_lost_after,
    read_retries,
    read_retry_on,
    read_section,
    read_slurm_options,
    read_study_name,
    read_text,
    read_walltime,
    read_yaml,
    yaml_type_name,
)
from motoko.study.fields import (
    BUILTIN_JOB_FIELDS,
    BUILTIN_RUN_FIELDS,
    FIELD_TYPES,
    FieldType,
)
from motoko.study.retry import parse_rules
from motoko.study.sweeps import Sweep
from motoko.yamldoc import Positions


@dataclass
class StudySchema:
    """The validated content of a study's bd.yaml.

    Attributes:
        name: The study's name.
        folder: The study folder (absolute), or None for a schema not read from disk.
        job_fields: User-declared job fields, in the file's order.
        run_fields: User-declared extra run fields.
        job_space: Defaults merged into every createTask, as written (may hold sweeps).
        run_params: Defaults stored on every run, coerced.
        exec_file: The script a run executes, relative to the folder.
        config_files: Files copied into each run directory, relative to the folder.
        retries: How many times a run ending in a ``retry_on`` state is retried.
        retry_on: States that trigger a retry (among LOST, FAILED).
        retry_rules: Per reason of failure (TIMEOUT, OUT_OF_MEMORY), how a
            retry scales the run's SLURM resources (see :mod:`motoko.study.retry`).
        lost_after: Seconds without heartbeat after which a run is LOST; None
            means the workflow's default.
        slurm_options: Extra sbatch options for this study's runs.
        walltime: Expected seconds per run (pilots claim only runs that fit
            their remaining time), or None when unknown.
        description: Free text.
        source: The bd.yaml the schema was read from, or None.
    """

    name: str
    folder: Path | None
    job_fields: dict[str, FieldType]
    run_fields: dict[str, FieldType]
    job_space: dict[str, Any]
    run_params: dict[str, Any]
    exec_file: str = "launch.sh"
    config_files: list[str] = field(default_factory=lambda: ["doIt.py"])
    retries: int = 0
    retry_on: list[str] = field(default_factory=lambda: ["LOST"])
    retry_rules: dict[str, dict[str, str]] = field(default_factory=dict)
    lost_after: float | None = None
    slurm_options: list[str] = field(default_factory=list)
    walltime: float | None = None
    description: str = ""
    source: str | None = None

    def all_run_fields(self) -> dict[str, FieldType]:
        """Return the built-in run fields followed by the study's own."""
        builtin = {name: FIELD_TYPES[t] for name, t in BUILTIN_RUN_FIELDS.items()}
        return {**builtin, **self.run_fields}

    def all_job_fields(self) -> dict[str, FieldType]:
        """Return the built-in job fields (``id``) followed by the study's own."""
        builtin = {name: FIELD_TYPES[t] for name, t in BUILTIN_JOB_FIELDS.items()}
        return {**builtin, **self.job_fields}

    def coerce_job(self, params: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Return one job's parameters coerced, in the order of ``job_fields``.

        Every user-declared job field must be given (``id`` is the database's
        and is refused). Values are single values: sweeps are :func:`expand`'s.

        Raises:
            UnknownNameError: a key that is not a job field (with suggestions).
            ParameterError: a value of the wrong type, or missing fields.
        """
        for name in params:
            if name not in self.job_fields:
                raise UnknownNameError("job field", str(name), self.job_fields, where=where)
        missing = [name for name in self.job_fields if name not in params]
        if missing:
            raise ParameterError(
                f"missing job field(s) {', '.join(repr(m) for m in missing)} of study {self.name!r}",
                field=missing[0],
                where=where,
                hint="give every job field a value",
            )
        return {
            name: ftype.coerce(params[name], field=name, where=where)
            for name, ftype in self.job_fields.items()
        }

    def coerce_run(self, params: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Return run parameters coerced; fields not given are simply absent.

        Keys may be the study's run fields or built-in run fields (the
        database stores both through this one path).

        Raises:
            UnknownNameError: a key that is no run field (with suggestions).
            ParameterError: a value of the wrong type.
        """
        known = self.all_run_fields()
        result = {}
        for name, value in params.items():
            if name not in known:
                err = UnknownNameError("run field", str(name), known, where=where)
                if not suggest(str(name), known):
                    # Listing twenty built-ins would hide the study's own fields;
                    # and "there is none defined" alone says nothing of the fix.
                    err.hint = (
                        did_you_mean(str(name), self.run_fields)
                        if self.run_fields
                        else "the study declares no run field; declare it under `run:` in bd.yaml"
                    )
                    err.args = (str(err),)
                raise err
            result[name] = known[name].coerce(value, field=name, where=where)
        return result

    def to_dict(self) -> dict[str, Any]:
        """Return plain JSON- and YAML-able data, for storing in the database.

        Types become their names, sweeps their bd.yaml form, dates ISO text;
        :meth:`from_dict` reads it back into an equal schema.
        """
        return {
            "name": self.name,
            "folder": str(self.folder) if self.folder is not None else None,
            "job_fields": {name: t.name for name, t in self.job_fields.items()},
            "run_fields": {name: t.name for name, t in self.run_fields.items()},
            "job_space": _plain(self.job_space),
            "run_params": _plain(self.run_params),
            "exec_file": self.exec_file,
            "config_files": list(self.config_files),
            "retries": self.retries,
            "retry_on": list(self.retry_on),
            "retry_rules": {reason: dict(rule) for reason, rule in self.retry_rules.items()},
            "lost_after": self.lost_after,
            "slurm_options": list(self.slurm_options),
            "walltime": self.walltime,
            "description": self.description,
            "source": self.source,
        }

    def to_bd_yaml(self) -> dict[str, Any]:
        """The schema with bd.yaml's keys (``study``, ``job``, ``run``...), unset ones left out."""
        data = self.to_dict()
        return {DICT_KEYS[k]: v for k, v in data.items() if k in DICT_KEYS and v not in (None, [], {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySchema:
        """Rebuild a schema from :meth:`to_dict`'s data, checking it again.

        Files are not checked: the folder may be on another host.

        Raises:
            SchemaError, UnknownNameError, ParameterError: as for bd.yaml.
        """
        if not isinstance(data, Mapping) or "name" not in data:
            raise SchemaError(
                "a stored study schema must be a mapping with a 'name'",
                hint="store schemas with StudySchema.to_dict()",
            )
        label = data.get("source") or f"stored schema of study {data['name']!r}"
        for key in data:
            if key not in DICT_KEYS and key not in ("folder", "source"):
                raise UnknownNameError(
                    "schema key", str(key), [*DICT_KEYS, "folder", "source"], where=label
                )
        bd = {DICT_KEYS[k]: v for k, v in data.items() if k in DICT_KEYS}
        folder = Path(data["folder"]) if data.get("folder") else None
        schema = _build(bd, Positions(label, None), folder=folder, check_files=False)
        schema.source = data.get("source")
        return schema


def _plain(value: Any) -> Any:
    """Return ``value`` as plain data (lists, dicts, numbers, strings)."""
    if isinstance(value, Sweep):
        return _plain(value.to_data())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def _check_files(schema: StudySchema, data: Mapping[str, Any], lines: Positions) -> None:
    """Check the exec and config files exist inside the folder (links included)."""
    assert schema.folder is not None
    root = schema.folder.resolve()
    entries = [("exec_file", schema.exec_file, lines("exec_file"))]
    entries += [
        ("config_files", n, lines("config_files", i)) for i, n in enumerate(schema.config_files)
    ]
    for key, name, where in entries:
        path = schema.folder / name
        default = " (the default)" if key not in data else ""
        if not path.exists():
            raise SchemaError(
                f"{key} {name!r}{default} not found in study folder {schema.folder}",
                where=where,
                hint=f"create it, or set `{key}:` in bd.yaml"
                + ("; `config_files: []` if runs need none" if key == "config_files" else ""),
            )
        if not path.resolve().is_relative_to(root):
            raise SchemaError(
                f"{key} {name!r} leads outside the study folder {schema.folder} (through a link)",
                where=where,
                hint="copy the file into the study folder instead of linking it",
            )
    if not (schema.folder / schema.exec_file).is_file():
        raise SchemaError(
            f"exec_file {schema.exec_file!r} is not a file",
            where=lines("exec_file"),
            hint="name the script that runs the study, e.g. launch.sh",
        )


def _run_params(schema: StudySchema, data: Mapping[str, Any], lines: Positions) -> dict[str, Any]:
    """Read ``run_params``: coerced now so that a wrong default fails with its line."""
    result: dict[str, Any] = {}
    for name, value in read_section(data, "run_params", lines).items():
        where = lines("run_params", name)
        if name in BUILTIN_RUN_FIELDS and name not in SETTABLE_BUILTIN_RUN_FIELDS:
            raise ParameterError(
                f"run field {name!r} is set by motoko, not by run_params",
                field=name,
                where=where,
                hint="built-in run fields run_params may set: "
                + ", ".join(SETTABLE_BUILTIN_RUN_FIELDS),
            )
        if name not in schema.run_fields and name not in SETTABLE_BUILTIN_RUN_FIELDS:
            possible = [*schema.run_fields, *SETTABLE_BUILTIN_RUN_FIELDS]
            err = UnknownNameError("run field", str(name), possible, where=where)
            err.hint = f"{err.hint}; declare it under `run:`"
            err.args = (str(err),)
            raise err
        result.update(schema.coerce_run({name: value}, where=where))
    return result


def _job_space(schema: StudySchema, data: Mapping[str, Any], lines: Positions) -> dict[str, Any]:
    """Check ``job_space`` (each key at its line, then the whole); keep it as written."""
    raw = read_section(data, "job_space", lines)
    for key, value in raw.items():
        space.check_space(schema, {key: value}, where=lines("job_space", key))
    space.check_space(schema, raw, where=lines("job_space"))
    return dict(raw)


def _build(data: Any, lines: Positions, *, folder: Path | None, check_files: bool) -> StudySchema:
    """Validate bd.yaml's data into a schema; every check names its line."""
    if data is None:
        raise SchemaError(
            "the file is empty",
            where=lines.source,
            hint="write at least `study: NAME` and `job: {x: float}`",
        )
    if not isinstance(data, Mapping):
        raise SchemaError(
            f"the top level must be a mapping (study:, job:, ...), got {yaml_type_name(data)}",
            where=lines.source
            if lines.root is None
            else f"{lines.source}:{lines.root.start_mark.line + 1}",
            hint="write `key: value` lines, e.g. `study: mult`",
        )
    check_keys(data, lines)
    exec_file, config_files = read_files(data, lines)
    schema = StudySchema(
        name=read_study_name(data, lines, folder),
        folder=folder,
        job_fields=read_fields(data, "job", lines),
        run_fields=read_fields(data, "run", lines),
        job_space={},
        run_params={},
        exec_file=exec_file,
        config_files=config_files,
        retries=read_retries(data, lines),
        retry_on=read_retry_on(data, lines),
        retry_rules=parse_rules(data.get("retry"), lines),
        lost_after=read_lost_after(data, lines),
        walltime=read_walltime(data, lines),
        slurm_options=read_slurm_options(data, lines),
        description=read_text(data, "description", "", lines),
    )
    schema.run_params = _run_params(schema, data, lines)
    schema.job_space = _job_space(schema, data, lines)
    if check_files and folder is not None:
        _check_files(schema, data, lines)
    return schema


def parse_schema(
    text: str, *, source: str = "bd.yaml", folder: Path | None = None, check_files: bool = True
) -> StudySchema:
    """Read bd.yaml's text into a validated schema.

    Args:
        text: The YAML text.
        source: The file's path as the user knows it, used in messages
            (``studies/mult/bd.yaml:3: ...``) and stored as ``schema.source``.
        folder: The study folder: the default study name and where files are
            checked. None checks no file.
        check_files: Whether exec_file and config_files must exist. Their
            names are always checked to stay inside the folder.

    Raises:
        SchemaError, UnknownNameError, ParameterError: see the module docstring.
    """
    folder = Path(folder).absolute() if folder is not None else None
    data, lines = read_yaml(text, source)
    schema = _build(data, lines, folder=folder, check_files=check_files)
    schema.source = source
    return schema


def load_schema(path: str | Path, *, check_files: bool = True) -> StudySchema:
    """Read a study's bd.yaml; ``path`` is the study folder or the bd.yaml file.

    Raises:
        SchemaError: the folder or file does not exist or cannot be read, and
            whatever :func:`parse_schema` raises.
    """
    given = Path(path)
    if not given.exists():
        raise SchemaError(
            "no such study folder or bd.yaml file",
            where=str(path),
            hint="give a study folder containing bd.yaml, or the bd.yaml file",
        )
    file = given / "bd.yaml" if given.is_dir() else given
    if not file.is_file():
        raise SchemaError(
            f"no bd.yaml in study folder {given}",
            where=str(file),
            hint="create bd.yaml with at least `study: NAME` and `job: {x: float}`",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError(
            "the file is not UTF-8 text", where=str(file), hint="save it as UTF-8"
        ) from None
    except OSError as err:
        raise SchemaError(
            f"cannot read the file: {err.strerror}",
            where=str(file),
            hint="check the file's permissions",
        ) from None
    return parse_schema(text, source=str(file), folder=file.parent, check_files=check_files)

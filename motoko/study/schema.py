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

Errors: :class:`SchemaError` for the file's shape (bad YAML, not a mapping,
bad field names, unsafe or missing files), :class:`UnknownNameError` for
unknown keys, types, fields and states, :class:`ParameterError` for wrong
values. All are :class:`MotokoError`.
"""

from __future__ import annotations

import datetime as _dt
import keyword
import math
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml

from motoko.errors import (
    ParameterError,
    SchemaError,
    UnknownNameError,
    did_you_mean,
    suggest,
)
from motoko.study import space
from motoko.study.fields import (
    BUILTIN_JOB_FIELDS,
    BUILTIN_RUN_FIELDS,
    FIELD_TYPES,
    FieldType,
    field_type,
)
from motoko.study.records import MOTOKO_ATTRIBUTES, Job
from motoko.study.retry import parse_rules
from motoko.study.walltime import parse_duration
from motoko.yamldoc import Positions, check_duplicates, check_size

#: States after which a run may be retried.
RETRY_STATES = ("LOST", "FAILED")

#: Built-in run fields a study's run_params may set; the others are motoko's.
SETTABLE_BUILTIN_RUN_FIELDS = ("machine_name", "nproc")

_STUDY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Names a job or run field may not take: every attribute and method of a run
#: (``state``, ``id``, ``push_quantity``...), of a job, and the ids that reach
#: a run's environment. Names starting with ``_`` are refused too (ZODB's
#: ``_p_``/``_v_`` and Python's ``__class__``).
RESERVED_NAMES = frozenset({*MOTOKO_ATTRIBUTES, *(n for n in vars(Job) if not n.startswith("_")), "run_id", "params"})

# to_dict()'s keys → bd.yaml's keys.
_DICT_KEYS = {
    "name": "study",
    "job_fields": "job",
    "run_fields": "run",
    "job_space": "job_space",
    "run_params": "run_params",
    "exec_file": "exec_file",
    "config_files": "config_files",
    "retries": "retries",
    "retry_on": "retry_on",
    "retry_rules": "retry",
    "lost_after": "lost_after",
    "slurm_options": "slurm_options",
    "walltime": "walltime",
    "description": "description",
}

#: The keys bd.yaml may hold.
KEYS = tuple(_DICT_KEYS.values())


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
        return {_DICT_KEYS[k]: v for k, v in data.items() if k in _DICT_KEYS and v not in (None, [], {})}

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
            if key not in _DICT_KEYS and key not in ("folder", "source"):
                raise UnknownNameError(
                    "schema key", str(key), [*_DICT_KEYS, "folder", "source"], where=label
                )
        bd = {_DICT_KEYS[k]: v for k, v in data.items() if k in _DICT_KEYS}
        folder = Path(data["folder"]) if data.get("folder") else None
        schema = _build(bd, Positions(label, None), folder=folder, check_files=False)
        schema.source = data.get("source")
        return schema


def _plain(value: Any) -> Any:
    """Return ``value`` as plain data (lists, dicts, numbers, strings)."""
    if isinstance(value, space.Sweep):
        return _plain(value.to_data())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | range):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


# -- reading YAML with line numbers ---------------------------------------------


def _scalars(node: yaml.Node) -> Iterator[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


def _failing_scalar_line(root: yaml.Node) -> int | None:
    """Return the line of the first scalar PyYAML cannot build (its error has none)."""
    for scalar in _scalars(root):
        try:
            yaml.SafeLoader("").construct_object(scalar)
        except (ValueError, OverflowError):
            return scalar.start_mark.line + 1
    return None


def _read_yaml(text: str, source: str) -> tuple[Any, Positions]:
    """Parse ``text`` into data and a line finder; refuse syntax errors with their line."""
    try:
        loader = yaml.SafeLoader(text)  # reads the whole text: refuses control characters here
    except yaml.reader.ReaderError as err:
        at = text[: err.position].count("\n") + 1
        raise SchemaError(
            f"invalid YAML: character U+{int(err.character or 0):04X} is not allowed",
            where=f"{source}:{at}",
            hint="remove that NUL or control character: YAML files are plain text",
        ) from None
    root: yaml.Node | None = None
    try:
        root = loader.get_single_node()
        check_size(root, source, SchemaError)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        column = f", column {mark.column + 1}" if mark else ""
        problem = err.problem or err.context or "syntax error"
        raise SchemaError(
            f"invalid YAML{column}: {problem}",
            where=where,
            hint="check the indentation, colons and quotes around that place",
        ) from None
    except yaml.YAMLError as err:
        raise SchemaError(
            f"invalid YAML: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            where=source,
            hint="check the file's syntax",
        ) from None
    except SchemaError:
        raise  # too many values once aliases are expanded (check_size)
    except (ValueError, OverflowError) as err:  # an impossible date like 2024-13-01
        line = _failing_scalar_line(root) if root is not None else None
        raise SchemaError(
            f"invalid value: {err}",
            where=f"{source}:{line}" if line else source,
            hint="quote the value to keep it as text",
        ) from None
    finally:
        loader.dispose()
    if root is not None:
        check_duplicates(root, source, SchemaError)
    return data, Positions(source, root)


# -- the parts of bd.yaml ---------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(data: Mapping[Any, Any], lines: Positions) -> None:
    for key in data:
        if key not in KEYS:
            raise UnknownNameError("bd.yaml key", str(key), KEYS, where=lines(key))


def _study_name(data: Mapping[str, Any], lines: Positions, folder: Path | None) -> str:
    name = data.get("study")
    if name is None:
        if folder is None:
            raise SchemaError(
                "no study name", where=lines.source, hint="add `study: NAME` to bd.yaml"
            )
        name = folder.name
    if not isinstance(name, str) or not _STUDY_NAME.match(name):
        raise ParameterError(
            f"study name {name!r} is not valid: expected a letter or _ followed by "
            "letters, digits, _ or -",
            field="study",
            value=name,
            where=lines("study"),
            hint="set `study: NAME` in bd.yaml, e.g. `study: mult`",
        )
    return name


def _check_field_name(section: str, name: Any, where: str) -> None:
    if not isinstance(name, str):
        raise SchemaError(
            f"{section} field name {name!r} is a {type(name).__name__}, not a name",
            where=where,
            hint="quote it: YAML reads unquoted numbers, yes/no, on/off, true/false as values",
        )
    if not _FIELD_NAME.match(name) or keyword.iskeyword(name):
        raise SchemaError(
            f"{section} field name {name!r} is not valid: expected a letter or _ followed "
            "by letters, digits or _ (and not a Python keyword)",
            where=where,
            hint="rename the field, e.g. " + (re.sub(r"\W", "_", name).lstrip("0123456789") or "x"),
        )
    builtin = BUILTIN_RUN_FIELDS if section == "run" else BUILTIN_JOB_FIELDS
    if name in builtin:
        raise SchemaError(
            f"{section} field {name!r} is built in and cannot be declared",
            where=where,
            hint=f"rename it; built-in {section} fields: {', '.join(builtin)}",
        )
    if name.startswith("_") or name in RESERVED_NAMES:
        why = "is private to motoko and ZODB (names starting with _)" if name.startswith("_") else "is motoko's own"
        suggestion = f"{section}_{name.strip('_') or 'x'}"
        raise SchemaError(
            f"{section} field name {name!r} {why}: it would shadow a run's attribute or id",
            where=where,
            hint=f"rename it, e.g. {suggestion!r}",
        )


def _fields(data: Mapping[str, Any], section: str, lines: Positions) -> dict[str, FieldType]:
    """Read ``job:`` or ``run:``: field name → type name."""
    raw = data.get(section)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SchemaError(
            f"{section!r} must be a mapping of field names to types, got {_type_name(raw)}",
            where=lines(section),
            hint=f"write e.g. `{section}: {{x: float, n: int}}`",
        )
    result = {}
    for name, type_name in raw.items():
        where = lines(section, name)
        _check_field_name(section, name, where)
        if not isinstance(type_name, str):
            raise SchemaError(
                f"the type of {section} field {name!r} must be a type name, got {type_name!r}",
                where=where,
                hint="possible types: " + ", ".join(FIELD_TYPES),
            )
        result[name] = field_type(type_name, field=name, where=where)
    return result


def _text(data: Mapping[str, Any], key: str, default: str, lines: Positions) -> str:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ParameterError(
            f"{key!r} expects a string, got {value!r} ({_type_name(value)})",
            field=key,
            value=value,
            where=lines(key),
            hint="quote the value",
        )
    return value


def _text_list(data: Mapping[str, Any], key: str, default: list[str], lines: Positions) -> list[str]:
    """Read a list of strings; a single string is a list of one, null is empty."""
    if key not in data:
        return list(default)
    value = data[key]
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ParameterError(
            f"{key!r} expects a list of strings, got {value!r} ({_type_name(value)})",
            field=key,
            value=value,
            where=lines(key),
            hint=f"write e.g. `{key}: [a, b]`",
        )
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ParameterError(
                f"{key!r} expects a list of strings; item {i + 1} is {item!r} ({_type_name(item)})",
                field=key,
                value=item,
                where=lines(key, i),
                hint="quote the item",
            )
    return list(items)


def _relative_name(key: str, name: str, where: str) -> str:
    """Return ``name`` normalised, refusing anything that could leave the study folder."""
    text = name.replace("\\", "/")
    if not text.strip() or "\0" in text or posixpath.normpath(text) == ".":
        raise ParameterError(
            f"{key!r} expects a file name, got {name!r}",
            field=key,
            value=name,
            where=where,
            hint="name a file of the study folder, e.g. doIt.py",
        )
    if text.startswith("/") or PureWindowsPath(name).drive:
        raise SchemaError(
            f"{key} {name!r} is an absolute path; files must be inside the study folder",
            where=where,
            hint="give the name relative to the study folder, e.g. doIt.py",
        )
    if ".." in text.split("/"):
        raise SchemaError(
            f"{key} {name!r} contains '..'; files must stay inside the study folder",
            where=where,
            hint="copy the file into the study folder and name it relative to it",
        )
    return posixpath.normpath(text)


def _files(data: Mapping[str, Any], lines: Positions) -> tuple[str, list[str]]:
    """Read ``exec_file`` and ``config_files`` (names only; existence is checked later)."""
    exec_file = _relative_name(
        "exec_file", _text(data, "exec_file", "launch.sh", lines), lines("exec_file")
    )
    names = _text_list(data, "config_files", ["doIt.py"], lines)
    config_files: list[str] = []
    for i, name in enumerate(names):
        where = lines("config_files", i)
        clean = _relative_name("config_files", name, where)
        if clean in config_files:
            raise ParameterError(
                f"config file {name!r} is listed twice",
                field="config_files",
                value=name,
                where=where,
                hint="list it once",
            )
        config_files.append(clean)
    return exec_file, config_files


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


def _retries(data: Mapping[str, Any], lines: Positions) -> int:
    value = data.get("retries")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError(
            f"'retries' expects an integer >= 0, got {value!r}",
            field="retries",
            value=value,
            where=lines("retries"),
            hint="set retries to 0 (never retry) or more",
        )
    return value


def _retry_on(data: Mapping[str, Any], lines: Positions) -> list[str]:
    states: list[str] = []
    for i, item in enumerate(_text_list(data, "retry_on", ["LOST"], lines)):
        state = item.strip().upper()
        if state not in RETRY_STATES:
            err = UnknownNameError("retry state", item, RETRY_STATES, where=lines("retry_on", i))
            err.message = (
                f"'retry_on' got unknown state {item!r}; runs are retried after LOST or FAILED"
            )
            err.args = (str(err),)
            raise err
        if state not in states:
            states.append(state)
    return states


def _lost_after(data: Mapping[str, Any], lines: Positions) -> float | None:
    value = data.get("lost_after")
    if value is None:
        return None
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ParameterError(
            f"'lost_after' expects a number of seconds > 0, got {value!r}",
            field="lost_after",
            value=value,
            where=lines("lost_after"),
            hint="e.g. `lost_after: 60`, or remove it to use the workflow's default",
        )
    return float(value)


def _walltime(data: Mapping[str, Any], lines: Positions) -> float | None:
    value = data.get("walltime")
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ParameterError(
            f"'walltime' expects the expected duration of a run: {exc}",
            field="walltime",
            value=value,
            where=lines("walltime"),
            hint='give seconds (e.g. 600) or a SLURM time string (e.g. "00:10:00")',
        ) from None


def _slurm_options(data: Mapping[str, Any], lines: Positions) -> list[str]:
    options = _text_list(data, "slurm_options", [], lines)
    for i, option in enumerate(options):
        # Options end up in the sbatch script: a newline would inject a line.
        if not option.startswith("-") or any(c in option for c in "\r\n\0"):
            raise ParameterError(
                f"'slurm_options' item {option!r} is not one sbatch option",
                field="slurm_options",
                value=option,
                where=lines("slurm_options", i),
                hint="write options as sbatch takes them, e.g. --mem=4G",
            )
    return options


def _section(data: Mapping[str, Any], key: str, lines: Positions) -> Mapping[Any, Any]:
    raw = data.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SchemaError(
            f"{key!r} must be a mapping of field names to values, got {_type_name(raw)}",
            where=lines(key),
            hint=f"write e.g. `{key}: {{x: 1.0}}`",
        )
    return raw


def _run_params(schema: StudySchema, data: Mapping[str, Any], lines: Positions) -> dict[str, Any]:
    """Read ``run_params``: coerced now so that a wrong default fails with its line."""
    result: dict[str, Any] = {}
    for name, value in _section(data, "run_params", lines).items():
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
    raw = _section(data, "job_space", lines)
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
            f"the top level must be a mapping (study:, job:, ...), got {_type_name(data)}",
            where=lines.source
            if lines.root is None
            else f"{lines.source}:{lines.root.start_mark.line + 1}",
            hint="write `key: value` lines, e.g. `study: mult`",
        )
    _check_keys(data, lines)
    exec_file, config_files = _files(data, lines)
    schema = StudySchema(
        name=_study_name(data, lines, folder),
        folder=folder,
        job_fields=_fields(data, "job", lines),
        run_fields=_fields(data, "run", lines),
        job_space={},
        run_params={},
        exec_file=exec_file,
        config_files=config_files,
        retries=_retries(data, lines),
        retry_on=_retry_on(data, lines),
        retry_rules=parse_rules(data.get("retry"), lines),
        lost_after=_lost_after(data, lines),
        walltime=_walltime(data, lines),
        slurm_options=_slurm_options(data, lines),
        description=_text(data, "description", "", lines),
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
    data, lines = _read_yaml(text, source)
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

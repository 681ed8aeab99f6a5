"""The keys of a study's bd.yaml, read from its text and checked one by one at their line.

:mod:`motoko.study.schema` assembles a :class:`~motoko.study.schema.StudySchema`
from these readers; this module holds what each key of bd.yaml may be (its
type, its range, file names that must stay inside the study folder, field
names that must not shadow a run's attributes) and the YAML reading that
keeps each value's line, so that every message names ``bd.yaml:LINE``. It
knows nothing of the schema itself, which is why the schema can import it.
"""

from __future__ import annotations

import keyword
import math
import posixpath
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml

from motoko.errors import ParameterError, SchemaError, UnknownNameError
from motoko.study.fields import (
    BUILTIN_JOB_FIELDS,
    BUILTIN_RUN_FIELDS,
    FIELD_TYPES,
    FieldType,
    field_type,
)
from motoko.study.records import MOTOKO_ATTRIBUTES, Job
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
DICT_KEYS = {
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
KEYS = tuple(DICT_KEYS.values())


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


def read_yaml(text: str, source: str) -> tuple[Any, Positions]:
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


def yaml_type_name(value: Any) -> str:
    """The YAML name of a value's type for messages: ``null`` for None, else the Python type's name."""
    return "null" if value is None else type(value).__name__


def check_keys(data: Mapping[Any, Any], lines: Positions) -> None:
    """Refuse a key bd.yaml may not hold, with a "did you mean" and its line."""
    for key in data:
        if key not in KEYS:
            raise UnknownNameError("bd.yaml key", str(key), KEYS, where=lines(key))


def read_study_name(data: Mapping[str, Any], lines: Positions, folder: Path | None) -> str:
    """Read ``study:`` (default: the folder's name); refuse a name that is not an identifier-like word."""
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


def read_fields(data: Mapping[str, Any], section: str, lines: Positions) -> dict[str, FieldType]:
    """Read ``job:`` or ``run:``: field name → type name."""
    raw = _mapping(data, section, lines, "types", "{x: float, n: int}")
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


def read_text(data: Mapping[str, Any], key: str, default: str, lines: Positions) -> str:
    """Read a text value of ``key`` (``default`` when absent); refuse any other type."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ParameterError(
            f"{key!r} expects a string, got {value!r} ({yaml_type_name(value)})",
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
            f"{key!r} expects a list of strings, got {value!r} ({yaml_type_name(value)})",
            field=key,
            value=value,
            where=lines(key),
            hint=f"write e.g. `{key}: [a, b]`",
        )
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ParameterError(
                f"{key!r} expects a list of strings; item {i + 1} is {item!r} ({yaml_type_name(item)})",
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


def read_files(data: Mapping[str, Any], lines: Positions) -> tuple[str, list[str]]:
    """Read ``exec_file`` and ``config_files`` (names only; existence is checked later)."""
    exec_file = _relative_name(
        "exec_file", read_text(data, "exec_file", "launch.sh", lines), lines("exec_file")
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




def read_retries(data: Mapping[str, Any], lines: Positions) -> int:
    """Read ``retries``: an integer >= 0 (0 when absent)."""
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


def read_retry_on(data: Mapping[str, Any], lines: Positions) -> list[str]:
    """Read ``retry_on``: states among :data:`RETRY_STATES`, upper-cased, each once."""
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


def read_lost_after(data: Mapping[str, Any], lines: Positions) -> float | None:
    """Read ``lost_after``: seconds > 0, or None for the workflow's default."""
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


def read_walltime(data: Mapping[str, Any], lines: Positions) -> float | None:
    """Read ``walltime``: seconds or a SLURM time string, as seconds; None when unknown."""
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


def read_slurm_options(data: Mapping[str, Any], lines: Positions) -> list[str]:
    """Read ``slurm_options``: each one sbatch option (it ends up as a line of the script)."""
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


def read_section(data: Mapping[str, Any], key: str, lines: Positions) -> Mapping[Any, Any]:
    """Read a mapping section (``run_params``, ``job_space``); absent is empty."""
    return _mapping(data, key, lines, "values", "{x: 1.0}")


def _mapping(data: Mapping[str, Any], key: str, lines: Positions, of: str, example: str) -> Mapping[Any, Any]:
    """The mapping of field names to ``of`` under ``key`` (absent: empty); anything else is refused."""
    raw = data.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SchemaError(
            f"{key!r} must be a mapping of field names to {of}, got {yaml_type_name(raw)}",
            where=lines(key),
            hint=f"write e.g. `{key}: {example}`",
        )
    return raw

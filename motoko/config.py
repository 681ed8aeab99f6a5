"""motoko.yaml → a validated :class:`WorkflowConfig`.

Example::

    task_managers:          # each key: a study folder (studies/<key>, or <key>, or path:)
      mult:
      add:
      norm:
        host: zeo://127.0.0.1:8100
    aliases: {post: norm}
    orchestrator: orchestrator.main
    launcher: {executor: local, max_parallel: 2}

Every mistake is reported with the file, line, what was expected and the
possible keys, before anything is written anywhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from motoko.errors import AddressError, ConfigError, UnknownNameError, did_you_mean
from motoko.study.server import Address, parse_address
from motoko.study.space import MAX_JOBS
from motoko.study.walltime import parse_duration
from motoko.yamldoc import Positions, check_duplicates, check_size

CONFIG_NAME = "motoko.yaml"
_TOP_KEYS = (
    "task_managers", "aliases", "orchestrator", "launcher", "poll", "lost_after", "database", "runs_dir", "max_jobs",
    "resume", "server_idle_stop",
)
#: What a resumed workflow does with outdated runs (motoko.flow.outdated.POLICIES).
_OUTDATED = ("ask", "rerun", "keep")
_LAUNCHER_KEYS = (
    "executor", "max_parallel", "slurm_options", "scheduler", "bundle_size",
    "heartbeat", "cancel_grace", "claim_ahead", "machine_name", "poll", "pilots",
)
_EXECUTORS = ("local", "slurm", "dask", "pilot")
_PILOT_KEYS = ("max", "cores", "time", "idle_exit", "slurm_options", "name")


@dataclass
class StudyRef:
    """Where a task manager's study lives.

    Attributes:
        name: The task manager's (and study's) name.
        folder: The study folder (holds bd.yaml).
        host: The database address when the study lives on another server.
    """

    name: str
    folder: Path
    host: Address | None = None


@dataclass
class PilotSettings:
    """Pilot launchers submitted as SLURM jobs (motoko.yaml ``launcher: pilots:``).

    Attributes:
        max: Pilots queued or running at once.
        cores: Runs each pilot executes at once (its ``max_parallel``).
        time: Each pilot's walltime, in seconds (its sbatch ``--time``).
        idle_exit: Seconds a pilot with nothing to do waits before it leaves.
        slurm_options: Extra sbatch options of every pilot job.
        name: The pilots' SLURM job name (how ``motoko pilots`` finds them).
    """

    max: int = 1
    cores: int = 1
    time: float = 3600.0
    idle_exit: float = 60.0
    slurm_options: list[str] = field(default_factory=list)
    name: str = "motoko-pilot"


@dataclass
class LauncherSettings:
    """How launchers execute runs (motoko.yaml ``launcher:``)."""

    executor: str = "local"
    max_parallel: int | None = None
    slurm_options: list[str] = field(default_factory=list)
    scheduler: str | None = None
    bundle_size: int = 1
    heartbeat: float | None = None
    cancel_grace: float = 10.0
    claim_ahead: int | None = None
    machine_name: str | None = None
    poll: float = 5.0
    pilots: PilotSettings = field(default_factory=PilotSettings)


@dataclass
class PollSettings:
    """The safety-net poll of awaiting workflows (seconds)."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 5.0


@dataclass
class WorkflowConfig:
    """A validated motoko.yaml."""

    path: Path
    studies: dict[str, StudyRef]
    aliases: dict[str, str] = field(default_factory=dict)
    orchestrator: str | None = None
    launcher: LauncherSettings = field(default_factory=LauncherSettings)
    poll: PollSettings = field(default_factory=PollSettings)
    lost_after: float = 60.0
    database: Address | None = None
    runs_dir: Path | None = None
    #: Most jobs one createTask may name (counted before the space is expanded).
    max_jobs: int = MAX_JOBS
    #: ``resume: {outdated: ask | rerun | keep}``: what ``motoko run`` does with
    #: finished runs whose study files changed (see motoko.flow.outdated).
    resume_outdated: str = "ask"
    #: Seconds without a client before an auto-started server stops (0: never;
    #: None: $MOTOKO_SERVER_IDLE_STOP, else 30 min).
    server_idle_stop: float | None = None

    @property
    def directory(self) -> Path:
        """The workflow directory (where motoko.yaml is)."""
        return self.path.parent

    def resolve(self, name: str) -> str:
        """Return the study name for a task-manager name or alias.

        Raises:
            UnknownNameError: suggesting close names.
        """
        if name in self.studies:
            return name
        if name in self.aliases:
            return self.aliases[name]
        raise UnknownNameError("study", name, [*self.studies, *self.aliases], where=str(self.path))


def find_config(start: Path | str | None = None) -> Path:
    """Return the motoko.yaml found by searching upward from ``start`` (or cwd).

    Raises:
        ConfigError: if there is none, saying how to make one.
    """
    here = Path(start or Path.cwd()).resolve()
    if here.is_file():
        return here
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} in {here} or any directory above it",
        hint="run motoko inside a workflow directory, name one with -C DIR, or create one with `motoko init DIR`",
    )


def load_config(path: Path | str | None = None) -> WorkflowConfig:
    """Load and validate a motoko.yaml (found upward from cwd when ``path`` is None)."""
    file = find_config(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        # A ValueError, not an OSError: it used to escape as a traceback.
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"the file is not UTF-8 text (byte {exc.object[exc.start]:#x})",
            where=f"{file}:{line}",
            hint="save it as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}", hint="check the file's permissions") from None
    try:
        node = yaml.compose(text)
        check_size(node, str(file), ConfigError)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", where=where, hint="check indentation and colons") from None
    if node is not None:
        check_duplicates(node, str(file), ConfigError, "setting")
    return _build(file, data, Positions(str(file), node, default_line=1))


def _build(file: Path, data: Any, lines: Positions) -> WorkflowConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of settings", where=lines.at(), hint="start with `task_managers:`")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"unknown setting {key!r}", where=lines.at(str(key)), hint=did_you_mean(str(key), _TOP_KEYS))
    base = file.parent
    studies = _studies(base, data.get("task_managers"), lines)
    aliases = _aliases(data.get("aliases"), studies, lines)
    orchestrator = data.get("orchestrator")
    if orchestrator is not None and not isinstance(orchestrator, str):
        raise ConfigError(
            f"orchestrator must be a 'module.function' string, got {orchestrator!r}",
            where=lines.at("orchestrator"),
            hint="e.g. `orchestrator: workflows.orchestrator.main`",
        )
    config = WorkflowConfig(file, studies, aliases, orchestrator)
    config.launcher = _launcher(data.get("launcher"), lines)
    config.poll = _poll(data.get("poll"), lines)
    if "lost_after" in data:
        config.lost_after = _positive(data["lost_after"], "lost_after", lines.at("lost_after"))
    if "max_jobs" in data:
        value = data["max_jobs"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"max_jobs must be a positive whole number, got {value!r}",
                where=lines.at("max_jobs"),
                hint=f"e.g. `max_jobs: 1000000`, or remove it for the default {MAX_JOBS}",
            )
        config.max_jobs = value
    if data.get("database") is not None:
        config.database = _address(data["database"], base, lines.at("database"))
    if "resume" in data:
        config.resume_outdated = _resume(data["resume"], lines)
    if data.get("server_idle_stop") is not None:
        config.server_idle_stop = _idle_stop(data["server_idle_stop"], lines.at("server_idle_stop"))
    if data.get("runs_dir") is not None:
        if not isinstance(data["runs_dir"], str):
            # str() of a list or mapping made a directory named "['a']".
            raise ConfigError(
                f"runs_dir must be a directory name, got {data['runs_dir']!r}",
                where=lines.at("runs_dir"),
                hint="e.g. `runs_dir: runs` (relative to the workflow directory)",
            )
        config.runs_dir = base / data["runs_dir"]
    return config


def _studies(base: Path, raw: Any, lines: Positions) -> dict[str, StudyRef]:
    if raw is None:
        raise ConfigError("no task_managers: a workflow needs at least one study", where=lines.at(), hint="add `task_managers: {mystudy: }`")
    if isinstance(raw, list):
        raw = {str(name): None for name in raw}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"task_managers must be a mapping of study names, got {raw!r}",
            where=lines.at("task_managers"),
            hint="write `task_managers: {mult: , add: }` or one study name per line",
        )
    studies = {}
    for name, spec in raw.items():
        where = lines.at("task_managers", str(name))
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(
                f"task manager {name!r} must be a mapping (path:, host:) or empty, got {spec!r}",
                where=where,
                hint=f"write `{name}:` alone, or `{name}: {{path: studies/{name}}}`",
            )
        unknown = set(spec) - {"path", "host"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"unknown setting {key!r} for task manager {name!r}", where=where, hint=did_you_mean(key, ["path", "host"]))
        folder = _study_folder(base, str(name), spec.get("path"), where)
        host = _address(spec["host"], base, where) if spec.get("host") is not None else None
        studies[str(name)] = StudyRef(str(name), folder, host)
    return studies


def _study_folder(base: Path, name: str, path: Any, where: str) -> Path:
    candidates = [base / str(path)] if path is not None else [base / "studies" / name, base / name]
    for folder in candidates:
        if (folder / "bd.yaml").is_file():
            return folder
    shown = " or ".join(str(c.relative_to(base)) if c.is_relative_to(base) else str(c) for c in candidates)
    raise ConfigError(
        f"study {name!r} has no bd.yaml (looked in {shown})",
        where=where,
        hint="create the study folder with a bd.yaml, or give its location with `path:`",
    )


def _aliases(raw: Any, studies: dict[str, StudyRef], lines: Positions) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            "aliases must map alias names to study names",
            where=lines.at("aliases"),
            hint="e.g. `aliases: {post: norm}`",
        )
    out = {}
    for alias, target in raw.items():
        if str(alias) in studies:
            # resolve() looks at studies first: such an alias would be ignored silently.
            raise ConfigError(
                f"alias {alias!r} is also a task manager's name",
                where=lines.at("aliases", str(alias)),
                hint="rename the alias",
            )
        if str(target) not in studies:
            raise UnknownNameError("study", str(target), studies, where=lines.at("aliases", str(alias)))
        out[str(alias)] = str(target)
    return out


def _launcher(raw: Any, lines: Positions) -> LauncherSettings:
    settings = LauncherSettings()
    if raw is None:
        return settings
    if not isinstance(raw, dict):
        raise ConfigError("launcher must be a mapping", where=lines.at("launcher"), hint="e.g. `launcher: {executor: local, max_parallel: 2}`")
    for key, value in raw.items():
        where = lines.at("launcher", str(key))
        if key not in _LAUNCHER_KEYS:
            raise ConfigError(f"unknown launcher setting {key!r}", where=where, hint=did_you_mean(str(key), _LAUNCHER_KEYS))
        if key == "pilots":
            settings.pilots = _pilots(value, lines)
            continue
        setattr(settings, key, _launcher_value(str(key), value, where))
    return settings


def _pilots(raw: Any, lines: Positions) -> PilotSettings:
    """``launcher: pilots:``; each mistake names the key, the value and what is allowed."""
    pilots = PilotSettings()
    if raw is None:
        return pilots
    if not isinstance(raw, dict):
        raise ConfigError(
            f"launcher pilots must be a mapping, got {raw!r}",
            where=lines.at("launcher", "pilots"),
            hint="e.g. `pilots: {max: 10, cores: 8, time: '02:00:00', idle_exit: 60}`",
        )
    for key, value in raw.items():
        where = lines.at("launcher", "pilots", str(key))
        if key not in _PILOT_KEYS:
            raise ConfigError(f"unknown pilots setting {key!r}", where=where, hint=did_you_mean(str(key), _PILOT_KEYS))
        setattr(pilots, key, _pilot_value(str(key), value, where))
    return pilots


def _pilot_value(key: str, value: Any, where: str) -> Any:
    if key in ("max", "cores"):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
            raise ConfigError(
                f"pilots {key} must be an integer from 1 to 100000, got {value!r}", where=where, hint=f"e.g. `{key}: 4`"
            )
        return value
    if key == "time":
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(
                f"pilots time must be a walltime: {exc}", where=where, hint="give seconds or HH:MM:SS, e.g. `time: '02:00:00'`"
            ) from None
    if key == "idle_exit":
        return _positive(value, "pilots idle_exit", where)
    if key == "name":
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", value):
            raise ConfigError(
                f"pilots name must be a SLURM job name (letters, digits, _.+-), got {value!r}", where=where,
                hint="e.g. `name: motoko-pilot`",
            )
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("-") and "\n" not in v for v in value):
        raise ConfigError(
            f"pilots slurm_options must be a list of sbatch options, got {value!r}",
            where=where,
            hint="e.g. `slurm_options: [--partition=short]`",
        )
    return list(value)


def _launcher_value(key: str, value: Any, where: str) -> Any:
    if key == "executor":
        if value not in _EXECUTORS:
            raise ConfigError(f"unknown executor {value!r}", where=where, hint=did_you_mean(str(value), _EXECUTORS))
        return value
    if key in ("max_parallel", "bundle_size", "claim_ahead"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"launcher {key} must be a positive integer, got {value!r}",
                where=where,
                hint=f"e.g. `{key}: 2`" + (", or remove it to use every core" if key == "max_parallel" else ""),
            )
        return value
    if key in ("heartbeat", "cancel_grace", "poll"):
        return _positive(value, f"launcher {key}", where)
    if key == "slurm_options":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"slurm_options must be a list of strings, got {value!r}",
                where=where,
                hint="e.g. `slurm_options: ['--time=00:10:00']`",
            )
        return list(value)
    if not isinstance(value, str):
        raise ConfigError(f"launcher {key} must be a string, got {value!r}", where=where, hint="quote the value")
    return value


def _poll(raw: Any, lines: Positions) -> PollSettings:
    poll = PollSettings()
    if raw is None:
        return poll
    if not isinstance(raw, dict):
        raise ConfigError(
            "poll must be a mapping (initial, factor, maximum)",
            where=lines.at("poll"),
            hint="e.g. `poll: {initial: 0.5, factor: 2, maximum: 5}`",
        )
    for key, value in raw.items():
        if key not in ("initial", "factor", "maximum"):
            raise ConfigError(f"unknown poll setting {key!r}", where=lines.at("poll", str(key)), hint=did_you_mean(str(key), ["initial", "factor", "maximum"]))
        setattr(poll, key, _positive(value, f"poll {key}", lines.at("poll", str(key))))
    if poll.factor < 1:
        raise ConfigError(
            f"poll factor must be >= 1 (the poll must not get faster), got {poll.factor:g}",
            where=lines.at("poll", "factor"),
            hint="e.g. `factor: 2`, or 1 for a constant interval",
        )
    return poll


def _resume(raw: Any, lines: Positions) -> str:
    """``resume: {outdated: ask | rerun | keep}`` → the policy for outdated runs."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"resume must be a mapping, got {raw!r}", where=lines.at("resume"), hint="e.g. `resume: {outdated: rerun}`"
        )
    for key in raw:
        if key != "outdated":
            raise ConfigError(
                f"unknown resume setting {key!r}", where=lines.at("resume", str(key)), hint=did_you_mean(str(key), ["outdated"])
            )
    value = raw.get("outdated", "ask")
    if value not in _OUTDATED:
        raise ConfigError(
            f"resume outdated must be one of {', '.join(_OUTDATED)}, got {value!r}",
            where=lines.at("resume", "outdated"),
            hint="ask: ask on a terminal, stop otherwise; rerun: run them again; keep: reuse them",
        )
    return str(value)


def _positive(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{what} must be a positive number of seconds, got {value!r}",
            where=where,
            hint="give a number > 0, e.g. 60, or remove the setting to use the default",
        )
    return float(value)


def _idle_stop(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            f"server_idle_stop must be a number of seconds, got {value!r}",
            where=where,
            hint="e.g. 1800 (the default: 30 min), or 0 for a server that never stops by itself",
        )
    return float(value)


def _address(value: Any, base: Path, where: str) -> Address:
    try:
        return parse_address(str(value), base)
    except AddressError as exc:
        exc.where = where
        exc.args = (str(exc),)
        raise


def database_address(config: WorkflowConfig, study: str | None = None) -> Address | None:
    """The explicit address of a study's database, or None for the embedded server.

    Order: the study's ``host:``, ``MOTOKO_DB`` in the environment, the
    config's ``database:``; None means the workflow's own server.
    """
    if study is not None and study in config.studies and config.studies[study].host is not None:
        return config.studies[study].host
    env = os.environ.get("MOTOKO_DB")
    if env:
        return parse_address(env, config.directory)
    return config.database

"""One exception hierarchy for everything motoko reports.

Every error a user can cause is a :class:`MotokoError`. Each one carries what
went wrong, *where* (a file and line, a field, a column of a constraint string)
and a *hint* saying how to fix it, so that the CLI can print a single useful
line and exit 2. Subclasses also inherit the builtin exception a Python caller
would naturally catch (``KeyError``, ``ValueError``, ``TimeoutError``...), so
``except ValueError`` keeps working around motoko calls.

Failed *work* (runs that ended FAILED) is not a user error: it is reported by
:class:`RunsFailed`, which the CLI maps to exit code 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def suggest(name: str, possible: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` close matches of ``name`` among ``possible``.

    Used for every "unknown name" message so that typos get a "did you
    mean ...?" instead of a bare refusal.
    """
    return difflib.get_close_matches(str(name), [str(p) for p in possible], n=n, cutoff=0.6)


def did_you_mean(name: str, possible: Iterable[str]) -> str:
    """Return a hint sentence suggesting close matches, or listing what exists."""
    possible = sorted({str(p) for p in possible})
    close = suggest(name, possible)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if not possible:
        return "there is none defined"
    shown = ", ".join(possible[:12]) + (", ..." if len(possible) > 12 else "")
    return f"possible: {shown}"


class MotokoError(Exception):
    """Base of every error motoko raises on purpose.

    Attributes:
        message: What went wrong, in one sentence.
        where: The place it comes from (``bd.yaml:3``, ``column 7``...), or None.
        hint: How to fix it, or None.
        exit_code: The CLI's exit status for this error (2: user error).
    """

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    # KeyError's __str__ quotes its argument; keep our sentence readable.
    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ConfigError(MotokoError, ValueError):
    """A configuration file (motoko.yaml, bd.yaml) is invalid."""


class SchemaError(ConfigError):
    """A study's bd.yaml is invalid (unknown key or type, wrong value, missing file)."""


class ParameterError(MotokoError, ValueError):
    """A job or run parameter has the wrong type or an impossible value.

    Attributes:
        field: The parameter's name.
        value: The offending value.
    """

    def __init__(self, message: str, *, field: str | None = None, value: Any = None, **kw: Any):
        self.field = field
        self.value = value
        super().__init__(message, **kw)


class UnknownNameError(MotokoError, KeyError):
    """A name (field, study, state, step, command) that does not exist.

    Attributes:
        name: The unknown name.
        possible: The names that exist.
    """

    def __init__(self, kind: str, name: str, possible: Iterable[str], *, where: str | None = None):
        self.name = name
        self.possible = sorted({str(p) for p in possible})
        super().__init__(f"unknown {kind} {name!r}", where=where, hint=did_you_mean(name, self.possible))


class QueryError(MotokoError, ValueError):
    """A constraint string is malformed or names an unknown or ambiguous field.

    Attributes:
        text: The whole constraint string.
        column: 1-based column of the problem, or None.
    """

    def __init__(self, message: str, *, text: str = "", column: int | None = None, hint: str | None = None):
        self.text = text
        self.column = column
        where = f"constraint {text!r}" + (f", column {column}" if column is not None else "")
        super().__init__(message, where=where, hint=hint)


class DatabaseError(MotokoError, RuntimeError):
    """The study database is missing, of another schema version, or inconsistent."""


class StudyNotFound(UnknownNameError):
    """A study that is not in the database or the workflow."""

    def __init__(self, name: str, possible: Iterable[str], *, where: str | None = None):
        super().__init__("study", name, possible, where=where)
        self.hint = (self.hint or "") + "; run `motoko create` after adding it to motoko.yaml"
        self.args = (str(self),)


class RunNotFound(MotokoError, KeyError):
    """A run id that does not exist in a study.

    Attributes:
        study: The study searched.
        ids: The missing run ids.
    """

    def __init__(self, study: str, ids: Iterable[int], *, hint: str | None = None):
        self.study = study
        self.ids = sorted(ids)
        shown = ", ".join(str(i) for i in self.ids[:10]) + (", ..." if len(self.ids) > 10 else "")
        super().__init__(
            f"no run with id {shown} in study {study!r}",
            hint=hint or "list existing runs with `motoko runs list --study " + study + "`",
        )


class ServerError(MotokoError, ConnectionError):
    """The ZEO server cannot be started, reached or stopped."""


class AddressError(ConfigError):
    """A malformed database address (expected ``zeo://PATH`` or ``zeo://HOST:PORT``)."""


class ConflictRetriesExhausted(MotokoError, RuntimeError):
    """A change kept conflicting with other processes' changes and was given up.

    The change was not written; nothing half-done remains.
    """

    exit_code = 1


class TransitionError(MotokoError, ValueError):
    """A run state change that the life cycle does not allow (e.g. FINISHED → RUNNING)."""


class StagingError(MotokoError, ValueError):
    """A run directory cannot be prepared safely (unsafe value or path)."""


class NotInRunError(MotokoError, RuntimeError):
    """``current_run()`` was called outside a run launched by motoko."""


class RunSuperseded(MotokoError, RuntimeError):
    """A run process writes to its run after the run moved on to another attempt.

    Happens to a process that kept running after its launcher died: the run
    was declared LOST and requeued, and a new attempt owns it now. The stale
    process's changes are dropped so that they never mix with the new
    attempt's results; it should stop.
    """


class WorkflowError(MotokoError, ValueError):
    """A workflow file or step graph is invalid (cycle, unknown dependency...)."""


class WaitTimeout(MotokoError, TimeoutError):
    """Waiting for runs took longer than the timeout given.

    Attributes:
        pending: ``(study, run id, state)`` of each run not yet done.
    """

    exit_code = 1

    def __init__(self, timeout: float, pending: list[tuple[str, int, str]], unserved: str | None = None):
        self.timeout = timeout
        self.pending = pending
        shown = ", ".join(f"{s}.{i} ({st})" for s, i, st in pending[:10])
        more = f" and {len(pending) - 10} more" if len(pending) > 10 else ""
        super().__init__(
            f"{len(pending)} run(s) not done after {timeout:g} s: {shown}{more}",
            # unserved: "3 runs waiting, no launcher alive: `motoko launcher start`"
            hint=unserved or "wait longer, or inspect them with `motoko runs show ID`",
        )


class RunsFailed(MotokoError, RuntimeError):
    """Runs a workflow waited for ended FAILED, LOST or CANCELLED.

    Attributes:
        failures: ``(study, run id, state, exit code, error text)`` per failed run.
    """

    exit_code = 1

    def __init__(self, failures: list[tuple[str, int, str, int | None, str | None]]):
        self.failures = failures
        parts = []
        for study, rid, state, code, err in failures[:5]:
            text = f"{study}.{rid} {state}"
            if code is not None:
                text += f" (exit code {code})"
            if err:
                last = err.strip().splitlines()[-1] if err.strip() else ""
                text += f": {last[:200]}"
            parts.append(text)
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        first = f"{failures[0][0]}.{failures[0][1]}" if failures else "ID"
        super().__init__(
            f"{len(failures)} run{'' if len(failures) == 1 else 's'} failed: " + "; ".join(parts) + more,
            hint=f"see the run's stderr with `motoko runs tail {first} --file stderr`",
        )


class WorkflowAborted(WorkflowError):
    """An error handler fired: the workflow ends with an error."""

    exit_code = 1


# -- run handles and waiting -----------------------------------------------------------


class HandleError(MotokoError, ValueError):
    """A run handle used in a way that cannot work.

    ``rl.run`` on a RunList of several runs, or ``RunList.open`` on a file
    that is not a saved RunList.
    """


class EventLoopError(MotokoError, RuntimeError):
    """A blocking call (``rl.result()``, ``for ... in rl.as_completed()``) on motoko's own event loop.

    That is inside a workflow step, an event action or a launcher: blocking
    there would freeze every other coroutine of the loop, including the ones
    the wait depends on; the message names the ``await`` form. Under any
    other running loop (a notebook kernel) the call blocks instead.

    Attributes:
        call: The blocking call that was refused.
        instead: What to write instead.
    """

    def __init__(self, call: str, instead: str):
        self.call = call
        self.instead = instead
        super().__init__(f"{call} cannot block inside a running event loop", hint=f"use `{instead}` in async code")


# -- views: plots, export and import, graphs, scaffolding ------------------------------


class PlotError(MotokoError, ValueError):
    """A plot cannot be drawn as asked (no run has the quantity, unknown x field)."""


class DumpError(MotokoError, ValueError):
    """A file given to ``motoko import`` is not a motoko export (or of another version)."""


class ImportConflict(MotokoError, ValueError):
    """An import would overwrite a job or run that holds different data.

    Attributes:
        study: The study imported into.
        ids: The run (or job) ids in the way.
    """

    def __init__(self, message: str, *, study: str, ids: Sequence[int], hint: str):
        self.study = study
        self.ids = list(ids)
        super().__init__(message, hint=hint)


class ExportError(MotokoError, ValueError):
    """Runs cannot be exported as asked (unknown quantity, missing library...)."""


class GraphRenderError(MotokoError, RuntimeError):
    """A graph could not be drawn (graphviz failed, nothing to draw)."""


class ScaffoldError(MotokoError, FileExistsError):
    """``motoko init`` would overwrite files that differ from what it writes.

    Attributes:
        paths: The files in the way.
    """

    def __init__(self, paths: list[Path], directory: Path):
        self.paths = paths
        shown = ", ".join(str(p.relative_to(directory)) for p in paths[:5]) + (", ..." if len(paths) > 5 else "")
        super().__init__(
            f"{directory} already has files that `motoko init` would overwrite: {shown}",
            hint="choose a new directory, or move these files away",
        )


# -- run directories and executors -----------------------------------------------------


class RunFileNotFound(MotokoError, FileNotFoundError):
    """A run's directory or one of its files does not exist (yet, or on this host).

    Attributes:
        run: ``"study.id"`` of the run.
        name: The file asked for, or None for the directory itself.
    """

    def __init__(self, run: str, name: str | None, message: str, *, hint: str | None = None):
        self.run = run
        self.name = name
        super().__init__(message, hint=hint)


class SlurmError(MotokoError, RuntimeError):
    """A SLURM command failed (sbatch refused a job, squeue cannot reach the controller).

    Attributes:
        command: The command that failed.
        stderr: What it printed on stderr.
    """

    def __init__(self, command: Sequence[str], stderr: str, *, hint: str | None = None):
        self.command = list(command)
        self.stderr = stderr.strip()
        detail = self.stderr.splitlines()[-1] if self.stderr else "no message"
        super().__init__(
            f"{command[0]} failed: {detail}",
            hint=hint or "check the sbatch options (slurm_options in motoko.yaml or bd.yaml) and `sinfo`",
        )


class DaskError(MotokoError, ConnectionError):
    """The Dask scheduler cannot be reached, or the local cluster cannot start."""


# -- staging ---------------------------------------------------------------------------


def _short(value: Any, limit: int = 60) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, so huge values keep messages short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


class UnsafeValueError(StagingError):
    """A value that cannot be placed at a marker without changing the file's meaning.

    Attributes:
        field: The marker's name (a job or run field).
        value: The offending value.
        source: The file being staged.
        line: 1-based line of the marker.
    """

    def __init__(self, field: str, value: Any, source: str, line: int, why: str, hint: str):
        self.field = field
        self.value = value
        self.source = source
        self.line = line
        self.why = why
        super().__init__(
            f"value {_short(value)} of {field!r} {why}", where=f"{source}:{line}", hint=hint
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error intact across processes (executors may pickle it).
        args = (self.field, self.value, self.source, self.line, self.why, self.hint or "")
        return (type(self), args)


class ChannelError(MotokoError, ConnectionError):
    """A run and its launcher cannot talk over the run channel.

    Raised in the run when the launcher refuses it (another process already
    speaks for the same run, or the launcher does not execute that run), and
    logged by the launcher when a run sends what it cannot read.
    """


class RunWriteRefused(MotokoError, ValueError):
    """A run wrote something that cannot be stored.

    Raised at the call when the run side can tell (a value JSON cannot carry,
    a run field's declared type, a progress outside 0–1), and reported by the
    launcher when the database refuses it on commit (an impossible state
    change): then at the next ``run.commit()`` or on stderr at exit.
    """


class OutdatedRunsError(MotokoError, RuntimeError):
    """A resumed workflow would reuse finished runs whose study files changed since.

    Attributes:
        files: The changed files.
        count: How many runs are outdated (with their descendants).
    """

    def __init__(self, summary: str, files: Sequence[str], count: int):
        self.files = list(files)
        self.count = count
        super().__init__(
            summary,
            hint="give --rerun-outdated to run them again, --keep-outdated to reuse them, "
            "or set `resume: {outdated: rerun}` in motoko.yaml",
        )


class RerunUndoError(MotokoError, RuntimeError):
    """``motoko rerun --undo`` cannot restore the previous results (none recorded, or too late)."""


class FieldTypeChanged(SchemaError):
    """bd.yaml gives a field another type than the one its study's stored values have.

    Changing the stored schema would hide the old runs from selections and
    break the next createTask, so it is refused until the user migrates.

    Attributes:
        study: The study's name.
        field: The field whose type changed.
        stored: The type the database holds values of.
        new: The type bd.yaml now says.
    """

    def __init__(self, study: str, section: str, field: str, stored: str, new: str, *, where: str | None = None):
        self.study = study
        self.field = field
        self.stored = stored
        self.new = new
        super().__init__(
            f"{section} field {field!r} of study {study!r} changed type from {stored} (stored) to {new}",
            where=where,
            hint=f"keep `{field}: {stored}` in bd.yaml, or start a fresh study: rename `study:` in bd.yaml, "
            "or drop the study's runs with `motoko create --yes`",
        )


class UnknownAttributeError(MotokoError, AttributeError):
    """An attribute of the workflow or a job that does not exist (``workflow.slo``).

    Also an ``AttributeError``, so ``hasattr`` and ``getattr(obj, name, default)``
    keep working; a MotokoError, so ``motoko run`` reports it from workflow
    code as one line naming the file and line, with a did-you-mean.

    Attributes:
        name: The unknown attribute.
    """

    def __init__(self, message: str, name: str, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.name = name  # after: AttributeError's __init__ resets it


class CleanRefused(MotokoError, ValueError):
    """``motoko clean`` would delete a directory that is not this project's run directory.

    Attributes:
        study: The run's study.
        run_id: The run whose ``run_path`` points there.
        path: The directory.
        count: How many matching runs have such a directory.
    """

    def __init__(self, study: str, run_id: int, path: Path, why: str, count: int):
        self.study = study
        self.run_id = run_id
        self.path = path
        self.count = count
        more = f" ({count - 1} more run(s) like it)" if count > 1 else ""
        super().__init__(
            f"refusing to delete {path} of run {study}.{run_id}: {why}{more}",
            hint="it may belong to another project (motoko import); add --keep-outside "
            "to delete only the run records and leave such directories alone",
        )


class RunNameMissing(MotokoError, RuntimeError):
    """createTask without a run name (a motoko 0.1.4 orchestrator that set ``run_name = None``)."""

    def __init__(self, study: str):
        self.study = study
        super().__init__(
            f"cannot create a task in {study!r}: the workflow's run_name is not set",
            hint="set workflow.run_name = 'NAME' (or pass run_name= to Workflow) before createTask",
        )

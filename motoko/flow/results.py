"""A RunList's results as values, and its summary (ChemCloud's and Inductiva's verbs).

``rl.outputs()`` gives each run's output (what it passed to
``run.set_output``) in task order, with a :class:`RunFailure` standing in
for a run that failed, was lost or cancelled, the way ChemCloud's
``FutureOutput.get()`` returns a ``ProgramFailure`` in place of a result;
``rl.result(values=True)`` first waits until every run has ended.
``rl.summary()`` / ``rl.print_summary()`` describe the task in a few lines,
like Inductiva's ``Task.summary()``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from motoko.errors import ParameterError
from motoko.flow.session import Session
from motoko.flow.waiting import AsCompleted, blocking, is_done, is_ended, progress_of
from motoko.study.records import Run


@dataclass(frozen=True)
class RunFailure:
    """Stands in for the output of a run that ended without finishing (falsy).

    Attributes:
        study: The run's study.
        id: The run's id.
        state: FAILED, LOST or CANCELLED.
        exit_code: Its exit status, if it had one.
        error: Why it failed (the end of its stderr for a failed process).
    """

    study: str
    id: int
    state: str
    exit_code: int | None
    error: str | None

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        return f"{self.study}.{self.id} {self.state}{code}: {self.error or 'no error recorded'}"


def value_of(run: Run) -> Any:
    """The run's output dict when it finished, a :class:`RunFailure` when it failed, else None."""
    if is_done(run):
        return dict(run.output or {})
    if is_ended(run):
        return RunFailure(run.study, run.id, run.state, run.exit_code, run.error)
    return None


def check_interval(initial_interval: Any) -> None:
    """Accept ChemCloud's ``initial_interval`` (seconds), refusing what is not a duration.

    motoko wakes on commits, so no interval is needed; the value only has
    to make sense.

    Raises:
        ParameterError: for a negative number or a non-number.
    """
    if initial_interval is None:
        return
    if isinstance(initial_interval, bool) or not isinstance(initial_interval, int | float) or initial_interval < 0:
        raise ParameterError(
            f"initial_interval must be a number of seconds >= 0, got {initial_interval!r}",
            field="initial_interval",
            value=initial_interval,
            hint="it is accepted for ChemCloud compatibility; motoko wakes on commits and needs none",
        )


class RunListResults:
    """Values and summaries of a :class:`~motoko.flow.futures.RunList` (a mixin)."""

    workflow: Session
    study: str
    ids: list[int]

    def _fresh(self) -> list[Run]:  # provided by RunList
        raise NotImplementedError

    def as_completed(self, timeout: float | None = None) -> AsCompleted:  # provided by RunList
        raise NotImplementedError

    def outputs(self) -> list[Any]:
        """Each run's output now, in task order: a dict, a :class:`RunFailure`, or None if not ended.

        Does not wait; ``rl.result(values=True)`` waits first.
        """
        return [value_of(run) for run in self._fresh()]

    async def values(self, timeout: float | None = None) -> list[Any]:
        """Wait until every run has ended, then return :meth:`outputs` (async).

        Raises:
            WaitTimeout: when runs are still going after ``timeout`` seconds.
        """
        async for _ in self.as_completed(timeout):
            pass
        return self.outputs()

    def _result_values(self, timeout: float | None) -> list[Any]:
        return blocking("rl.result(values=True)", "await rl.values()", lambda: self.values(timeout))

    def summary(self) -> str:
        """A few lines: the study, run name, counts, and one line per run (state, time, error)."""
        runs = self._fresh()
        lines = [f"{self.study} ({self.workflow.run_name}): {progress_of(runs)}"]
        for run in runs[:50]:
            seconds = run.computation_time
            took = f" {seconds:.1f} s" if seconds is not None else ""
            where = f" on {run.machine_name}" if run.machine_name else ""
            error = f": {str(run.error).splitlines()[0]}" if run.error else ""
            lines.append(f"  {run.study}.{run.id} {run.state}{took}{where}{error}")
        if len(runs) > 50:
            lines.append(f"  ... and {len(runs) - 50} more")
        return "\n".join(lines)

    def print_summary(self, file: TextIO | None = None) -> None:
        """Print :meth:`summary` (to stdout by default): asked for explicitly, so it prints."""
        print(self.summary(), file=file or sys.stdout)

    def default_save_path(self) -> Path:
        """Where ``rl.save()`` writes without a path: ``./STUDY-FIRST-LAST.runlist.json``."""
        span = f"{self.ids[0]}-{self.ids[-1]}" if self.ids else "empty"
        return Path.cwd() / f"{self.study}-{span}.runlist.json"

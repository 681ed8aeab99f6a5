"""The small interface every executor (local, SLURM, Dask) implements.

A launcher hands an executor *staged* runs (a directory, a command, an
environment) and later collects their *outcomes*. Executors know nothing of
the database, workflows or states: turning an outcome into FINISHED, FAILED,
CANCELLED or LOST is the launcher's job, in one place.

All methods are coroutines run on the launcher's event loop; an executor that
talks to a blocking API (sbatch, Dask's client) runs that in a thread.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from motoko.study.run_files import last_lines

#: Lines of stderr kept in ``run.error`` when a run fails.
STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Launch:
    """Everything needed to execute one staged run.

    Attributes:
        study: The study's name.
        run_id: The run's id.
        run_dir: The staged run directory (the working directory).
        command: The argv to execute in ``run_dir``.
        env: The complete environment of the run.
        nproc: Cores the run asked for.
        options: Scheduler options (sbatch flags), per study and per run.
        attempt: The run's attempt number: files an executor leaves in the
            run directory (scripts, exit statuses) carry it, so that a
            stale task of an earlier attempt is never taken for this one.
    """

    study: str
    run_id: int
    run_dir: Path
    command: tuple[str, ...]
    env: dict[str, str]
    nproc: int = 1
    options: tuple[str, ...] = ()
    attempt: int = 1
    #: Writes the run directory, when the executor does it before starting the
    #: process (:attr:`Executor.stages`), and says whether it created it
    #: (nothing of an earlier attempt is in it then); None: it is written already.
    stage: Callable[[], bool] | None = field(default=None, compare=False)
    #: The part of ``env`` that all of a launcher's runs share, the very
    #: objects: an executor may send it once and each run only what differs
    #: (the run host does). None: no such part is known.
    env_base: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """(study, run id): how launcher and executor name a run."""
        return (self.study, self.run_id)


@dataclass
class Outcome:
    """How an execution ended.

    Attributes:
        study: The study's name.
        run_id: The run's id.
        exit_code: The process exit status, or None if it did not exit normally.
        signal: The signal that killed it, if any.
        cancelled: True when motoko cancelled it on request.
        lost: True when the executor lost track of it (node died, job vanished).
        reason: Human-readable explanation for failures and losses.
        stderr_tail: The last lines of the run's stderr.
        ended: When the execution was found ended (``time.monotonic()``):
            how long runs take is learned from it (see :mod:`motoko.launch.pacing`).
    """

    study: str
    run_id: int
    exit_code: int | None = None
    signal: int | None = None
    cancelled: bool = False
    lost: bool = False
    reason: str | None = None
    stderr_tail: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    ended: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        """(study, run id)."""
        return (self.study, self.run_id)

    @property
    def succeeded(self) -> bool:
        """True for a normal exit with status 0."""
        return self.exit_code == 0 and not self.cancelled and not self.lost

    @property
    def killed_by(self) -> int | None:
        """The signal that ended it: its own, or a shell's (exit status 128 + N); None otherwise."""
        if self.signal is not None:
            return self.signal
        code = self.exit_code
        return code - 128 if code is not None and code > 128 else None

    def describe(self) -> str:
        """One line saying why the run did not succeed."""
        if self.reason:
            return self.reason
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        killed = self.killed_by
        if killed is not None:
            with contextlib.suppress(ValueError):
                return f"exit code {self.exit_code} (a process was killed by {signal.Signals(killed).name})"
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class Orphan:
    """A run whose launcher stopped heart-beating, as the launcher that found it sees it.

    Attributes:
        study: The study's name.
        run_id: The run's id.
        attempt: The attempt its silent launcher was executing.
        run_dir: The run's directory (where attempt files are).
        launcher: The silent launcher's id (its runs carry it in ``MOTOKO_LAUNCHER``).
        machine: The host the silent launcher ran on.
        executor_id: What that launcher recorded of it (a pid, a SLURM id, a Dask key).
    """

    study: str
    run_id: int
    attempt: int
    run_dir: Path
    launcher: str
    machine: str | None = None
    executor_id: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        """(study, run id)."""
        return (self.study, self.run_id)


@dataclass(frozen=True)
class Verdict:
    """What an executor found of an orphan.

    Attributes:
        adopt: True when the run's execution still exists or left its exit
            status: :meth:`Executor.adopt` then watches it to its end.
        reason: What was found, in words (kept in the run's error when it is LOST).
        never_ran: True when the attempt provably never executed (it never
            reached the engine, and is now closed to late tasks): the run is
            then put back in the queue whatever its retries allow.
    """

    adopt: bool
    reason: str
    never_ran: bool = False


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a file ('' if it does not exist)."""
    try:
        return "\n".join(last_lines(path, lines)[0])
    except OSError:
        return ""


class Executor(abc.ABC):
    """Executes staged runs and reports their outcomes.

    Subclasses set :attr:`name` and implement the abstract coroutines. The
    launcher calls :meth:`submit` only while :meth:`free_slots` is positive,
    collects outcomes from :attr:`outcomes`, and calls :meth:`cancel` for runs
    whose cancellation was requested.
    """

    name = "executor"
    #: False: a submitted run is executing at once. True: the engine may
    #: queue it first (a batch scheduler), and the executor calls
    #: :meth:`report_started` when it really starts, so that the run stays
    #: LAUNCHED, not RUNNING, while it waits in the queue.
    reports_start = False
    #: True: the executor writes a run's directory (``Launch.stage``) in the
    #: thread that starts its process, so that the launcher's loop does not
    #: wait on the file system.
    stages = False
    #: True when runs execute on the launcher's own host, so that they can
    #: reach its run channel (a unix socket) instead of the database.
    shares_host = False

    def __init__(self, max_parallel: int):
        self.max_parallel = max(1, int(max_parallel))
        self.outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self.running: dict[tuple[str, int], str] = {}
        #: Runs that started since the launcher last looked (see :attr:`reports_start`).
        self.started: list[tuple[str, int]] = []
        #: Engine ids given to runs since the launcher last looked (see :meth:`report_submitted`).
        self.submitted: list[tuple[tuple[str, int], str]] = []
        #: Set by the launcher: an event to set whenever an outcome is queued.
        self.wake: asyncio.Event | None = None
        #: What the engine says that the user should know (sbatch refusing jobs for now);
        #: the launcher shows it on its record, for ``motoko status``.
        self.note: str | None = None

    def report(self, outcome: Outcome) -> None:
        """Queue an outcome and wake the launcher."""
        self.running.pop(outcome.key, None)
        self.outcomes.put_nowait(outcome)
        if self.wake is not None:
            self.wake.set()

    def report_started(self, key: tuple[str, int]) -> None:
        """Say that a submitted run left the engine's queue and executes now."""
        self.started.append(key)
        if self.wake is not None:
            self.wake.set()

    def free_slots(self) -> int:
        """How many more runs may be submitted now."""
        return self.max_parallel - len(self.running)

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Prepare resources (connect to a scheduler...). Default: nothing."""

    def stage_ahead(self, launch: Launch) -> Launch:
        """Begin writing the run directory of a run that will be submitted soon; return the launch to submit.

        Default: nothing ahead (the directory is written when submitted).
        """
        return launch

    @abc.abstractmethod
    async def submit(self, launch: Launch) -> str:
        """Start executing ``launch``; return an executor-specific id (pid, job id)."""

    @abc.abstractmethod
    async def cancel(self, key: tuple[str, int], grace: float) -> None:
        """Stop a submitted run: TERM (or scheduler equivalent), KILL after ``grace``.

        Its outcome, with ``cancelled=True``, still arrives on :attr:`outcomes`.
        """

    def report_submitted(self, key: tuple[str, int], ident: str) -> None:
        """Say what the engine calls a run now (a job id): recorded on the run soon, for adoption."""
        self.submitted.append((key, ident))
        if self.wake is not None:
            self.wake.set()

    async def inspect(self, orphan: Orphan) -> Verdict:
        """Find out what became of a run whose launcher died (see :mod:`motoko.launch.adoption`).

        Default: nothing can be known, the run is LOST. An executor that can
        find its runs again overrides this and :meth:`adopt`.
        """
        return Verdict(False, f"the {self.name} executor cannot find runs of other launchers")

    def adopt(self, orphan: Orphan) -> None:
        """Watch an orphan that :meth:`inspect` found: its outcome arrives on :attr:`outcomes`."""
        raise NotImplementedError(f"the {self.name} executor cannot adopt runs")

    async def reconcile(self) -> None:  # noqa: B027 (optional hook)
        """Compare what is believed running with the engine's view (schedulers)."""

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources; running runs are left to the launcher's drain."""

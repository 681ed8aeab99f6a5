"""Inside a run: ``current_run()`` and the run-side API.

A run's own code (``doIt.py``) finds its run through the environment the
launcher gave it::

    from motoko import current_run
    run, job = current_run()
    run.y = [2.0 * job.x]
    run.push_quantity(0.5, step=0, name="energy")

Two paths lead to the run:

* **The run channel** (``MOTOKO_CHANNEL`` set, the usual case under a local
  launcher): the run talks to its launcher over a private unix socket and
  never opens the database; see :mod:`motoko.launch.run_side`.
* **The database** (no channel: ``doIt.py`` started by hand with
  ``MOTOKO_DB``, a SLURM array task on another node, or a channel that cannot
  be reached): the returned ``run`` is a :class:`RunHandle` that reads like the
  stored run and writes through to it, committing at every API call
  (``push_quantity``, ``set_progress``, ``finish``...) and at process exit.
  Each change is kept in a journal until committed, so that a conflict with
  another writer (the launcher marking the run RUNNING, a workflow tagging
  it) is retried by replaying the change on fresh data instead of being lost.

Either way every write is fenced by the attempt the launcher started
(``MOTOKO_ATTEMPT``): a process that outlived its launcher, whose run was
meanwhile declared LOST and requeued, cannot write into the new attempt. Its
changes are dropped with :class:`~motoko.errors.RunSuperseded` and
``should_stop()`` turns True.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from motoko.errors import ChannelError, ConflictRetriesExhausted, NotInRunError, RunSuperseded
from motoko.launch.messages import ENV_CHANNEL, apply_write
from motoko.launch.run_side import ChannelJob, ChannelRun, LauncherLink, connect

if TYPE_CHECKING:
    from motoko.study.database import StudyDB
    from motoko.study.records import Job, Run

_ENV = ("MOTOKO_DB", "MOTOKO_STUDY", "MOTOKO_RUN_ID")
_session: RunSession | None = None
_channel: tuple[ChannelRun, ChannelJob] | None = None

Change = Callable[["Run"], None]


class RunSession:
    """The run process's connection to its own run, with a replayable journal."""

    def __init__(self, db: StudyDB, study: str, run_id: int, attempt: int | None = None):
        self.db = db
        self.study = study
        self.run_id = run_id
        self.attempt = attempt if attempt is not None else self.run.attempt
        self.journal: list[Change] = []
        atexit.register(self.close)

    @property
    def superseded(self) -> bool:
        """True once the run moved on to another attempt than this process's."""
        return bool(self.run.attempt != self.attempt)

    def _check_attempt(self) -> None:
        if self.superseded:
            raise RunSuperseded(
                f"run {self.study}.{self.run_id} is now attempt {self.run.attempt}, "
                f"this process ran attempt {self.attempt}: its changes are not saved",
                hint="the run was requeued after its launcher stopped heart-beating; stop this process",
            )

    @property
    def run(self) -> Run:
        """The stored run (re-read after every transaction)."""
        return self.db.run(self.study, self.run_id)

    def apply(self, change: Change, *, commit: bool = True) -> None:
        """Apply a change now and remember it until it is committed."""
        with self.db.journal.paused():  # this session replays its own journal
            change(self.run)
        self.journal.append(change)
        if commit:
            self.commit()

    def commit(self) -> None:
        """Commit the journal, replaying it on fresh data after conflicts."""
        if not self.journal:
            return
        journal = list(self.journal)
        first = [True]

        def replay() -> None:
            if first[0]:
                first[0] = False  # already applied to the current objects
            else:
                run = self.run
                for change in journal:
                    change(run)
            # Checked in the transaction: a requeue committed meanwhile makes
            # it conflict on ``attempt`` or shows here on the retry.
            self._check_attempt()

        try:
            self.db.transact(replay, what=f"save run {self.study}.{self.run_id}")
        finally:
            self.journal.clear()

    def refresh(self) -> None:
        """Commit pending changes, then see others' (e.g. a stop request)."""
        self.commit()
        self.db.abort()

    def close(self) -> None:
        """Commit what is pending (called at exit)."""
        try:
            self.commit()
        except ConflictRetriesExhausted:
            pass
        except RunSuperseded as exc:
            print(f"motoko: {exc}", file=sys.stderr)
        finally:
            atexit.unregister(self.close)


class RunHandle:
    """The run as its own process sees it: reads through, writes journalled.

    Attribute reads return the stored run's values; attribute writes
    (``run.y = ...``) and API calls are recorded and committed (API calls
    immediately, plain attributes at the next API call or at exit).
    """

    __slots__ = ("_session",)

    def __init__(self, session: RunSession):
        object.__setattr__(self, "_session", session)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._session.run, name)
        if callable(value) and name in _API:
            return _API[name](self._session)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        self._session.apply(lambda run: setattr(run, name, value), commit=False)

    def __getitem__(self, name: str) -> Any:
        return self._session.run[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.__setattr__(name, value)

    def __repr__(self) -> str:
        return repr(self._session.run)

    def commit(self) -> None:
        """Commit pending attribute changes now."""
        self._session.commit()

    def start(self) -> None:
        """Mark the run RUNNING (the launcher also does it when it starts the run)."""
        from motoko.study.states import LAUNCHED, RUNNING

        def change(run: Run) -> None:
            if run.state == LAUNCHED:
                run.state = RUNNING

        self._session.apply(change)

    def finish(self) -> None:
        """Mark the run FINISHED now (exit status 0 would do it too)."""
        self._session.apply(lambda run: setattr(run, "state", "FINISHED"))

    def fail(self, message: str = "failed") -> None:
        """Mark the run FAILED with ``message`` as its error."""

        def change(run: Run) -> None:
            run.error = str(message)
            run.state = "FAILED"

        self._session.apply(change)

    def should_stop(self) -> bool:
        """True once a cancel was requested: stop cleanly and soon."""
        session = self._session
        session.refresh()
        return bool(session.run.stop_requested) or session.superseded

    def request_stop(self) -> None:
        """Ask for this run to be stopped, as a cancel would (Numerous's ``request_stop``).

        Commits at once: ``should_stop()`` turns True, and the launcher gives
        the run ``cancel_grace`` seconds to end on its own before it signals
        it, then settles it CANCELLED. Idempotent.
        """
        self._session.apply(lambda run: setattr(run, "stop_requested", True))


def _journalled(method: str) -> Callable[[RunSession], Callable[..., Any]]:
    def bind(session: RunSession) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> None:
            session.apply(lambda run: getattr(run, method)(*args, **kwargs))

        return call

    return bind


def _read(method: str) -> Callable[[RunSession], Callable[..., Any]]:
    def bind(session: RunSession) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            session.commit()
            return getattr(session.run, method)(*args, **kwargs)

        return call

    return bind


_WRITE_METHODS = (
    "push_quantity", "pushScalarQuantity", "pushVectorQuantity", "pushQuantity",
    "set_progress", "set_status", "set_output", "set_metadata", "requeue", "store_file",
)
_READ_METHODS = ("get_quantity", "getQuantity", "list_quantities", "getQuantities", "get_metadata", "fields", "get")
_API: dict[str, Callable[[RunSession], Callable[..., Any]]] = {
    **{name: _journalled(name) for name in _WRITE_METHODS},
    **{name: _read(name) for name in _READ_METHODS},
}


def current_run() -> tuple[RunHandle | ChannelRun, Job | ChannelJob]:
    """Return ``(run, job)`` for the run this process executes.

    The run is found through the environment its launcher set: its channel
    (``MOTOKO_CHANNEL``) when there is one, else the database (``MOTOKO_DB``,
    ``MOTOKO_STUDY``, ``MOTOKO_RUN_ID``). Calling it again returns the same run.

    Raises:
        NotInRunError: outside a run launched by motoko, saying how runs are found.
        ChannelError: the launcher refused this process (another one already
            speaks for the run).
    """
    global _channel
    if _channel is not None:
        return _channel
    study, run_id, attempt = _identity()
    path = os.environ.get(ENV_CHANNEL)
    if path and _session is None:
        try:
            _channel = connect(path, study, run_id, attempt, stored_run, save_directly)
            return _channel
        except ChannelError:
            raise  # the launcher answered, and refused: say why
        except OSError:
            pass  # no launcher listens there any more: the database still works
    return _direct(study, run_id, attempt)


def _identity() -> tuple[str, int, int | None]:
    """(study, run id, attempt) from the environment, or a NotInRunError saying what is missing."""
    wanted = ("MOTOKO_STUDY", "MOTOKO_RUN_ID") if os.environ.get(ENV_CHANNEL) else _ENV
    missing = [name for name in wanted if not os.environ.get(name)]
    if missing:
        raise NotInRunError(
            "current_run() is only available inside a run launched by motoko "
            f"({', '.join(missing)} not set)",
            hint="runs find themselves through MOTOKO_DB, MOTOKO_STUDY and MOTOKO_RUN_ID, "
            "which launchers set; to inspect runs from elsewhere use Workflow(...).STUDY.select(...)",
        )
    try:
        run_id = int(os.environ["MOTOKO_RUN_ID"])
    except ValueError:
        raise NotInRunError(f"MOTOKO_RUN_ID is not a run id: {os.environ['MOTOKO_RUN_ID']!r}") from None
    attempt = os.environ.get("MOTOKO_ATTEMPT")
    return os.environ["MOTOKO_STUDY"], run_id, int(attempt) if attempt and attempt.isdigit() else None


def _direct(study: str, run_id: int, attempt: int | None) -> tuple[RunHandle, Job]:
    """The database path: this process becomes a client of the run's database."""
    global _session
    if _session is None:
        if not os.environ.get("MOTOKO_DB"):
            raise NotInRunError(
                "the run's launcher channel cannot be reached and MOTOKO_DB is not set",
                hint="start runs through a launcher, or set MOTOKO_DB to the database address",
            )
        from motoko.study.database import StudyDB

        db = StudyDB(os.environ["MOTOKO_DB"], cache_size=10_000)
        _session = RunSession(db, study, run_id, attempt)
    session = _session
    return RunHandle(session), session.run.job


def stored_run(name: str) -> Run:
    """The stored run ``study.id``, read through a database connection of this process.

    The channel path reads quantities this way (after committing), the only
    reads a run cannot answer from what its launcher handed over.
    """
    study, _, rid = name.rpartition(".")
    handle, _ = _direct(study, int(rid), None)
    assert isinstance(handle, RunHandle)
    session = handle._session
    session.refresh()
    return session.run


def save_directly(link: LauncherLink) -> None:
    """Save the writes a run's launcher never committed, through this process's own connection.

    Called at exit when the launcher went away (killed, its node lost): the
    writes are applied as the launcher would have (:func:`apply_write`), in
    one transaction fenced by the run's attempt, so a run adopted by another
    launcher keeps its results and a superseded attempt still writes nothing.

    Raises:
        RunSuperseded: the run moved on to another attempt meanwhile.
        NotInRunError: there is no database address (``MOTOKO_DB``) to save to.
    """
    study, _, rid = link.name.rpartition(".")
    handle, _ = _direct(study, int(rid), link.attempt)
    session = handle._session
    types = dict(link.welcome.get("fields") or {})
    for message in list(link.unconfirmed):
        session.apply(lambda run, message=message: apply_write(run, message, types), commit=False)
    session.commit()


def getRunFromScript() -> tuple[RunHandle | ChannelRun, Job | ChannelJob]:  # noqa: N802
    """motoko 0.1.4 / BlackDynamite spelling of :func:`current_run`."""
    return current_run()

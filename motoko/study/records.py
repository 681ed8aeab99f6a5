"""Persistent jobs and runs, run states and the one place states change.

A :class:`Job` is one point of a study's parameter space; a :class:`Run` is one
execution of a job. Both live in the study database. A run's state only changes
through :meth:`Study.transition <motoko.study.database.Study.transition>`
(assigning ``run.state`` calls it), which checks the life cycle and keeps the
state index exact.

Concurrent writers (a launcher heart-beating, the run's own process writing a
quantity, the workflow tagging it) would conflict constantly if every write to
the same run were a conflict. :meth:`Run._p_resolveConflict` therefore merges
changes to *different* attributes on the server (see
:mod:`motoko.study.run_merge`); two writers changing the same attribute still
conflict, and the state, the launcher claim and the attempt counter always
conflict when both sides touched any of them, which is what makes a claim
(CREATED → LAUNCHED) and an adoption exactly-once. A run's quantities are
:mod:`motoko.study.quantities`'.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import persistent

from motoko.errors import ParameterError
from motoko.study.blocking import refuse_in_loop
from motoko.study.columns import record as record_column
from motoko.study.display import run_html
from motoko.study.downloads import RunDownloads
from motoko.study.fields import BUILTIN_RUN_FIELDS
from motoko.study.job_fields import JobFields
from motoko.study.journal import (
    ABSENT,
    DELETE,
    REQUEUE,
    SET,
    STATE,
    commit_with_retries,
    journal_of,
)
from motoko.study.outdated_counts import TRACKED, key_before, recount

# Quantity is stored in databases written before it moved to quantities.py: their
# pickles name it motoko.study.records.Quantity, which must keep loading.
from motoko.study.quantities import Quantity, RunQuantities  # noqa: F401
from motoko.study.run_files import RunFiles
from motoko.study.run_merge import merge_run_changes
from motoko.study.states import (  # noqa: F401 (re-exported: the rules live in states.py)
    ACTIVE,
    CANCELLED,
    CREATED,
    FAILED,
    FAILURE,
    FINISHED,
    LAUNCHED,
    LOST,
    RUNNING,
    STATES,
    TERMINAL,
    TRANSITIONS,
)
from motoko.study.values import jsonable


def now() -> _dt.datetime:
    """Return the current time in UTC; every timestamp motoko stores is UTC."""
    return _dt.datetime.now(_dt.timezone.utc)


class Study(Protocol):
    """What a run needs of the study that holds it (:class:`motoko.study.container.Study`).

    A protocol, so that records need not import the container that imports them.
    """

    name: str
    jobs: Any
    columns: Any
    schema: Any  # its StudySchema (what a run's inputs are: motoko.study.downloads)

    def transition(self, run: Run, new: str, **fields: Any) -> None: ...
    def requeue(self, run: Run, reason: str = ...) -> None: ...
    def cancel(self, run: Run) -> bool: ...
    def ids_in_state(self, state: str) -> Any: ...


class Job(persistent.Persistent, JobFields):
    """One point of a study's parameter space.

    Job parameters are read as attributes (``job.x``) or items (``job['x']``)
    (see :class:`~motoko.study.job_fields.JobFields`); they are fixed once the
    job exists, because runs and dedupe depend on them.

    Attributes:
        id: Unique id within the study.
        params: The typed parameters.
    """

    def __init__(self, id: int, params: dict[str, Any]):
        self.id = id
        self.params = dict(params)


class Run(persistent.Persistent, RunDownloads, RunFiles, RunQuantities):
    """One execution of a job.

    Besides its fields (see :data:`motoko.study.fields.BUILTIN_RUN_FIELDS` and
    the study's ``run:`` fields), a run keeps any *free attribute* a workflow
    or the run itself sets (``run.y = [...]``), persisted with the run.

    Assigning ``run.state`` goes through the study's transition function,
    which refuses transitions the life cycle does not allow.
    """

    # Class-level defaults: old records and new fields read as None, and a
    # new run does not store what it has not set.
    job_id: int = 0
    run_name: str | None = None
    event_name: str | None = None
    machine_name: str | None = None
    launcher: str | None = None
    nproc: int = 1
    run_path: str | None = None
    exec: str | None = None
    created: _dt.datetime | None = None
    launched: _dt.datetime | None = None
    started: _dt.datetime | None = None
    finished: _dt.datetime | None = None
    heartbeat: _dt.datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    failure: str | None = None  # why the scheduler ended it (TIMEOUT, OUT_OF_MEMORY): what a retry rule fixes
    progress: float | None = None
    status: str | None = None
    attempt: int = 1
    history: tuple[dict[str, Any], ...] = ()
    parents: tuple[tuple[str, int], ...] = ()
    workflow: str | None = None
    output: dict[str, Any] | None = None
    stop_requested: bool = False
    executor_id: str | None = None
    # What the run was made from, whether it was knowingly reused although
    # outdated, and why it is to be run again when next asked for (see
    # motoko.study.fingerprint and motoko.flow.outdated).
    fingerprint: dict[str, Any] | None = None
    outdated_kept: str | None = None
    rerun_pending: str | None = None
    superseded: str | None = None
    _state: str = CREATED
    _key: str | None = None  # the study's dedupe key, to forget it on delete
    _metadata: dict[str, str] | None = None
    _study: Study | None = None

    def __init__(self, study: Study, id: int, job_id: int, fields: dict[str, Any]):
        self._study = study
        self.id = id
        self.job_id = job_id
        self.created = now()
        for name, value in fields.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in MOTOKO_ATTRIBUTES or name[0] == "_":
            if name in TRACKED:  # what makes a run outdated: its study's counts follow
                before = key_before(self._study, self)
                _persistent_setattr(self, name, value)
                recount(self._study, self, before)
                return
            _persistent_setattr(self, name, value)
            return
        before = self._before(name)
        _persistent_setattr(self, name, value)
        self._write_column(name, value)
        self._journal(SET, name, value, before)

    def __delattr__(self, name: str) -> None:
        if name in MOTOKO_ATTRIBUTES or name[0] == "_":
            before = key_before(self._study, self) if name in TRACKED else None
            super().__delattr__(name)
            if name in TRACKED:
                recount(self._study, self, before)
            return
        before = self._before(name)
        super().__delattr__(name)
        self._write_column(name, None)
        self._journal(DELETE, name, None, before)

    def _before(self, name: str) -> Any:
        """The value an attribute change replaces, if a journal will want it."""
        journal = journal_of(self)
        if journal is None or not journal.active:
            return None
        self._p_activate()
        return self.__dict__.get(name, ABSENT)

    def _journal(self, kind: str, name: str = "", value: Any = None, before: Any = None) -> None:
        """Remember a change made outside a transaction, to replay it after a conflict."""
        journal = journal_of(self)
        if journal is not None:
            journal.record(self, kind, name, value, before)

    def _write_column(self, name: str, value: Any) -> None:
        """Keep the study's column of this attribute equal to the run (see :mod:`~motoko.study.columns`)."""
        study = self._study
        columns = getattr(study, "columns", None) if study is not None else None
        if columns is not None:
            record_column(columns, name, self.id, value)

    # -- identity ---------------------------------------------------------

    @property
    def study(self) -> str:
        """The name of the study this run belongs to."""
        assert self._study is not None
        return self._study.name

    @property
    def job(self) -> Job:
        """The job this run executes."""
        assert self._study is not None
        return self._study.jobs[self.job_id]

    # -- state ------------------------------------------------------------

    @property
    def state(self) -> str:
        """The run's state; assigning it checks the transition and updates indexes."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        assert self._study is not None
        before = self._state
        self._study.transition(self, value)
        self._journal(STATE, value=str(value), before=before)

    def requeue(self, reason: str = "requeued") -> None:
        """Put a finished, failed, lost or cancelled run back to CREATED.

        The attempt counter grows and the ended attempt is kept in
        ``run.history``. Requeueing a CREATED run does nothing.
        """
        assert self._study is not None
        before = self.attempt
        self._study.requeue(self, reason)
        self._journal(REQUEUE, value=reason, before=before)

    @property
    def is_terminal(self) -> bool:
        """True once the run is FINISHED, FAILED, CANCELLED or LOST."""
        return self._state in TERMINAL

    # -- dictionary-style access (BlackDynamite compatibility) -------------

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self, name, value)

    def get(self, name: str, default: Any = None) -> Any:
        """Return a field or free attribute, or ``default`` when it is not set."""
        return getattr(self, name, default)

    # -- run-side information ----------------------------------------------

    def set_progress(self, fraction: float) -> None:
        """Record how far the run is, between 0.0 and 1.0."""
        value = float(fraction)
        if not 0.0 <= value <= 1.0:
            raise ParameterError(
                f"progress must be between 0.0 and 1.0, got {fraction!r}",
                field="progress",
                value=fraction,
                hint="pass the finished fraction, e.g. run.set_progress(0.5)",
            )
        self.progress = value
        self._changed()

    def set_status(self, text: str) -> None:
        """Record a short human-readable status line ("step 40/100")."""
        self.status = str(text)
        self._changed()

    def set_output(self, output: dict[str, Any]) -> None:
        """Record the run's result as a dictionary (merged into earlier output)."""
        merged = dict(self.output or {})
        merged.update(output)
        self.output = merged
        self._changed()

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Attach string key/value metadata, usable in constraints as ``meta.KEY``."""
        merged = dict(self._metadata or {})
        merged.update({str(k): str(v) for k, v in metadata.items()})
        self._metadata = merged
        self._changed()

    def get_metadata(self) -> dict[str, str]:
        """Return the run's metadata (a copy)."""
        return dict(self._metadata or {})

    def should_stop(self) -> bool:
        """True once somebody asked this run to stop (cooperative cancelling)."""
        self._refresh()
        return bool(self.stop_requested)

    # -- information for handles ------------------------------------------------

    @property
    def computation_time(self) -> float | None:
        """Seconds from start to finish (to now while it runs); None before it started."""
        if self.started is None:
            return None
        end = self.finished or now()
        return max(0.0, (end - self.started).total_seconds())

    @property
    def total_time(self) -> float | None:
        """Seconds from creation to finish (to now while it has not ended)."""
        if self.created is None:
            return None
        end = self.finished or now()
        return max(0.0, (end - self.created).total_seconds())

    @property
    def queue_position(self) -> int | None:
        """1 for the oldest CREATED run of its study, 2 for the next...; None unless CREATED.

        Launchers claim CREATED runs from a random starting point (so that
        several launchers do not all want the same run), so the position is
        the run's rank by age, a fair estimate of what is ahead of it.
        """
        if self._state != CREATED or self._study is None:
            return None
        waiting = self._study.ids_in_state(CREATED)
        return sum(1 for _ in waiting.keys(max=self.id, excludemax=True)) + 1

    def to_dict(self) -> dict[str, Any]:
        """Everything known about the run, JSON-ready (dates as ISO 8601 text).

        The stored fields and free attributes (see :meth:`fields`), plus
        ``job`` (its parameters), ``computation_time``, ``total_time``,
        ``queue_position`` and the names of its ``quantities``. Live: on a
        workflow's connection it first sees what was committed since.
        """
        self._see_commits()
        out = self.fields()
        out["job"] = self.job.to_dict()
        out["computation_time"] = self.computation_time
        out["total_time"] = self.total_time
        out["queue_position"] = self.queue_position
        out["quantities"] = self.list_quantities()
        return {str(k): jsonable(v) for k, v in out.items()}

    def cancel(self, wait_timeout: float | None = None) -> bool:
        """Cancel this run and commit; return whether it is CANCELLED.

        A CREATED run ends CANCELLED at once. A launched or running run gets a
        stop request (``run.should_stop()`` turns True inside it); its
        launcher gives it ``cancel_grace`` seconds to stop on its own, then
        TERM, then KILL, and settles it CANCELLED. With ``wait_timeout``, waits up to that many
        seconds for the run to end. Idempotent: cancelling an ended run
        changes nothing and returns False (True if it was already CANCELLED).
        Like every motoko wait, it commits pending changes of the connection.

        Raises:
            EventLoopError: ``wait_timeout`` inside a workflow step, an event
                action or a launcher; ``await run.cancel_async(...)`` there.
        """
        if wait_timeout is not None:
            refuse_in_loop("run.cancel(wait_timeout=...)", "await run.cancel_async(wait_timeout=...)")
        study = self._study
        assert study is not None
        self._commit(lambda: study.cancel(self), what=f"cancel run {self.study}.{self.id}")
        if wait_timeout is not None and not self.is_terminal:
            deadline = time.monotonic() + wait_timeout
            while not self.is_terminal and time.monotonic() < deadline:
                self._wait_for_change(min(0.5, max(0.0, deadline - time.monotonic())))
                self._see_changes()
        return self._state == CANCELLED

    async def cancel_async(self, wait_timeout: float | None = None) -> bool:
        """:meth:`cancel` for async code: waiting for the run to end does not block the loop."""
        study = self._study
        assert study is not None
        self._commit(lambda: study.cancel(self), what=f"cancel run {self.study}.{self.id}")
        if wait_timeout is not None and not self.is_terminal:
            deadline = time.monotonic() + wait_timeout
            while not self.is_terminal and time.monotonic() < deadline:
                await self._wait_for_change_async(min(0.5, max(0.0, deadline - time.monotonic())))
                self._see_changes()
        return self._state == CANCELLED

    # -- export -------------------------------------------------------------

    def fields(self) -> dict[str, Any]:
        """Return every stored field and free attribute (not quantities)."""
        out: dict[str, Any] = {name: getattr(self, name, None) for name in BUILTIN_RUN_FIELDS}
        out["state"] = self._state
        for name, value in self.__dict__.items():
            if not name.startswith("_") and name not in out:
                out[name] = value
        out["parents"] = [list(p) for p in self.parents]
        out["metadata"] = self.get_metadata()
        out["output"] = dict(self.output or {})
        out["study"] = self.study
        return out

    def __repr__(self) -> str:
        study = self._study.name if self._study is not None else "?"
        return f"<Run {study}.{getattr(self, 'id', '?')} {self._state}>"

    def _repr_html_(self) -> str:
        """Notebook display: fields, last stdout lines and quantities (see :mod:`motoko.study.display`)."""
        return run_html(self)

    # -- persistence plumbing -------------------------------------------------

    def _changed(self) -> None:
        """Tell a run-side auto-committer (if any) that an API call changed the run."""
        hook: Callable[[], None] | None = getattr(self, "_v_on_change", None)
        if hook is not None:
            hook()

    def _see_commits(self) -> None:
        """Live reads: a workflow's connection begins anew if others committed since (StudyDB.sync)."""
        jar = self._p_jar
        sync: Callable[[], Any] | None = getattr(jar, "motoko_sync", None) if jar is not None else None
        if sync is not None:
            sync()

    def _refresh(self) -> None:
        hook: Callable[[], None] | None = getattr(self, "_v_on_refresh", None)
        if hook is not None:
            hook()

    def _commit(self, change: Callable[[], Any], *, what: str) -> Any:
        """Apply ``change`` and commit it on the run's connection, retrying conflicts."""
        jar = self._p_jar
        if jar is None:  # not stored (yet): nothing to commit
            return change()
        return commit_with_retries(jar.transaction_manager, journal_of(self), change, what=what)

    def _see_changes(self) -> None:
        """Commit pending changes of the run's connection and see other processes' commits."""
        hook: Callable[[], None] | None = getattr(self, "_v_on_refresh", None)
        if hook is not None:
            hook()
            return
        jar = self._p_jar
        if jar is not None:
            self._commit(lambda: None, what="save pending changes")
            jar.transaction_manager.begin()

    def _wait_for_change(self, seconds: float) -> None:
        """Block until the database reports a commit, or ``seconds`` passed."""
        jar = self._p_jar
        # A FeedStorage (every StudyDB) pushes commits; anything else is polled.
        feed = getattr(jar.db().storage, "feed", None) if jar is not None else None
        if feed is None:
            time.sleep(seconds)
            return
        waiter = feed.waiter()
        try:
            waiter.wait(seconds)
        finally:
            waiter.close()

    async def _wait_for_change_async(self, seconds: float) -> None:
        """:meth:`_wait_for_change` without blocking the event loop."""
        jar = self._p_jar
        feed = getattr(jar.db().storage, "feed", None) if jar is not None else None
        if feed is None:
            await asyncio.sleep(seconds)
            return
        waiter = feed.async_waiter()
        try:
            await waiter.wait(seconds)
        finally:
            waiter.close()

    def _p_resolveConflict(  # noqa: N802
        self, old: dict[str, Any], committed: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge two concurrent changes of the same run, attribute by attribute.

        Raises:
            ConflictError: when both changed the same attribute differently,
                both touched the exclusive ones (state, launcher, attempt,
                history: even different ones of them), or
                the committed change requeued the run (a new attempt).
        """
        return merge_run_changes(old, committed, new)


_persistent_setattr = persistent.Persistent.__setattr__

#: Run attributes motoko itself keeps (and their indexes, if any): everything
#: else a run holds, its ``run:`` fields and free attributes, has a column.
MOTOKO_ATTRIBUTES = frozenset(
    {"id", *(name for cls in (Run, RunFiles, RunQuantities) for name in vars(cls) if not name.startswith("_"))}
)


def ids_of(runs: Iterable[Run]) -> list[int]:
    """Return the ids of ``runs`` in order."""
    return [r.id for r in runs]

"""Run changes made outside a transaction, kept so that they can be made again.

Workflow code writes runs directly (``run.state = "FORWARDED"``, ``run.y =
...``, ``run.requeue()``); those writes are committed at the next refresh.
If another process committed a conflicting change meanwhile, ZODB aborts the
whole transaction, and ZODB cannot merge every conflict: when a launcher
settles a run and a workflow forwards another, both may rewrite the same
bucket of the state index, and a BTree bucket refuses to merge, for
instance, the deletion of its first key. Rather than losing the workflow's
writes, :class:`~motoko.study.database.StudyDB` replays this journal on fresh
data and commits again.

A replay is a rebase, not an overwrite: each entry remembers the value it
replaced, and if another process changed that same value meanwhile, the
replay stops with :class:`~motoko.errors.ConflictRetriesExhausted` instead
of silently undoing the other change.

Changes made inside ``StudyDB.transact`` are not journalled: ``transact``
runs its whole function again after a conflict.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

import transaction
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

from motoko.errors import ConflictRetriesExhausted
from motoko.study.values import same


class Run(Protocol):
    """What replaying needs of a run (a stored :class:`~motoko.study.records.Run`).

    Protocols here and below: records and the database both use the journal,
    so the journal imports neither.
    """

    id: int
    attempt: int
    state: str
    _study: Any
    _p_jar: Any

    def requeue(self, reason: str = ...) -> None: ...
    def _p_activate(self) -> None: ...


class StudyDB(Protocol):
    """What replaying needs of a database connection (:class:`~motoko.study.database.StudyDB`)."""

    tm: transaction.TransactionManager

    def study(self, name: str) -> Any: ...

T = TypeVar("T")

#: Journal entry kinds: an attribute set or deleted, a state change, a requeue.
SET, DELETE, STATE, REQUEUE = "set", "delete", "state", "requeue"
#: ``Entry.before`` of an attribute the run did not have.
ABSENT = object()


@dataclass(frozen=True)
class Entry:
    """One change of one run, by study name and run id (objects go stale on abort)."""

    study: str
    run_id: int
    kind: str
    name: str = ""
    value: Any = None
    before: Any = None  # what the change replaced (ABSENT: nothing)


class Journal:
    """The changes a StudyDB's connection made to runs since its last commit."""

    def __init__(self, db: StudyDB) -> None:
        self.db = db
        self.entries: list[Entry] = []
        self._paused = 0

    @property
    def active(self) -> bool:
        """Whether changes are being recorded now."""
        return not self._paused

    def record(self, run: Run, kind: str, name: str = "", value: Any = None, before: Any = None) -> None:
        """Remember a change just made to ``run`` (unless paused)."""
        if self._paused:
            return
        study = run._study
        if study is None or getattr(run, "id", None) is None:
            return
        self.entries.append(Entry(study.name, run.id, kind, name, value, before))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Record nothing inside (``transact`` re-runs its own changes; a replay is not new)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def clear(self) -> None:
        """Forget everything (after a commit, or when pending changes are dropped)."""
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def replay(self) -> None:
        """Make every change again on the connection's current view, in order.

        A run deleted meanwhile is skipped, and so is a change another
        process already made the same way (or a requeue it already did).

        Raises:
            ConflictRetriesExhausted: another process changed the same value
                differently meanwhile. The transaction is then aborted and
                the journal emptied: those changes are dropped.
        """
        try:
            with self.paused():
                for entry in self.entries:
                    run = self.db.study(entry.study).runs.get(entry.run_id)
                    if run is not None:
                        _apply(run, entry)
        except BaseException:
            self.db.tm.abort()
            self.clear()
            raise


def _apply(run: Run, entry: Entry) -> None:
    if entry.kind == REQUEUE:
        if run.attempt == entry.before:  # nobody requeued it meanwhile
            run.requeue(entry.value)
        return
    if entry.kind == STATE:
        current = run.state
    else:
        run._p_activate()
        current = run.__dict__.get(entry.name, ABSENT)
    wanted = ABSENT if entry.kind == DELETE else entry.value
    if same(current, wanted):
        return
    if not same(current, entry.before):
        what = "state" if entry.kind == STATE else entry.name
        raise ConflictRetriesExhausted(
            f"could not save run {entry.study}.{entry.run_id}: another process changed its {what} "
            f"to {_show(current)} meanwhile (this change: {_show(entry.before)} → {_show(wanted)})",
            hint="re-read the run and decide again; changes to different runs or attributes merge by themselves",
        )
    if entry.kind == STATE:
        run.state = entry.value
    elif entry.kind == SET:
        setattr(run, entry.name, entry.value)
    else:
        delattr(run, entry.name)


def _show(value: Any) -> str:
    if value is ABSENT:
        return "(unset)"
    text = repr(value)
    return text if len(text) <= 60 else text[:55] + "..."


def journal_of(run: Run) -> Journal | None:
    """The journal of the connection ``run`` belongs to (None: not a StudyDB's)."""
    jar = run._p_jar
    return getattr(jar, "motoko_journal", None) if jar is not None else None


# ------------------------------------------------------------------ the commit loop


def back_off(delay: float) -> float:
    """Sleep a jittered ``delay`` after a conflict; return the next, doubled up to 0.25 s."""
    time.sleep(delay * (1 + random.random()))
    return min(delay * 2, 0.25)


def exhausted(what: str, attempts: int) -> ConflictRetriesExhausted:
    """The error of a commit that met a conflict ``attempts`` times in a row."""
    return ConflictRetriesExhausted(
        f"could not {what}: other processes kept changing the same records ({attempts} attempts)",
        hint="try again; if it persists, fewer concurrent writers on the same runs help",
    )


@overload
def commit_with_retries(
    tm: transaction.TransactionManager, journal: Journal | None, change: Callable[[], T], *, attempts: int = ...,
    what: str = ..., on_conflict: Callable[[], None] | None = ..., wait_reconnect: Callable[[int], None] | None = ...,
) -> T: ...
@overload
def commit_with_retries(
    tm: transaction.TransactionManager, journal: Journal | None, change: None = ..., *, attempts: int = ...,
    what: str = ..., on_conflict: Callable[[], None] | None = ..., wait_reconnect: Callable[[int], None] | None = ...,
) -> None: ...
def commit_with_retries(
    tm: transaction.TransactionManager,
    journal: Journal | None,
    change: Callable[[], T] | None = None,
    *,
    attempts: int = 20,
    what: str = "save changes to runs",
    on_conflict: Callable[[], None] | None = None,
    wait_reconnect: Callable[[int], None] | None = None,
) -> T | None:
    """Apply ``change`` and commit, retrying conflicts on fresh data: motoko's one commit loop.

    ``StudyDB.transact`` (a change function), ``StudyDB.commit`` (no change:
    what is pending) and a run's own commits (``run.cancel()``...) all come
    here, so conflicts are retried, journalled changes replayed and a lost
    server waited for in one way.

    After a conflict the transaction is aborted, ``on_conflict`` runs (a
    launcher heart-beats there), the journal's changes are made again on
    fresh data, and ``change`` is called anew: it must be safe to repeat.
    Its own effects are not journalled (it is repeated instead).

    Args:
        tm: The connection's transaction manager.
        journal: The connection's journal of run changes, or None.
        change: What to do in the transaction; None commits what is pending.
        attempts: Conflicts tolerated in a row.
        what: Names the change in the error ("could not WHAT: ...").
        on_conflict: Called between an abort and the next attempt.
        wait_reconnect: Called with the attempt number when the server went
            away; it returns once the server is back or raises. Without it a
            lost server propagates ``ClientDisconnected``.

    Returns:
        What ``change`` returned (None without a change).

    Raises:
        ConflictRetriesExhausted: ``attempts`` conflicts in a row; or, when
            there is no change to repeat and nothing journalled, at the first
            conflict (pending changes that cannot be made again are dropped).
    """
    delay = 0.002
    for attempt in range(attempts):
        try:
            result = None
            if change is not None:
                if journal is not None:
                    with journal.paused():
                        result = change()
                else:
                    result = change()
            tm.commit()
            if journal is not None:
                journal.clear()
            return result
        except ConflictError as exc:
            tm.abort()
            if change is None and not journal:
                raise ConflictRetriesExhausted(
                    f"a change could not be saved because another process changed the same value: {exc}",
                    hint="change runs in fewer places at once, or inside db.transact() which retries",
                ) from None
            delay = back_off(delay)
            if on_conflict is not None:
                on_conflict()
            _replay(tm, journal)
        except ClientDisconnected:
            tm.abort()
            if wait_reconnect is None or (change is None and not journal):
                raise
            # Wait for the server, then make the changes again (a commit that
            # did land before the loss replays as a no-op).
            wait_reconnect(attempt)
            _replay(tm, journal)
        except BaseException:
            tm.abort()
            if journal is not None:
                journal.clear()
            raise
    raise exhausted(what, attempts)


def _replay(tm: transaction.TransactionManager, journal: Journal | None) -> None:
    """After an abort: begin anew and make the journalled run changes again (or raise)."""
    if journal:
        tm.begin()
        journal.replay()

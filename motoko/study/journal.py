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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from motoko.study.values import same

if TYPE_CHECKING:
    from motoko.study.database import StudyDB
    from motoko.study.records import Run

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
        from motoko.errors import ConflictRetriesExhausted

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

"""Awaitable handles on runs: :class:`RunList` and :class:`TaskSelection`.

``await tm.createTask(x=[1, 2])`` resolves when every run is FINISHED and
raises :class:`~motoko.errors.RunsFailed` as soon as one ends FAILED, LOST or
CANCELLED for good (a run that will be retried is still pending). Waiting is
driven by the change feed: the condition is re-checked within milliseconds of
the commit that may satisfy it, and a slow back-off poll is only a safety net.
Awaiting never blocks the event loop, so independent steps progress together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ZEO.Exceptions import ClientDisconnected

from motoko.errors import RunNotFound, RunsFailed, WaitTimeout
from motoko.study.records import FAILURE, FINISHED, LOST, STATES, TERMINAL, Job, Run

if TYPE_CHECKING:
    from motoko.flow.workflow import Workflow

T = TypeVar("T")
Pair = tuple[Run, Job]


def is_done(run: Run) -> bool:
    """FINISHED, or a user state entered after the run finished (FINISHED → FORWARDED)."""
    state = run.state
    return state == FINISHED or (state not in STATES and run.finished is not None)


def left_over(run: Run, since: Any) -> bool:
    """True for a run that an earlier execution of the workflow left unfinished.

    That is a run that ended FAILED, LOST or CANCELLED before ``since`` (the
    moment this Workflow was opened: e.g. cancelled by Ctrl-C, or failed last
    time), or that was launched before ``since`` and then found LOST (its
    launcher died with a killed ``motoko run``).
    """
    if run.state not in FAILURE:
        return False
    if run.finished is not None and run.finished < since:
        return True
    return run.state == LOST and run.launched is not None and run.launched < since


def requeue_left_over(workflow: Workflow, study: str, runs: Sequence[Run]) -> list[int]:
    """Requeue (back to CREATED, attempt + 1) the ``runs`` an earlier execution left over.

    Fix: resuming a workflow (``motoko run`` again with the same run name)
    reuses its runs through createTask's idempotency; without this, runs
    cancelled by Ctrl-C or orphaned by a killed ``motoko run`` came back
    CANCELLED or LOST and failed the resumed workflow at once instead of
    being executed again. Runs that failed during *this* execution are left
    alone, so failures are still reported. Returns the requeued ids.
    """
    since = workflow.opened_at
    stale = [run.id for run in runs if left_over(run, since)]
    if not stale:
        return []
    db = workflow.db_for(study)

    def change() -> list[int]:
        records = db.study(study)
        done = []
        for rid in stale:
            run = records.runs.get(rid)
            if run is not None and left_over(run, since):
                records.requeue(run, "resumed by a new execution of the workflow")
                done.append(rid)
        return done

    return db.transact(change, what=f"requeue left-over runs of {study!r}")


async def wait_until(
    workflow: Workflow,
    check: Callable[[], tuple[bool, T]],
    *,
    timeout: float | None = None,
    pending: Callable[[], list[tuple[str, int, str]]] | None = None,
) -> T:
    """Re-check ``check`` on every database change until it says done.

    ``check`` returns ``(done, value)`` and may raise to abort the wait.
    Pending workflow changes are committed before each check.

    Raises:
        WaitTimeout: after ``timeout`` seconds, naming what ``pending`` returns.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    poll = workflow.config.poll
    delay = poll.initial
    waiter = workflow.change_waiter()
    try:
        while True:
            try:
                workflow.refresh()
                done, value = check()
            except ClientDisconnected:
                # The server went away between the refresh and the reads; the
                # next refresh waits (bounded) for ZEO to reconnect.
                await asyncio.sleep(0.1)
                continue
            if done:
                return value
            budget = delay
            if deadline is not None:
                budget = min(budget, deadline - loop.time())
                if budget <= 0:
                    error = WaitTimeout(timeout or 0.0, pending() if pending else [])
                    if not error.pending:
                        # Fix: a selection has no pending runs to name; the
                        # message read "0 run(s) not done after 0.2 s: ".
                        error.message = f"nothing matched within {timeout:g} s"
                        error.hint = "wait longer, or check the constraints with `motoko select`"
                        error.args = (str(error),)
                    raise error
            fired = await waiter.wait(budget)
            delay = poll.initial if fired else min(delay * poll.factor, poll.maximum)
    finally:
        waiter.close()


class RunList(Sequence[Pair]):
    """The runs one ``createTask`` created (or reattached by id).

    Iterating gives ``(run, job)`` pairs; awaiting waits until every run is
    FINISHED and returns the RunList itself.

    Attributes:
        workflow: The workflow the runs belong to.
        study: The study's name.
        ids: The run ids, in creation order.
    """

    def __init__(self, workflow: Workflow, study: str, ids: Sequence[int]):
        self.workflow = workflow
        self.study = study
        self.ids = list(ids)

    # -- sequence of (run, job) ------------------------------------------------

    def _runs(self) -> list[Run]:
        db = self.workflow.db_for(self.study)
        runs = db.study(self.study).runs
        found = [runs.get(i) for i in self.ids]
        missing = [i for i, r in zip(self.ids, found, strict=True) if r is None]
        if missing:
            raise RunNotFound(self.study, missing)
        return found  # type: ignore[return-value]

    def runs(self) -> list[Run]:
        """Return the runs (fresh objects of the current transaction)."""
        return self._runs()

    def __iter__(self) -> Iterator[Pair]:
        return iter([(r, r.job) for r in self._runs()])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        pairs = list(self)
        return pairs[index]

    def __repr__(self) -> str:
        return f"<RunList {self.study} {self.ids[:10]}{'...' if len(self.ids) > 10 else ''}>"

    # -- state ---------------------------------------------------------------------

    def status(self) -> dict[str, int]:
        """Return the number of runs per state."""
        counts: dict[str, int] = {}
        for run in self._runs():
            counts[run.state] = counts.get(run.state, 0) + 1
        return counts

    def done(self) -> bool:
        """True when every run is FINISHED (does not wait)."""
        self.workflow.refresh()
        return all(is_done(r) for r in self._runs())

    def failed(self) -> list[Pair]:
        """Return the runs that ended FAILED, LOST or CANCELLED."""
        return [(r, r.job) for r in self._runs() if r.state in FAILURE]

    def _check(self) -> tuple[bool, RunList]:
        runs = self._runs()
        failures = [r for r in runs if r.state in FAILURE]
        if failures and requeue_left_over(self.workflow, self.study, failures):
            failures = [r for r in runs if r.state in FAILURE]
        if failures:
            raise RunsFailed([(self.study, r.id, r.state, r.exit_code, r.error) for r in failures])
        return all(is_done(r) for r in runs), self

    def _pending(self) -> list[tuple[str, int, str]]:
        return [(self.study, r.id, r.state) for r in self._runs() if not is_done(r)]

    async def wait(self, timeout: float | None = None) -> RunList:
        """Wait until every run is FINISHED.

        Raises:
            RunsFailed: as soon as a run ends FAILED, LOST or CANCELLED for good.
            WaitTimeout: (a ``TimeoutError``) after ``timeout`` seconds.
        """
        return await wait_until(self.workflow, self._check, timeout=timeout, pending=self._pending)

    def __await__(self) -> Any:
        return self.wait().__await__()


class TaskSelection:
    """A lazy selection of runs by constraints, evaluated afresh each time.

    Iterable (``(run, job)`` pairs), sized, truthy when non-empty, indexable,
    and awaitable: ``await sel`` waits until it is non-empty and returns the
    pairs. ``sel.all(...)`` waits until every selected run satisfies one of the
    constraint sets. ``a & b`` selects runs matching both.
    """

    def __init__(self, workflow: Workflow, study: str, constraints: list[Any]):
        self.workflow = workflow
        self.study = study
        self.constraints = constraints

    def runs(self) -> list[Run]:
        """Return the selected runs now."""
        # Fix: begin a new transaction first. A ZODB connection keeps the view
        # of its current transaction, so without this a selection read outside
        # an await (``while not sel: await asyncio.sleep(1)``, ``len(sel)``)
        # never saw what other processes committed. Pending workflow changes
        # are committed with it, which the house rules allow ("at the latest").
        self.workflow.refresh()
        db = self.workflow.db_for(self.study)
        return db.select(self.study, self.constraints)

    def exec(self) -> list[Pair]:
        """Return the selected ``(run, job)`` pairs now."""
        return [(r, r.job) for r in self.runs()]

    __call__ = exec

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.exec())

    def __len__(self) -> int:
        return len(self.runs())

    def __bool__(self) -> bool:
        return bool(self.runs())

    def __getitem__(self, index: Any) -> Any:
        return self.exec()[index]

    def __and__(self, other: TaskSelection) -> TaskSelection:
        if not isinstance(other, TaskSelection) or other.study != self.study:
            return NotImplemented
        return TaskSelection(self.workflow, self.study, [*self.constraints, *other.constraints])

    def __repr__(self) -> str:
        return f"<TaskSelection {self.study} {self.constraints!r}>"

    async def wait(self, timeout: float | None = None) -> list[Pair]:
        """Wait until at least one run matches; return the matching pairs."""

        def check() -> tuple[bool, list[Pair]]:
            pairs = self.exec()
            return bool(pairs), pairs

        try:
            return await wait_until(self.workflow, check, timeout=timeout)
        except WaitTimeout as error:
            error.message = f"no run of {self.study!r} matched {self._describe()} within {timeout:g} s"
            error.args = (str(error),)
            raise

    def _describe(self) -> str:
        return " and ".join(str(c) for c in self.constraints) or "anything"

    def __await__(self) -> Any:
        return self.wait().__await__()

    def all(self, *constraint_sets: Any) -> AllCondition:
        """An awaitable: every selected run satisfies one of ``constraint_sets``.

        With no constraint set, the condition is that every selected run is
        in a terminal state. The selection must be non-empty.
        """
        return AllCondition(self, list(constraint_sets))


class AllCondition:
    """``selection.all(...)``: awaitable and callable (returns the pairs or False)."""

    def __init__(self, selection: TaskSelection, constraint_sets: list[Any]):
        self.selection = selection
        self.constraint_sets = constraint_sets

    def __call__(self) -> list[Pair] | bool:
        runs = self.selection.runs()
        if not runs:
            return False
        if not self.constraint_sets:
            return [(r, r.job) for r in runs] if all(r.state in TERMINAL for r in runs) else False
        db = self.selection.workflow.db_for(self.selection.study)
        for constraints in self.constraint_sets:
            matching = {r.id for r in db.select(self.selection.study, [*self.selection.constraints, constraints])}
            if all(r.id in matching for r in runs):
                return [(r, r.job) for r in runs]
        return False

    def __bool__(self) -> bool:
        return bool(self())

    async def wait(self, timeout: float | None = None) -> list[Pair]:
        """Wait until the condition holds; return the selected pairs."""

        def check() -> tuple[bool, list[Pair]]:
            result = self()
            return (result is not False), (result if isinstance(result, list) else [])

        try:
            return await wait_until(self.selection.workflow, check, timeout=timeout, pending=self._pending)
        except WaitTimeout as error:
            if not error.pending:  # the selection stayed empty
                selection = self.selection
                error.message = f"no run of {selection.study!r} matched {selection._describe()} within {timeout:g} s"
                error.args = (str(error),)
            raise

    def _pending(self) -> list[tuple[str, int, str]]:
        """The selected runs that satisfy none of the constraint sets (named on timeout)."""
        selection = self.selection
        runs = selection.runs()
        if not self.constraint_sets:
            return [(selection.study, r.id, r.state) for r in runs if r.state not in TERMINAL]
        db = selection.workflow.db_for(selection.study)
        satisfied: set[int] = set()
        for constraints in self.constraint_sets:
            satisfied |= {r.id for r in db.select(selection.study, [*selection.constraints, constraints])}
        return [(selection.study, r.id, r.state) for r in runs if r.id not in satisfied]

    def __await__(self) -> Any:
        return self.wait().__await__()

    def __and__(self, other: Any) -> Any:
        first = self

        class _Both(AllCondition):
            def __call__(self) -> list[Pair] | bool:
                a = first()
                if a is False:
                    return False
                b = other()
                if b is False:
                    return False
                return [*a, *b]  # type: ignore[misc]

        return _Both(self.selection, self.constraint_sets)

"""Lazy selections of runs: :class:`TaskSelection` and its ``all(...)`` condition.

``wf.calc.select("state = FINISHED, x > 2")`` names runs by constraints, not
by id: the selection is evaluated afresh each time it is read (iterated,
counted, tested), against what every process committed, and is awaitable
(``await sel`` waits until it is non-empty). Its verbs that act on runs
(``status()``, ``cancel()``, ``as_completed()``...) act on a
:class:`~motoko.flow.handles.RunList` snapshot of the runs selected now.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from motoko.errors import WaitTimeout
from motoko.flow.compat import RunSelector
from motoko.flow.handles import RunList
from motoko.flow.session import Session
from motoko.flow.waiting import AsCompleted, Pair, Progress, blocking, wait_until
from motoko.flow.watching import Displayed
from motoko.study.records import Run
from motoko.study.states import TERMINAL
from motoko.study.table import to_dataframe


class TaskSelection(Displayed):
    """A lazy selection of runs by constraints, evaluated afresh each time.

    Iterable (``(run, job)`` pairs), sized, truthy when non-empty, indexable,
    and awaitable: ``await sel`` waits until it is non-empty and returns the
    pairs. ``sel.all(...)`` waits until every selected run satisfies one of the
    constraint sets. ``a & b`` selects runs matching both.
    """

    #: motoko 0.1.4: set by ``all(...)`` to the test of the constraint set last checked.
    matching_condition: Any = None

    def __init__(self, workflow: Session, study: str, constraints: list[Any]):
        self.workflow = workflow
        self.study = study
        self.constraints = constraints

    @property
    def base(self) -> Any:
        """motoko 0.1.4: the study's TaskManager (``selection.base.runs[3]``).

        A selection is made by a task manager of a Workflow, which finds its
        managers by study name.
        """
        workflow: Any = self.workflow
        return workflow[self.study]

    @property
    def selector(self) -> RunSelector:
        """motoko 0.1.4: ``selection.selector.selectRuns(constraints)`` → pairs."""
        return RunSelector(self.workflow, self.study)

    def runs(self) -> list[Run]:
        """Return the selected runs now."""
        # Begin a new transaction first. A ZODB connection keeps the view
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
        return f"<TaskSelection {self.study} {[str(c) for c in self.constraints]!r}>"

    def _display_title(self) -> str:
        return f"selection of {self.study}: {self._describe()}"

    def _display_runs(self) -> list[Run]:
        return self.workflow.db_for(self.study).select(self.study, self.constraints)

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

    def result(self, timeout: float | None = None) -> list[Pair]:
        """Block until at least one run matches; return the pairs (the synchronous ``await``).

        Raises:
            WaitTimeout: after ``timeout`` seconds.
            EventLoopError: inside a workflow step, an event action or a launcher; ``await sel.wait()`` there.
        """
        return blocking("selection.result()", "await selection.wait()", lambda: self.wait(timeout))

    def snapshot(self) -> RunList:
        """The runs selected now, as a RunList (which observes; it never requeues)."""
        return RunList(self.workflow, self.study, [r.id for r in self.runs()], resume=False)

    def to_dataframe(self, quantities: Any = None) -> Any:
        """One row per run: job parameters, run fields, last value of each quantity.

        See :func:`motoko.study.table.to_dataframe` (imported lazily: pandas
        is only loaded when a table is asked for).
        """
        return to_dataframe(self, quantities)

    def status(self) -> dict[str, int]:
        """Return the number of selected runs per state."""
        return self.snapshot().status()

    def progress(self) -> Progress:
        """The :class:`Progress` of the runs selected now."""
        return self.snapshot().progress()

    def as_completed(self, timeout: float | None = None) -> AsCompleted:
        """``(run, job)`` of the runs selected now, in the order they end (see RunList)."""
        return self.snapshot().as_completed(timeout)

    def cancel(self, wait_timeout: float | None = None) -> dict[int, bool]:
        """Cancel the runs selected now; see :meth:`RunList.cancel`."""
        return self.snapshot().cancel(wait_timeout)

    async def cancel_async(self, wait_timeout: float | None = None) -> dict[int, bool]:
        """Cancel the runs selected now without blocking the event loop."""
        return await self.snapshot().cancel_async(wait_timeout)

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
            self.selection.matching_condition = lambda pair, ids=frozenset(matching): pair[0].id in ids
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

    def result(self, timeout: float | None = None) -> list[Pair]:
        """Block until the condition holds; return the selected pairs.

        Raises:
            WaitTimeout: after ``timeout`` seconds, naming the runs that do not satisfy it.
            EventLoopError: inside a workflow step, an event action or a launcher; ``await condition.wait()`` there.
        """
        return blocking("condition.result()", "await condition.wait()", lambda: self.wait(timeout))

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


__all__ = ["AllCondition", "TaskSelection"]

"""The motoko 0.1.4 surface that handles keep, so that its orchestrators run unmodified.

motoko 0.1.4 (GPL; only its documented API is followed here, none of its
code) exposed ``RunList(pairs)`` with a ``.runs`` list of ``(run, job)``,
``TaskSelectionEval(func)`` (callable, ``&``-able, awaitable) and selectors
with ``selectRuns(constraints)``. These are the same concepts as motoko's
handles; this module only adapts the spellings:

* :class:`RunPairs`: ``rl.runs`` is the list of ``(run, job)`` pairs and,
  called (``rl.runs()``), the list of runs, as motoko's handles had it.
* :class:`TaskSelectionEval`: any ``func() -> pairs | False`` made awaitable,
  waking on the change feed of the workflow it is given (else a back-off poll).
* :class:`RunSelector`: ``selector.selectRuns(constraints)`` → pairs.
* :func:`workflow_of`: the Workflow (or Session) whose connection holds a run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from motoko.errors import HandleError, WaitTimeout
from motoko.flow.session import Session
from motoko.flow.waiting import Pair, blocking, wait_until
from motoko.study.records import Job, Run


class RunPairs(list[Pair]):
    """``rl.runs``: the ``(run, job)`` pairs (motoko 0.1.4); calling it returns the runs alone."""

    def __call__(self) -> list[Run]:
        return [run for run, _ in self]


def workflow_of(run: Run) -> Session:
    """The Workflow (or Session) whose database connection ``run`` was read through.

    Raises:
        HandleError: for a run that was not read through a Workflow.
    """
    jar = run._p_jar
    ref = getattr(jar, "motoko_workflow", None) if jar is not None else None
    workflow = ref() if ref is not None else None
    if workflow is None:
        raise HandleError(
            f"run {run.study}.{run.id} was not read through a Workflow",
            hint="build the RunList from runs of wf.STUDY.select(...) or createTask, or use RunList.from_ids",
        )
    return workflow  # type: ignore[no-any-return]


def split_pairs(items: Sequence[Any]) -> tuple[Session | None, str, list[int]]:
    """``RunList(pairs)`` of motoko 0.1.4: the workflow, study and ids of ``(run, job)`` pairs (or runs).

    Raises:
        HandleError: for items that are not runs, or runs of several studies.
    """
    runs: list[Run] = []
    for item in items:
        run = item[0] if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Job) else item
        if not isinstance(run, Run):
            raise HandleError(f"RunList(pairs) takes (run, job) pairs or runs, got {item!r}",
                              hint="e.g. RunList(wf.calc.select('state = FINISHED').exec())")
        runs.append(run)
    if not runs:
        return None, "", []
    studies = sorted({run.study for run in runs})
    if len(studies) > 1:
        raise HandleError(f"RunList(pairs) holds runs of one study; these are of {', '.join(studies)}",
                          hint="make one RunList per study")
    return workflow_of(runs[0]), studies[0], [run.id for run in runs]


class TaskSelectionEval:
    """A condition over runs, awaitable (motoko 0.1.4): ``func()`` returns the pairs, or False.

    ``a & b`` holds when both hold (their pairs concatenated). Awaiting
    re-evaluates on every commit the workflow's change feed reports, or, with
    no workflow, on a back-off poll from 0.05 s to 1 s (motoko 0.1.4 slept 2 s
    between looks).
    """

    def __init__(self, func: Callable[[], Any], workflow: Session | None = None):
        self.func = func
        self.workflow = workflow

    def __call__(self) -> Any:
        return self.func()

    def __bool__(self) -> bool:
        return bool(self())

    def __and__(self, other: Callable[[], Any]) -> TaskSelectionEval:
        if not callable(other):
            raise HandleError(f"cannot combine a condition with {other!r}", hint="combine callables or conditions")

        def both() -> Any:
            first = self()
            if not first:
                return False
            second = other()
            if not second:
                return False
            return [*first, *second]

        return TaskSelectionEval(both, self.workflow or getattr(other, "workflow", None))

    async def wait(self, timeout: float | None = None) -> Any:
        """Wait until the condition holds; return what it returned."""

        def check() -> tuple[bool, Any]:
            value = self()
            return bool(value), value

        if self.workflow is not None:
            return await wait_until(self.workflow, check, timeout=timeout)
        return await _poll(check, timeout)

    def __await__(self) -> Any:
        return self.wait().__await__()

    def result(self, timeout: float | None = None) -> Any:
        """Block until the condition holds (outside event loops)."""
        return blocking("condition.result()", "await condition", lambda: self.wait(timeout))


async def _poll(check: Callable[[], tuple[bool, Any]], timeout: float | None) -> Any:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = 0.05
    while True:
        done, value = check()
        if done:
            return value
        if deadline is not None and loop.time() >= deadline:
            error = WaitTimeout(timeout or 0.0, [])
            error.message = f"the condition did not hold within {timeout:g} s"
            error.args = (str(error),)
            raise error
        await asyncio.sleep(delay if deadline is None else min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 2, 1.0)


class RunSelector:
    """``tm.selector`` / ``selection.selector`` (motoko 0.1.4): ``selectRuns(constraints)`` → pairs."""

    def __init__(self, workflow: Session, study: str):
        self.workflow = workflow
        self.study = study

    def selectRuns(self, constraints: Any = None, sort_by: Any = None, quiet: bool = True) -> list[Pair]:  # noqa: N802
        """The ``(run, job)`` pairs matching ``constraints`` now, in id order (``sort_by`` is accepted)."""
        self.workflow.refresh()
        return [(run, run.job) for run in self.workflow.db_for(self.study).select(self.study, constraints)]


__all__ = ["RunPairs", "RunSelector", "TaskSelectionEval", "split_pairs", "workflow_of"]

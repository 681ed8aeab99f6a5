"""Event-driven actions (motoko 0.1.4 orchestrators) and ``@event``.

``workflow.add_action(name, task=, event=, f=)`` registers an action fired
whenever its event holds. Event forms, as in motoko 0.1.4:

* a constraint string (``"state = FINISHED"``; split on ``,`` and ``and``),
* a list of constraint strings,
* ``f(run, job)``: holds for the runs it returns True for,
* ``f(workflow, task_manager)``: holds when it returns something truthy,
* a callable without arguments.

Unlike motoko 0.1.4, events are re-checked on every database change (not
every 2 s), each action runs as its own task so one slow action never blocks
the others, an action is not fired again while it is still running, and an
exception in an action or in ``main`` ends the workflow with that error.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from motoko.errors import (
    WorkflowAborted,  # noqa: F401 (defined there, importable from here)
    WorkflowError,
)
from motoko.flow.context import current_event, current_parents
from motoko.flow.handles import requeue_left_over
from motoko.flow.lost_runs import declare_lost_while_waiting
from motoko.flow.session import Session
from motoko.study.blocking import motoko_loop

if TYPE_CHECKING:
    from motoko.flow.task_manager import TaskManager

log = logging.getLogger(__name__)

ALL = "__all__"


def event(func: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Mark an async action; logs its firing (motoko 0.1.4 decorator).

    Transactions need no decorator any more: changes commit at the next
    await of a motoko awaitable and when the action returns.
    """

    @functools.wraps(func)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        log.info("fire %s", func.__name__)
        return await func(*args, **kwargs)

    return wrapped


def _param_names(f: Any) -> list[str] | None:
    if not callable(f):
        return None
    try:
        return list(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        return None


def event_kind(condition: Any) -> str:
    """Classify an event condition: constraints, run, workflow or plain."""
    if isinstance(condition, str | list | tuple):
        return "constraints"
    names = _param_names(condition)
    if names == ["run", "job"]:
        return "run"
    if names == ["workflow", "task_manager"]:
        return "workflow"
    if names == []:
        return "plain"
    return "unknown"


class ActionRuns(list):  # type: ignore[type-arg]
    """The ``(run, job)`` pairs an action was fired for.

    While an action iterates over them, each task it creates records the
    pair being handled as its parent, not every run of the batch: the
    provenance of ``for run, job in runs: add.createTask(x=run.y)`` is exact.
    """

    def __init__(self, pairs: list[Any], study: str):
        super().__init__(pairs)
        self.study = study

    def __iter__(self) -> Any:
        everything = current_parents.get()
        try:
            for pair in super().__iter__():
                current_parents.set(((self.study, pair[0].id),))
                yield pair
        finally:
            current_parents.set(everything)


@dataclass
class Action:
    """A registered action."""

    name: str
    task: str
    condition: Any
    f: Callable[..., Any] | None
    get_params: Callable[[], Any] | None
    kind: str
    error_handler: bool = False


class ActionLoop:
    """The actions of a workflow and the loop that fires them; the Workflow holds one.

    A :class:`~motoko.flow.workflow.Workflow` delegates its motoko 0.1.4
    verbs to it (``add_action``, ``add_error_handler``, ``finished``...).
    Actions receive the workflow itself (``f(workflow=..., runs=...)``), not
    this loop.

    Args:
        workflow: The workflow whose studies the events look at; handed to
            the actions and to ``f(workflow, task_manager)`` events.
        task_managers: The workflow's task managers, by study name.

    Attributes:
        actions: The registered actions, by name.
        params: Extra keyword arguments for every action (the orchestrator's
            parameters).
        finished: Set (by an action, or ``main``) to end the loop.
    """

    def __init__(self, workflow: Session, task_managers: Mapping[str, TaskManager]):
        self.workflow = workflow
        self.task_managers = task_managers
        self.actions: dict[str, Action] = {}
        self._in_flight: set[str] = set()
        self.params: dict[str, Any] = {}
        self.finished = False

    def _manager(self, task: str) -> TaskManager:
        """The task manager of a study or alias (an unknown name raises a did-you-mean error)."""
        return self.task_managers[self.workflow.config.resolve(task)]

    def add_action(
        self,
        event_name: str,
        task: str = ALL,
        event: Any = None,
        get_params: Callable[[], Any] | None = None,
        f: Callable[..., Any] | None = None,
    ) -> None:
        """Register ``f`` to be fired whenever ``event`` holds for ``task``.

        Registering the same name again replaces the action.

        Raises:
            WorkflowError: for an event of no known form or an unknown task.
        """
        kind = event_kind(event)
        if kind == "unknown":
            raise WorkflowError(
                f"action {event_name!r}: cannot tell what event {event!r} is",
                hint="use a constraint string, a list of them, f(run, job), f(workflow, task_manager) or f()",
            )
        if task != ALL:
            self._manager(task)
        self.actions[event_name] = Action(event_name, task, event, f, get_params, kind)

    def add_error_handler(self, event: Any = "state = FAILED", f: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        """Register a handler for failed runs: ``f`` is called, then the workflow ends with an error."""
        self.add_action("error_handler", event=event, f=f, **kwargs)
        self.actions["error_handler"].error_handler = True

    # -- checking -------------------------------------------------------------------

    def _managers_for(self, action: Action) -> list[TaskManager]:
        if action.task == ALL:
            return list(self.task_managers.values())
        return [self._manager(action.task)]

    def _evaluate(self, action: Action, manager: TaskManager) -> Any:
        """The event's value for one task manager: falsy, True, or runs."""
        if action.kind == "constraints":
            condition = action.condition
            if isinstance(condition, str):
                condition = [c.strip() for c in re.split(r",|\band\b", condition) if c.strip()]
            pairs = manager.select(list(condition)).exec()
            return pairs or False
        if action.kind == "run":
            pairs = [(r, j) for r, j in manager.select() if action.condition(r, j)]
            return pairs or False
        if action.kind == "workflow":
            return action.condition(self.workflow, task_manager=manager)
        return action.condition()

    async def check_events(self) -> list[asyncio.Task[Any]]:
        """Evaluate every action once; start a task for each that fires."""
        started = []
        for action in list(self.actions.values()):
            if action.name in self._in_flight:
                continue
            for manager in self._managers_for(action):
                value = self._evaluate(action, manager)
                if value:
                    self._in_flight.add(action.name)
                    started.append(asyncio.ensure_future(self._fire(action, manager, value)))
                    break
        return started

    async def _fire(self, action: Action, manager: TaskManager, value: Any) -> None:
        params = action.get_params() if callable(action.get_params) else action.get_params
        kwargs: dict[str, Any] = {"workflow": self.workflow, "params": params, **self.params}
        parents: tuple[tuple[str, int], ...] = ()
        if value is not True and isinstance(value, list):
            kwargs["runs"] = ActionRuns(value, manager.name)
            parents = tuple((manager.name, r.id) for r, _ in value)
        log.info("fire %s on %s", action.name, manager.name)
        # Like motoko 0.1.4, runs record the function that created them.
        token_event = current_event.set(getattr(action.f, "__name__", None) or action.name)
        token_parents = current_parents.set(parents)
        try:
            if action.f is not None:
                result = action.f(**kwargs)
                if inspect.isawaitable(result):
                    await result
            if action.error_handler:
                # Name the runs and their error (exit code, last stderr
                # line); "fired for calc" alone did not say what went wrong.
                raise WorkflowAborted(
                    f"error handler fired for {_describe_runs(manager.name, value)}: the workflow ends",
                    hint="inspect failed runs with `motoko select 'state = FAILED'`",
                )
        finally:
            current_event.reset(token_event)
            current_parents.reset(token_parents)
            self.workflow.refresh()
            self._in_flight.discard(action.name)

    async def run_events(self) -> None:
        """Fire actions on every change until ``finished`` is set.

        Raises:
            Exception: the first exception raised by an action.
        """
        with motoko_loop():  # the actions share this loop: refuse synchronous waits
            await self._run_events()

    async def _run_events(self) -> None:
        waiter = self.workflow.change_waiter()
        tasks: set[asyncio.Task[Any]] = set()
        poll = self.workflow.config.poll
        delay = poll.initial
        try:
            while not self.finished:
                self.workflow.refresh()
                # The loop awaits runs too: with every launcher dead, it declares them LOST.
                declare_lost_while_waiting(self.workflow)
                self._requeue_lost()
                for task in await self.check_events():
                    tasks.add(task)
                    task.add_done_callback(lambda _t: waiter.kick())
                for task in [t for t in tasks if t.done()]:
                    tasks.discard(task)
                    task.result()  # re-raise an action's exception
                if self.finished:
                    break
                fired = await waiter.wait(delay)
                delay = poll.initial if fired else min(delay * poll.factor, poll.maximum)
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            waiter.close()

    def _requeue_lost(self) -> None:
        """Execute again the runs a killed earlier execution left behind.

        An orchestrator awaits nothing, so RunList's resume handling never
        saw its runs orphaned by a killed ``motoko run`` (found LOST only
        after this execution started); the resumed workflow waited forever.
        """
        for manager in self.task_managers.values():
            requeue_left_over(self.workflow, manager.name, manager.select("state = LOST").runs())


def _describe_runs(study: str, value: Any) -> str:
    """``calc.1 FAILED (exit code 1): last error line; ...`` for the runs an event fired on."""
    if not isinstance(value, list) or not value:
        return study
    parts = []
    for run, _ in value[:5]:
        text = f"{run.study}.{run.id} {run.state}"
        if run.exit_code is not None:
            text += f" (exit code {run.exit_code})"
        error = (run.error or "").strip()
        if error:
            text += f": {error.splitlines()[-1][:200]}"
        parts.append(text)
    more = f"; and {len(value) - 5} more" if len(value) > 5 else ""
    return "; ".join(parts) + more

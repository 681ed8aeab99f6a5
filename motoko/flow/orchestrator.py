"""Running a motoko 0.1.4 orchestrator: ``main(workflow, **params)`` beside the actions.

An orchestrator's ``main`` registers actions (``workflow.add_action``) and may
create runs itself; the actions then fire on every database change until one
of them sets ``workflow.finished``. ``main`` and the :class:`ActionLoop
<motoko.flow.events.ActionLoop>` run on one event loop, so a synchronous wait
in either is refused instead of stalling the other. ``workflow.execute()``
and ``motoko run`` both come here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from motoko.errors import WorkflowError
from motoko.flow.context import current_event
from motoko.flow.events import ActionLoop
from motoko.flow.workflow_file import load_module, orchestrator_file
from motoko.study.blocking import blocking, motoko_loop


async def run_orchestrator_async(
    actions: ActionLoop, main: Callable[..., Awaitable[Any]], params: Mapping[str, Any]
) -> None:
    """Run ``main(workflow, **params)`` and the actions until ``actions.finished`` (or main ends without actions)."""
    with motoko_loop():  # main and the actions share this loop: refuse synchronous waits
        await _run_orchestrator(actions, main, params)


async def _run_orchestrator(actions: ActionLoop, main: Callable[..., Awaitable[Any]], params: Mapping[str, Any]) -> None:
    workflow = actions.workflow
    actions.params = dict(params)
    token = current_event.set(getattr(main, "__name__", "main"))
    try:
        main_task = asyncio.ensure_future(main(workflow, **params))
    finally:
        current_event.reset(token)
    events_task: asyncio.Task[Any] | None = None
    try:
        while True:
            if events_task is None and actions.actions:
                events_task = asyncio.ensure_future(actions.run_events())
            waits: list[asyncio.Future[Any]] = [main_task] if not main_task.done() else []
            if events_task is not None:
                waits.append(events_task)
            if not waits:
                break
            done, _ = await asyncio.wait(waits, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if main_task.done() and (events_task is None and not actions.actions or actions.finished):
                if events_task is not None:
                    await events_task
                break
            if events_task is not None and events_task.done():
                break
    finally:
        for left in (main_task, events_task):  # (renamed: mypy typed `task` as a Future above)
            if left is not None and not left.done():
                left.cancel()
        workflow.refresh()


def run_orchestrator(actions: ActionLoop, params: Mapping[str, Any]) -> None:
    """Synchronous entry for ``workflow.execute(**params)`` (motoko 0.1.4 API)."""
    workflow = actions.workflow
    spec = workflow.config.orchestrator
    if spec is None:
        raise WorkflowError("motoko.yaml names no orchestrator", hint="add `orchestrator: module.function`")
    file, func = orchestrator_file(workflow.directory, spec)
    module = load_module(file)
    main = getattr(module, func, None)
    if main is None:
        raise WorkflowError(f"{file} has no function {func!r}", where=str(workflow.config.path))
    # On a loop of its own, in a helper thread under a notebook's running loop.
    blocking("workflow.execute()", "await main(workflow, **params)",
             lambda: run_orchestrator_async(actions, main, params))


__all__ = ["run_orchestrator", "run_orchestrator_async"]

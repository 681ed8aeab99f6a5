"""Blocking calls and event loops: the one place that decides where a wait may block.

A synchronous wait (``rl.result()``, ``for ... in rl.as_completed()``,
``run.tail(follow=True)``, ``run.cancel(wait_timeout=...)``) is safe wherever
blocking the calling thread stalls nobody of motoko's. It is refused only on
a loop motoko itself runs (a workflow's steps and event actions, a
launcher), where it would freeze every other step, action or run: those
loops are marked with :func:`motoko_loop`, and :func:`refuse_in_loop`
raises :class:`EventLoopError` there, naming the ``await`` form.

Called from any other running loop (a Jupyter or IPython kernel, a user's own
asyncio program), the wait blocks the caller as a user expects: its
coroutine runs on a private loop in a helper thread (:func:`run_blocking`)
while the calling thread waits, interruptibly, for it. Ctrl-C (or a kernel
interrupt: SIGINT, so ``KeyboardInterrupt`` in the main thread) cancels the
helper's coroutine, waits for it to unwind, and propagates. The helper uses
the caller's database connection, which is safe: every StudyDB has its own
(not thread-local) transaction manager, and the caller does nothing else
with it until the wait returns.

The study layer holds this because runs (``Run.tail``, ``Run.cancel``) wait
too, and the study layer imports nothing above it; the workflow engine and
the launcher only mark their loops and call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from motoko.errors import EventLoopError

T = TypeVar("T")

#: How long an interrupted wait gets to unwind before the interrupt propagates anyway.
UNWIND_TIMEOUT = 10.0

_lock = threading.Lock()
#: Loops motoko runs its own work on, with how many motoko_loop() blocks hold each.
_own: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, int] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def motoko_loop() -> Iterator[None]:
    """Mark the running event loop as motoko's own while the block runs (nestable).

    Workflow steps, event actions and launchers run inside such a block:
    a synchronous wait there would stall them all, so it is refused.
    """
    loop = asyncio.get_running_loop()
    with _lock:
        _own[loop] = _own.get(loop, 0) + 1
    try:
        yield
    finally:
        with _lock:
            count = _own.get(loop, 1) - 1
            if count:
                _own[loop] = count
            else:
                _own.pop(loop, None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def in_motoko_loop() -> bool:
    """True when this thread runs a loop marked by :func:`motoko_loop`."""
    loop = _running_loop()
    if loop is None:
        return False
    with _lock:
        return loop in _own


def refuse_in_loop(call: str, instead: str) -> None:
    """Raise :class:`EventLoopError` when called on one of motoko's own loops.

    Raises:
        EventLoopError: inside a workflow step, an event action or a
            launcher, naming ``call`` and its ``instead`` await form.
    """
    if in_motoko_loop():
        raise EventLoopError(call, instead)


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]], loop: asyncio.AbstractEventLoop | None = None) -> T:
    """Run the coroutine ``make()`` returns to completion and return its result.

    With no loop running in this thread, it runs here (on ``loop``, or on a
    fresh loop closed afterwards, as :func:`asyncio.run`). Under a running
    loop (a notebook cell), it runs in a helper thread and this thread waits.

    Args:
        make: Creates the coroutine (called once).
        loop: A private loop to run on and keep (an iteration that resumes
            across calls); None for a fresh loop per call.
    """
    if _running_loop() is None:
        if loop is None:
            return asyncio.run(make())
        return loop.run_until_complete(make())
    return _in_helper_thread(make, loop)


def blocking(call: str, instead: str, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """:func:`refuse_in_loop`, then :func:`run_blocking` (the coroutine is never made if refused)."""
    refuse_in_loop(call, instead)
    return run_blocking(make)


def _in_helper_thread(make: Callable[[], Coroutine[Any, Any, T]], loop: asyncio.AbstractEventLoop | None) -> T:
    own = loop if loop is not None else asyncio.new_event_loop()
    # The task is made here, so it carries this thread's context variables.
    task = own.create_task(make())
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def main() -> None:
        try:
            outcome["value"] = own.run_until_complete(task)
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            if loop is None:
                with contextlib.suppress(Exception):
                    own.run_until_complete(own.shutdown_asyncgens())
                own.close()
            done.set()

    threading.Thread(target=main, name="motoko-wait", daemon=True).start()
    try:
        done.wait()
    except BaseException:
        # Interrupted (KeyboardInterrupt): stop the wait and let it unwind
        # before the caller touches the database connection again.
        with contextlib.suppress(RuntimeError):  # the loop already closed
            own.call_soon_threadsafe(task.cancel)
        with contextlib.suppress(BaseException):
            done.wait(UNWIND_TIMEOUT)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]

"""Waiting on runs: the change-feed wait loop, progress, and completion order.

Everything here waits the same way: re-check a condition on every commit
the change feed reports (within milliseconds), with a slow back-off poll only
as a safety net. Synchronous variants (``rl.result()``, ``for ... in
rl.as_completed()``) run the same coroutines on a private event loop (in a
helper thread under a notebook's running loop), and refuse, with a message
naming the ``await`` form, to block one of motoko's own loops (see
:mod:`motoko.study.blocking`).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ZEO.Exceptions import ClientDisconnected

from motoko.errors import EventLoopError, HandleError, ServerError, WaitTimeout  # noqa: F401 (defined there, importable from here)
from motoko.flow.launcher_watch import HINT_AFTER, LauncherWatch, watch_for
from motoko.flow.lost_runs import declare_lost_while_waiting
from motoko.flow.session import Session
from motoko.study.blocking import blocking, refuse_in_loop, run_blocking  # noqa: F401 (the one mechanism; importable from here)
from motoko.study.records import Job, Run
from motoko.study.states import (
    ACTIVE,
    CANCELLED,
    FAILED,
    LOST,
    TERMINAL,
    is_done,
    is_ended,
)

T = TypeVar("T")
Pair = tuple[Run, Job]
_NEVER = _dt.datetime.max.replace(tzinfo=_dt.timezone.utc)




async def wait_until(
    workflow: Session,
    check: Callable[[], tuple[bool, T]],
    *,
    timeout: float | None = None,
    pending: Callable[[], list[tuple[str, int, str]]] | None = None,
) -> T:
    """Re-check ``check`` on every database change until it says done.

    ``check`` returns ``(done, value)`` and may raise to abort the wait.
    Pending workflow changes are committed before each check; while it
    waits, the wait declares LOST the local runs no launcher is left to
    declare (:mod:`motoko.flow.lost_runs`), so it never waits forever.

    Raises:
        WaitTimeout: after ``timeout`` seconds, naming what ``pending`` returns.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    poll = workflow.config.poll
    delay = poll.initial
    watch = watch_for(workflow)
    hint_at: float | None = loop.time() + HINT_AFTER if pending is not None else None
    waiter = workflow.change_waiter()
    lost_since: float | None = None
    fired = False
    try:
        while True:
            if not all(db.connected for db in workflow.databases):
                # Wait for ZEO to reconnect here, awaiting, not inside refresh()
                # (which blocks): Ctrl-C and cancellation reach the step at once.
                lost_since = _server_lost(workflow, lost_since, loop.time())
                await asyncio.sleep(0.1)
                continue
            try:
                if fired:
                    _catch_up(workflow)  # woken by a commit: no server round trip for this process's own
                else:
                    workflow.refresh()
                declare_lost_while_waiting(workflow)
                done, value = check()
            except ClientDisconnected:
                # The server went away: wait for ZEO to reconnect, as long as
                # the databases wait for a lost server, then give up (one line).
                lost_since = _server_lost(workflow, lost_since, loop.time())
                await asyncio.sleep(0.1)
                continue
            lost_since = None
            if done:
                return value
            if hint_at is not None and pending is not None and loop.time() >= hint_at:
                hint_at = None  # once per wait: "3 runs waiting, no launcher alive"
                watch.warn(pending())
            budget = delay
            if hint_at is not None:
                budget = min(budget, max(0.01, hint_at - loop.time()))
            if deadline is not None:
                budget = min(budget, deadline - loop.time())
                if budget <= 0:
                    raise _timed_out(timeout, pending() if pending else [], watch)
            fired = await waiter.wait(budget)
            delay = poll.initial if fired else min(delay * poll.factor, poll.maximum)
    finally:
        waiter.close()


def _timed_out(timeout: float | None, left: list[tuple[str, int, str]], watch: LauncherWatch) -> WaitTimeout:
    """The WaitTimeout naming the runs ``left`` pending, and why when no launcher serves them."""
    unserved = watch.check(left) if left else None
    error = WaitTimeout(timeout or 0.0, left, str(unserved) if unserved else None)
    if not error.pending:
        # A selection has no pending runs to name; the
        # message read "0 run(s) not done after 0.2 s: ".
        error.message = f"nothing matched within {timeout:g} s"
        error.hint = "wait longer, or check the constraints with `motoko select`"
        error.args = (str(error),)
    return error


def _catch_up(workflow: Session) -> None:
    """Commit the workflow's pending changes and see what the change feed told of.

    After a wake-up by the feed, what woke it is already in the client: a
    commit of this process (an embedded launcher's, in-process) needs no
    server round trip; one of another process still gets it (see
    ``StudyDB.catch_up``). The first check of a wait, and every check after
    a quiet poll interval, refresh fully.
    """
    for db in workflow.databases:
        db.commit()
        db.catch_up()


def _server_lost(workflow: Any, since: float | None, now: float) -> float:
    """When the server was first found lost; ServerError once that is too long ago."""
    if since is None:
        return now
    db = next((db for db in workflow.databases if not db.connected), None)
    if db is not None and now - since > db.reconnect_timeout:
        raise ServerError(
            f"lost the database server at {db.address} for more than {db.reconnect_timeout:g} s",
            hint="restart it with `motoko server start`",
        )
    return since


# -- progress ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """How far a set of runs is.

    Attributes:
        total: Number of runs.
        finished: Runs FINISHED (or in a user state entered after finishing).
        failed: Runs FAILED or LOST.
        cancelled: Runs CANCELLED.
        running: Runs LAUNCHED or RUNNING.
        runs: Each run's own ``set_progress`` value (None if it set none), by id.
        overall: The mean over runs of 1 for an ended run, else its own
            progress (0 when unknown): what a progress bar shows.
    """

    total: int
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    running: int = 0
    runs: dict[int, float | None] = field(default_factory=dict)
    overall: float = 0.0

    @property
    def ended(self) -> int:
        """Runs that will not change any more (finished, failed or cancelled)."""
        return self.finished + self.failed + self.cancelled

    @property
    def fraction(self) -> float:
        """The finished fraction (1.0 for no runs at all)."""
        return self.finished / self.total if self.total else 1.0

    def __str__(self) -> str:
        text = f"{self.finished}/{self.total} finished ({100 * self.fraction:.0f}%)"
        for count, what in ((self.running, "running"), (self.failed, "failed"), (self.cancelled, "cancelled")):
            if count:
                text += f", {count} {what}"
        return text


def progress_of(runs: list[Run]) -> Progress:
    """The :class:`Progress` of ``runs`` (each run counted once)."""
    unique = {run.id: run for run in runs}
    counts = {"finished": 0, "failed": 0, "cancelled": 0, "running": 0}
    own: dict[int, float | None] = {}
    filled = 0.0
    for rid, run in unique.items():
        state = run.state
        if is_done(run):
            counts["finished"] += 1
        elif state in (FAILED, LOST):
            counts["failed"] += 1
        elif state == CANCELLED:
            counts["cancelled"] += 1
        elif state in ACTIVE:
            counts["running"] += 1
        own[rid] = run.progress
        filled += 1.0 if is_ended(run) else (run.progress or 0.0)
    overall = filled / len(unique) if unique else 1.0
    return Progress(len(unique), runs=own, overall=overall, **counts)


class ProgressBar:
    """A tqdm bar, redrawn on every check of a wait: a widget in a notebook, else text on stderr.

    The bar fills with :attr:`Progress.overall`, so it moves as runs call
    ``set_progress``, not only when they end; the text after it gives the
    counts (``3/4 finished (75%), 1 running``). ``tqdm.auto`` picks the
    notebook widget inside a Jupyter kernel; without ipywidgets it cannot,
    and the text bar is drawn instead.
    """

    def __init__(self, label: str, total: int):
        from tqdm.std import TqdmWarning
        from tqdm.std import tqdm as text

        with warnings.catch_warnings():
            # Without ipywidgets, tqdm warns once that it draws text: we do that on purpose.
            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm as auto

            try:
                self._bar = self._make(auto, label, total)
            except ImportError:  # a kernel without ipywidgets: no widget to draw
                self._bar = self._make(text, label, total)

    @staticmethod
    def _make(tqdm: Any, label: str, total: int) -> Any:
        class _Bar(tqdm):  # type: ignore[misc,valid-type]
            # tqdm prefixes its own postfix with ", "; a field of our own reads better.
            status = ""

            @property
            def format_dict(self) -> dict[str, Any]:
                values: dict[str, Any] = super().format_dict
                values["status"] = self.status
                return values

        return _Bar(
            total=max(total, 1),
            desc=label,
            file=sys.stderr,
            disable=False,  # asked for explicitly: shown even when stderr is not a terminal
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {status} [{elapsed}]",
            dynamic_ncols=True,
        )

    def show(self, progress: Progress) -> None:
        """Redraw with ``progress``."""
        self._bar.status = str(progress)
        self._bar.n = round(progress.overall * max(progress.total, 1), 3)
        self._bar.refresh()

    def close(self) -> None:
        """Leave the bar on screen, finished or not, and release the line."""
        self._bar.close()


# -- completion order ----------------------------------------------------------------------


class AsCompleted(Iterator[Pair], AsyncIterator[Pair]):
    """``(run, job)`` pairs in the order the runs end; ``for`` and ``async for`` alike.

    Each run is yielded once, the moment it ends: FINISHED, or FAILED, LOST
    or CANCELLED (then ``run.error`` says why). A run that will be retried is
    not ended. Runs ending between two wake-ups come out in the order of
    their ``finished`` time.

    Args:
        workflow: Whose change feed wakes the iteration.
        study: The runs' study.
        fetch: Returns the runs (fresh objects of the current transaction).
        timeout: Seconds for the whole iteration, then :class:`WaitTimeout`
            naming the runs not yielded.
        before_check: Called with the ended-badly runs before each check (the
            RunList requeues what an earlier execution left over).
    """

    def __init__(
        self,
        workflow: Session,
        study: str,
        fetch: Callable[[], list[Run]],
        timeout: float | None = None,
        before_check: Callable[[list[Run]], Any] | None = None,
    ):
        self._workflow = workflow
        self._study = study
        self._fetch = fetch
        self._timeout = timeout
        self._before_check = before_check
        self._seen: set[int] = set()
        self._ready: list[int] = []
        self._deadline: float | None = None
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- async ------------------------------------------------------------------

    def __aiter__(self) -> AsCompleted:
        return self

    async def __anext__(self) -> Pair:
        if not self._ready:
            self._ready = await self._next_batch()
        if not self._ready:
            raise StopAsyncIteration
        rid = self._ready.pop(0)
        run = self._workflow.db_for(self._study).run(self._study, rid)
        return run, run.job

    async def _next_batch(self) -> list[int]:
        if not self._started:
            self._started = True
            if self._timeout is not None:
                self._deadline = time.monotonic() + self._timeout
        remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        try:
            return await wait_until(self._workflow, self._check, timeout=remaining, pending=self._pending)
        except WaitTimeout as error:
            raise WaitTimeout(self._timeout or 0.0, error.pending, error.hint) from None

    def _check(self) -> tuple[bool, list[int]]:
        runs = self._fetch()
        if self._before_check is not None:
            bad = [r for r in runs if r.state in TERMINAL and not is_done(r) and r.id not in self._seen]
            if bad and self._before_check(bad):
                runs = self._fetch()
        if {r.id for r in runs} <= self._seen:
            return True, []  # everything was yielded: the iteration ends
        ended = [r for r in runs if r.id not in self._seen and is_ended(r)]
        ended.sort(key=lambda r: (r.finished or _NEVER, r.id))
        ids = list(dict.fromkeys(r.id for r in ended))
        self._seen.update(ids)
        return bool(ids), ids

    def _pending(self) -> list[tuple[str, int, str]]:
        runs = {r.id: r for r in self._fetch() if r.id not in self._seen}
        return [(self._study, rid, run.state) for rid, run in runs.items()]

    # -- sync ---------------------------------------------------------------------

    def __iter__(self) -> AsCompleted:
        return self

    def __next__(self) -> Pair:
        refuse_in_loop("for ... in rl.as_completed()", "async for run, job in rl.as_completed()")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        try:
            return run_blocking(self.__anext__, self._loop)
        except StopAsyncIteration:
            self.close()
            raise StopIteration from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the private event loop of a synchronous iteration (idempotent)."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.close()

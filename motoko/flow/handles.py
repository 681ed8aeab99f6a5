"""Handles on run ids: :class:`RunList`.

``await tm.createTask(x=[1, 2])`` resolves when every run is FINISHED and
raises :class:`~motoko.errors.RunsFailed` as soon as one ends FAILED, LOST or
CANCELLED for good (a run that will be retried is still pending). Waiting is
driven by the change feed: the condition is re-checked within milliseconds of
the commit that may satisfy it, and a slow back-off poll is only a safety net.
Awaiting never blocks the event loop, so independent steps progress together.

A RunList is also a handle in the manner of compute SDKs: synchronous
``result()``, ``as_completed()`` (``for`` and ``async for``), ``status()``,
``progress()``, ``cancel()``, ``cancel_on_exit()``, and ``save()`` /
``RunList.open()`` to reattach from another process later.

A RunList holds ids, fixed when it is made; a lazy selection by constraints,
evaluated afresh each time, is a :class:`~motoko.flow.selection.TaskSelection`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from motoko.errors import RunNotFound, RunsFailed, WaitTimeout
from motoko.flow.compat import RunPairs, split_pairs
from motoko.flow.files import RunListFiles
from motoko.flow.results import RunListResults, check_interval
from motoko.flow.saved import read_saved, write_saved
from motoko.flow.session import Session
from motoko.flow.waiting import (
    AsCompleted,
    EventLoopError,
    HandleError,
    Pair,
    Progress,
    ProgressBar,
    blocking,
    progress_of,
    refuse_in_loop,
    wait_until,
)
from motoko.flow.watching import Displayed
from motoko.study.records import Run
from motoko.study.states import CANCELLED, FAILED, FAILURE, LOST, is_done, is_ended
from motoko.study.table import to_dataframe

log = logging.getLogger(__name__)


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


def requeue_left_over(workflow: Session, study: str, runs: Sequence[Run]) -> list[int]:
    """Requeue (back to CREATED, attempt + 1) the ``runs`` an earlier execution left over.

    Resuming a workflow (``motoko run`` again with the same run name)
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


class RunList(Displayed, RunListResults, RunListFiles, Sequence[Pair]):
    """The runs one ``createTask`` created (or reattached by id).

    Iterating gives ``(run, job)`` pairs; awaiting waits until every run is
    FINISHED and returns the RunList itself. Every query (``status()``,
    ``done()``, ``progress()``...) first commits the workflow's pending
    changes and sees what other processes committed.

    Reads are live: ``rl.run``, iterating and indexing first see what was
    committed since the last read, when the change feed reports a commit.

    ``RunList(pairs)`` (motoko 0.1.4) wraps ``(run, job)`` pairs (or runs) of
    one study read through a Workflow.

    Attributes:
        workflow: The workflow the runs belong to.
        study: The study's name.
        ids: The run ids, in creation order (newest first from ``tm.runs()``).
    """

    def __init__(self, workflow: Any, study: str | None = None, ids: Sequence[int] | None = None, *,
                 resume: bool = True):
        if study is None and ids is None:  # motoko 0.1.4: RunList(pairs)
            workflow, study, ids = split_pairs(workflow)
            resume = False
        self.workflow = workflow
        self.study = study or ""
        self.ids = list(ids or ())
        # A RunList from createTask requeues what an earlier execution of the
        # workflow left over (see requeue_left_over); a reattached one only
        # observes: it reports those runs as they are.
        self._resume = resume
        self._owns_workflow = False

    # -- sequence of (run, job) ------------------------------------------------

    def _runs(self) -> list[Run]:
        if not self.ids:
            return []
        db = self.workflow.db_for(self.study)
        runs = db.study(self.study).runs
        found = [runs.get(i) for i in self.ids]
        missing = [i for i, r in zip(self.ids, found, strict=True) if r is None]
        if missing:
            raise RunNotFound(self.study, missing)
        return found  # type: ignore[return-value]

    def _fresh(self) -> list[Run]:
        if self.ids:
            self.workflow.refresh()
        return self._runs()

    def _live(self) -> list[Run]:
        """The runs as of now: sync the connection if something was committed (cheap otherwise)."""
        if self.ids:
            self.workflow.db_for(self.study).sync()
        return self._runs()

    @property
    def runs(self) -> RunPairs:
        """The ``(run, job)`` pairs (motoko 0.1.4's attribute); ``rl.runs()`` gives the runs alone."""
        return RunPairs((r, r.job) for r in self._live())

    def __iter__(self) -> Iterator[Pair]:
        return iter([(r, r.job) for r in self._live()])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: Any) -> Any:
        pairs = list(self)
        return pairs[index]

    def __repr__(self) -> str:
        return f"<RunList {self.study} {self.ids[:10]}{'...' if len(self.ids) > 10 else ''}>"

    def _display_title(self) -> str:
        return f"RunList {self.study}"

    def _display_runs(self) -> list[Run]:
        return self._runs()

    def _subset(self, runs: list[Run]) -> RunList:
        return RunList(self.workflow, self.study, [r.id for r in runs], resume=self._resume)

    @property
    def run(self) -> Run:
        """The only run of a one-run task (``rl.run.y``).

        Raises:
            HandleError: when the RunList holds more or fewer than one run.
        """
        unique = list(dict.fromkeys(self.ids))
        if len(unique) != 1:
            shown = ", ".join(str(i) for i in unique[:10]) + (", ..." if len(unique) > 10 else "")
            raise HandleError(
                f"rl.run needs exactly one run; this RunList of {self.study!r} has {len(unique)}"
                + (f" ({shown})" if unique else ""),
                hint="iterate with `for run, job in rl`, or index with rl[0]",
            )
        return self._live()[0]

    # -- state -------------------------------------------------------------------

    def to_dataframe(self, quantities: Any = None) -> Any:
        """One row per run: job parameters, run fields, last value of each quantity.

        See :func:`motoko.study.table.to_dataframe` (imported lazily: pandas
        is only loaded when a table is asked for).
        """
        return to_dataframe(self, quantities)

    def status(self) -> dict[str, int]:
        """Return the number of runs per state (each run counted once)."""
        counts: dict[str, int] = {}
        for run in {r.id: r for r in self._fresh()}.values():
            counts[run.state] = counts.get(run.state, 0) + 1
        return counts

    def done(self) -> bool:
        """True when every run has ended: FINISHED, FAILED, LOST or CANCELLED (does not wait).

        ``done()`` and no ``failed()`` nor ``cancelled()`` means every run finished.
        """
        return all(is_ended(r) for r in self._fresh())

    def progress(self) -> Progress:
        """Counts by outcome, the finished fraction and each run's own ``set_progress``."""
        return progress_of(self._fresh())

    def failed(self) -> list[Pair]:
        """Return the runs that ended FAILED or LOST (``run.error`` says why)."""
        return [(r, r.job) for r in self._fresh() if r.state in (FAILED, LOST)]

    def cancelled(self) -> list[Pair]:
        """Return the runs that ended CANCELLED."""
        return [(r, r.job) for r in self._fresh() if r.state == CANCELLED]

    def partial(self) -> RunList:
        """The runs that have ended now (whatever the outcome), as a RunList; does not wait."""
        return self._subset([r for r in self._fresh() if is_ended(r)])

    # -- waiting ----------------------------------------------------------------

    def _requeue(self, failures: list[Run]) -> list[int]:
        if not self._resume:
            return []
        return requeue_left_over(self.workflow, self.study, failures)

    def _check(self) -> tuple[bool, RunList]:
        return self._check_runs(self._runs())

    def _check_runs(self, runs: list[Run]) -> tuple[bool, RunList]:
        failures = [r for r in runs if r.state in FAILURE]
        if failures and self._requeue(failures):
            runs = self._runs()
            failures = [r for r in runs if r.state in FAILURE]
        if failures:
            raise RunsFailed([(self.study, r.id, r.state, r.exit_code, r.error) for r in failures])
        return all(is_done(r) for r in runs), self

    def _pending(self) -> list[tuple[str, int, str]]:
        unfinished = {r.id: r for r in self._runs() if not is_done(r)}
        return [(self.study, rid, r.state) for rid, r in unfinished.items()]

    async def wait(self, timeout: float | None = None, progress: bool = False, *,
                   initial_interval: float | None = None) -> RunList:
        """Wait until every run is FINISHED; return the RunList.

        Args:
            timeout: Seconds to wait at most (None: no limit).
            progress: Show a tqdm progress bar on stderr while waiting.
            initial_interval: Accepted for ChemCloud compatibility (seconds
                between polls); motoko wakes on commits instead.

        Raises:
            RunsFailed: as soon as a run ends FAILED, LOST or CANCELLED for good.
            WaitTimeout: (a ``TimeoutError``) after ``timeout`` seconds, naming
                the unfinished runs.
        """
        check_interval(initial_interval)
        if not self.ids:
            return self
        if not progress:
            return await wait_until(self.workflow, self._check, timeout=timeout, pending=self._pending)
        bar = ProgressBar(self.study, len(set(self.ids)))

        def check() -> tuple[bool, RunList]:
            runs = self._runs()
            bar.show(progress_of(runs))
            return self._check_runs(runs)

        try:
            return await wait_until(self.workflow, check, timeout=timeout, pending=self._pending)
        finally:
            bar.close()

    def __await__(self) -> Any:
        return self.wait().__await__()

    def result(self, timeout: float | None = None, progress: bool = False, *, values: bool = False,
               initial_interval: float | None = None) -> Any:
        """Block until every run is FINISHED; return the RunList (the synchronous ``await``).

        Runs the wait on a private event loop, so it works in plain scripts,
        and in a helper thread under a running loop (a notebook cell), where
        the kernel's interrupt stops it. With ``values=True`` (ChemCloud),
        waits until every run has *ended* and returns :meth:`outputs`: each
        run's output in task order, a ``RunFailure`` in place of a failed one
        (nothing raises for it).

        Raises:
            RunsFailed, WaitTimeout: as :meth:`wait`.
            EventLoopError: inside a workflow step, an event action or a
                launcher (it would stall them); use ``await rl.wait()`` there.
        """
        check_interval(initial_interval)
        if values:
            return self._result_values(timeout)
        return blocking("rl.result()", "await rl.wait()", lambda: self.wait(timeout, progress))

    def as_completed(self, timeout: float | None = None) -> AsCompleted:
        """Iterate ``(run, job)`` in the order the runs end: ``for`` or ``async for``.

        Every run is yielded once, as soon as it is FINISHED, FAILED, LOST or
        CANCELLED (``run.error`` tells why it failed); nothing is dropped and
        nothing raises for a failed run. A run that will be retried is not
        yielded until its last attempt ends.

        Raises:
            WaitTimeout: when ``timeout`` seconds pass before every run ended,
                naming those not yielded yet.
            EventLoopError: iterating with a plain ``for`` inside a workflow
                step, an event action or a launcher.
        """
        return AsCompleted(self.workflow, self.study, self._runs, timeout, before_check=self._requeue)

    # -- cancelling ----------------------------------------------------------------

    def _request_cancel(self) -> None:
        self._fresh()  # unknown ids raise RunNotFound before anything is written
        db = self.workflow.db_for(self.study)
        ids = list(dict.fromkeys(self.ids))

        def change() -> None:
            study = db.study(self.study)
            for rid in ids:
                run = study.runs.get(rid)
                if run is not None:
                    study.cancel(run)

        db.transact(change, what=f"cancel runs of {self.study!r}")

    def _cancel_report(self) -> dict[int, bool]:
        return {r.id: r.state == CANCELLED for r in self._fresh()}

    async def _until_ended(self, timeout: float) -> dict[int, bool]:
        def check() -> tuple[bool, None]:
            return all(is_ended(r) for r in self._runs()), None

        with contextlib.suppress(WaitTimeout):
            await wait_until(self.workflow, check, timeout=timeout)
        return self._cancel_report()

    def cancel(self, wait_timeout: float | None = None) -> dict[int, bool]:
        """Cancel the runs; return ``{run id: is it CANCELLED}``.

        CREATED runs end CANCELLED at once. Launched and running ones get a
        stop request (``run.should_stop()`` turns True inside them); their
        launcher gives them ``cancel_grace`` seconds to stop on their own, then
        TERM, then KILL, and settles them CANCELLED. With ``wait_timeout``, waits up to that many
        seconds for them to end. Idempotent and harmless on ended runs: a
        FINISHED or FAILED run is left alone and reported False.

        Raises:
            RunNotFound: for ids that do not exist (nothing is cancelled).
            EventLoopError: ``wait_timeout`` inside a workflow step, an event
                action or a launcher; ``await rl.cancel_async(wait_timeout=...)`` there.
        """
        if wait_timeout is not None:
            refuse_in_loop("rl.cancel(wait_timeout=...)", "await rl.cancel_async(wait_timeout=...)")
        self._request_cancel()
        if wait_timeout is None:
            return self._cancel_report()
        return blocking("rl.cancel(wait_timeout=...)", "await rl.cancel_async(wait_timeout=...)",
                        lambda: self._until_ended(wait_timeout))

    async def cancel_async(self, wait_timeout: float | None = None) -> dict[int, bool]:
        """:meth:`cancel` for async code: the wait does not block the event loop."""
        self._request_cancel()
        if wait_timeout is None:
            return self._cancel_report()
        return await self._until_ended(wait_timeout)

    @contextlib.contextmanager
    def cancel_on_exit(self, wait_timeout: float | None = None) -> Iterator[RunList]:
        """Cancel the runs if the ``with`` block raises or is interrupted (Ctrl-C).

        Leaving the block normally changes nothing. ``wait_timeout`` is
        honoured outside motoko's own loops only (inside a step or an
        action, the stop requests are sent and the block's exception
        propagates at once).
        """
        try:
            yield self
        except BaseException:
            try:
                self._request_cancel()
                if wait_timeout is not None:
                    with contextlib.suppress(EventLoopError):
                        self.cancel(wait_timeout)
            except Exception as exc:  # never hide the exception that left the block
                log.warning("could not cancel the runs of %r on exit: %s", self.study, exc)
            raise

    # -- persistence -----------------------------------------------------------------

    def save(self, path: str | Path | None = None) -> Path:
        """Write the handle as JSON (workflow file, run name, study, ids); return the path.

        Without a path it goes to ``./STUDY-FIRST-LAST.runlist.json``.
        ``RunList.open(path)`` reattaches to the same runs from any process
        that can reach the workflow's database. The file is replaced
        atomically.
        """
        return write_saved(
            path if path is not None else self.default_save_path(),
            workflow=self.workflow.config_path,
            run_name=self.workflow.run_name,
            study=self.study,
            ids=self.ids,
        )

    @classmethod
    def open(cls, path: str | Path) -> RunList:
        """Reattach to the runs a :meth:`save` wrote; the RunList owns the Session it opens (:meth:`close`).

        Raises:
            HandleError: the file is missing, not JSON, or not a saved RunList.
            RunNotFound: naming saved ids that no longer exist.
        """
        data = read_saved(Path(path))
        workflow = Session(data["workflow"], run_name=data["run_name"])
        try:
            handle = cls.from_ids(workflow, data["study"], data["ids"])
        except BaseException:
            workflow.close()
            raise
        handle._owns_workflow = True
        return handle

    @classmethod
    def from_ids(cls, workflow: Session | str | Path, study: str, ids: Sequence[int]) -> RunList:
        """Reattach to existing runs by id (``workflow`` may be a motoko.yaml path).

        A reattached RunList observes: runs an earlier execution left FAILED
        or CANCELLED are reported as such, never requeued. Given a path, it
        opens a :class:`~motoko.flow.session.Session` of its own: the
        database side of a workflow is all a handle needs.

        Raises:
            RunNotFound: naming every id that does not exist in ``study``.
            UnknownNameError: for a study the workflow does not have.
        """
        owned = not isinstance(workflow, Session)
        if not isinstance(workflow, Session):
            workflow = Session(workflow)
        try:
            name = workflow.config.resolve(study)
            handle = cls(workflow, name, [int(i) for i in ids], resume=False)
            handle._fresh()  # raises RunNotFound naming the missing ids
        except BaseException:
            if owned:
                workflow.close()
            raise
        handle._owns_workflow = owned
        return handle

    def close(self) -> None:
        """Close the Session that :meth:`open` or :meth:`from_ids` opened (else nothing)."""
        if self._owns_workflow:
            self.workflow.close()
            self._owns_workflow = False


__all__ = ["RunList", "left_over", "requeue_left_over"]

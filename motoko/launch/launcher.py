"""The launcher: claim → stage → execute → heartbeat → settle.

A launcher serves some studies of one database. Each *cycle* is a single
transaction that, together:

* marks the runs it just started RUNNING,
* records what its runs wrote over the run channel (see :mod:`motoko.launch.channel`),
* settles the runs whose process ended (FINISHED / FAILED / CANCELLED / LOST),
* refreshes the heartbeat of the runs it owns when one is due,
* claims CREATED runs (CREATED → LAUNCHED) for its free slots.

Claims are exactly-once because a claim changes the run's state, and two
transactions changing a run's state always conflict (see
``Run._p_resolveConflict``): the loser retries on fresh data and sees the run
LAUNCHED. Between cycles the launcher sleeps until something happens: a
commit anywhere (pushed by ZEO through the change feed), a process exiting, or
a slow safety-net poll. An idle launcher therefore wakes only every ``poll``
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from motoko.errors import MotokoError, ServerError
from motoko.launch.adoption import Adoption, record_submitted
from motoko.launch.cancelling import stop_cooperatively
from motoko.launch.channel import RunChannel
from motoko.launch.claiming import Deadline, Shares
from motoko.launch.claims import Claimed, Claims
from motoko.launch.executors.base import Executor, Launch, Outcome
from motoko.launch.handoff import Handoff
from motoko.launch.launcher_options import LauncherOptions
from motoko.launch.messages import ENV_CHANNEL
from motoko.launch.pacing import Pacing
from motoko.launch.processes import stop_orphans
from motoko.launch.run_dirs import shebang_command
from motoko.launch.serving import LauncherReport
from motoko.launch.spares import Spares
from motoko.launch.staging import TemplateCache, file_kind, plan_stage, run_environment
from motoko.study.blocking import motoko_loop
from motoko.study.database import StudyDB
from motoko.study.schema import StudySchema

log = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: Seconds a busy launcher waits for more outcomes to record them in one commit.
BATCH_WINDOW = 0.003
#: Seconds a launcher waits for runs it just started to end before marking them RUNNING.
START_WINDOW = 0.05
#: Seconds, and outcomes, a launcher with claimed runs still to start holds outcomes
#: back at most, so that one commit settles many short runs.
HOLD_WINDOW = 0.3
HOLD_OUTCOMES = 32


class Launcher(Claims):
    """Executes the CREATED runs of some studies through an executor.

    This class is the cycle (the loop, its one transaction, starting and
    cancelling runs); it is built on :class:`~motoko.launch.claims.Claims`
    (what it claims), :class:`~motoko.launch.recording.Recording` (what it
    records of its runs and itself) and :class:`~motoko.launch.serving.Served`
    (``serve``, ``serve_async``, ``stop``).

    Args:
        db: The launcher's own database connection (not shared).
        studies: Study name → schema read from its folder on this host.
        executor: Where runs execute.
        options: Behaviour (bounded modes, intervals).
    """

    def __init__(
        self,
        db: StudyDB,
        studies: Mapping[str, StudySchema],
        executor: Executor,
        options: LauncherOptions | None = None,
    ):
        self.db = db
        self.studies = dict(studies)
        self.executor = executor
        self.options = options or LauncherOptions()
        self.id = f"{self.options.machine_name}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.report = LauncherReport()
        self._queue: list[Claimed] = []  # claimed, not yet started
        self._ahead: dict[tuple[str, int], Launch] = {}  # queued runs prepared, their directories written ahead
        self._low_water = executor.max_parallel  # see Claims
        self._owned: dict[tuple[str, int], bytes] = {}  # claimed or running → oid
        self._started: list[tuple[str, int]] = []  # started since the last cycle
        self._unsettled: list[Outcome] = []  # ended, not yet recorded
        self._stopping = False
        self._cancelling: set[tuple[str, int]] = set()  # asked to stop, given cancel_grace
        self._wake: asyncio.Event | None = None
        self._changed: set[bytes] = set()
        #: The arrival counters of the studies served (None: some study has none yet).
        self._arrivals: frozenset[bytes] | None = None
        self._external = True  # someone else committed since our last cycle
        self._last_heartbeat = 0.0
        self._last_lost_check = 0.0
        self._idle_since: float | None = None
        self._cache = TemplateCache()
        self._claimed_total = 0
        #: Where this launcher's local runs send their writes (see motoko.launch.channel).
        self.channel = RunChannel(self.id)
        self._adoption = Adoption(executor, self.id, self._wake_up)
        self._shares = Shares(self.id, self.options.lost_after)
        self._chooser = random.Random(self.id)  # which other launcher's part to steal from
        self._pacing = Pacing(executor.max_parallel)  # how long runs take: how far ahead to claim
        self._deadline = Deadline(self.options.walltime_end, self.options.walltime_margin) if self.options.walltime_end else None
        self._hungry = True  # room for claims: only then do others' commits wake us
        self._claimed_all = False  # the last cycle claimed all it wanted: more may wait
        self._server_gone = False  # stopping, and the server lost for longer than it waits
        self._committer: ThreadPoolExecutor | None = None
        #: Runs its workflow claimed for it in their insert (see motoko.launch.insert_claims).
        self.handoff = Handoff()
        #: Run directories made ahead, for an executor that stages in its starter threads (local runs).
        self._spares = Spares(self.id, self.options.machine_name) if executor.stages else None
        #: This process's environment as last seen (undecoded), and the runs' shared part built from it.
        self._env_cache: tuple[Any, dict[str, str]] | None = None

    # -- public ------------------------------------------------------------

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _own_threads(self) -> list[int]:
        """Cycles commit from a thread of their own (see :meth:`_starting_meanwhile`):
        its commits are the launcher's own, not news to wake it."""
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="motoko-commit")
        return [await asyncio.get_running_loop().run_in_executor(self._committer, threading.get_ident)]

    async def _opening(self) -> None:
        """Start the executor (it wakes us when a run ends) and, for local runs, their channel."""
        assert self._wake is not None
        self.executor.wake = self._wake
        await self.executor.start()
        if self.executor.shares_host:
            await self.channel.start(self._wake)

    async def _serving(self) -> None:
        with motoko_loop():  # runs are served from this loop: refuse synchronous waits
            await self._loop()

    async def _closing(self) -> None:
        self.handoff.wake = None  # no more claims made for it
        if self._committer is not None:
            self._committer.shutdown(wait=True)
        await self.channel.close()
        await self._adoption.close()
        await self.executor.close()
        if self._spares is not None:
            self._spares.close()
        if not self._server_gone:  # else its record stays silent: others see it as dead
            self._unregister()

    # -- the loop ------------------------------------------------------------

    def _on_change(self, loop: asyncio.AbstractEventLoop) -> Any:
        wake = self._wake
        assert wake is not None

        def wake_up() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

        def listener(oids: frozenset[bytes] | None) -> None:
            landed = self.handoff.commit_landed()  # None: not a commit claiming runs for us
            if not landed:  # a commit that holds only runs claimed for us needs no claiming cycle
                self._external = True
            if oids:
                self._changed |= oids
            if landed is None and oids is not None and oids.isdisjoint(self._owned.values()):
                # A launcher with no room cannot take new work: only a change to
                # one of its own runs (a stop request) is worth waking up for.
                if not self._hungry:
                    return
                # One that found less than it wanted can only be fed by runs
                # arriving (inserted, queued again): others' claims and
                # settlements, most commits among many launchers, leave it be.
                # (One that claimed all it wanted is still woken: it then tops
                # up its queue on the spot; leaving it to its own runs' ends
                # cost 8 one-slot launchers ~10 % of their rate.)
                if not self._claimed_all and self._arrivals is not None and oids.isdisjoint(self._arrivals):
                    return
            wake_up()

        self.handoff.wake = wake_up
        return listener

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            # Fill free slots from runs already claimed before committing: the
            # processes then run while this cycle's transaction travels.
            await self._start_queued()
            await self._gather_outcomes()
            # Whatever woke the loop until now is this iteration's to handle:
            # the starts and ends drained here, others' commits, run writes
            # and adoption verdicts in its cycle, handed-off runs, cancels and
            # a stop after it. Left set, a wake from a run that started and
            # ended within _start_queued (read together with its start, as
            # on a loaded machine) made the loop run an empty cycle after the
            # settle. What happens from here on still wakes the next one.
            self._wake.clear()
            outcomes = self._drain_outcomes()
            if self._started and not outcomes and not self._must_commit():
                # Runs just started and nothing else to record: give them a
                # moment to end, so that marking them RUNNING and settling a
                # short one share one commit (every commit wakes every client).
                self._warm(self._started)  # (the wake was cleared above: an end sets it)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), START_WINDOW)
                # The end that woke it is drained now: left set, the wake made
                # the loop run an empty cycle right after this one's settle,
                # taking the GIL from the workflow awaiting that settle (an
                # embedded launcher): 0.1-0.3 ms of every hop.
                self._wake.clear()
                outcomes = self._drain_outcomes()
            claimed = await self._cycle(outcomes)
            await self._start_queued()
            await self._handle_cancels()
            if self._should_exit():
                break
            if self._claimed_all and (claimed or (outcomes and not self._unsettled)):
                # More may be claimable at once. One that claimed fewer than it
                # wanted is woken by news instead (see _on_change): cycling at
                # once after a settle ran an empty cycle, as above.
                continue
            if self._started:
                # Runs just started: give them a moment to end, so that marking
                # them RUNNING and settling a short one share one commit (every
                # commit wakes every client of the server).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), START_WINDOW)
                continue
            await self._sleep()

    def _must_commit(self) -> bool:
        """Whether a cycle now has more to do than mark runs RUNNING (claims, writes, others' changes)."""
        return self._external or self._claimed_all or self._stopping or bool(self.channel.pending() or self.executor.submitted)

    async def _gather_outcomes(self) -> None:
        """Under a stream of short runs, let outcomes pile up per commit.

        Only when more claimed runs wait and others execute (throughput):
        a lone run's settlement (latency) is never delayed. While the queue
        holds more than its low water (see
        :class:`~motoko.launch.claims.Claims`), the free slots are refilled from
        it without a commit, and outcomes are held back (up to
        :data:`HOLD_WINDOW` s or :data:`HOLD_OUTCOMES`); then the commit
        settles them and claims the next batch before the queue runs dry.
        """
        if not self._queue or not self.executor.running:
            return
        if len(self._queue) > self._low_water:
            await self._hold_outcomes()
            return
        if self.executor.outcomes.qsize() > 1:
            return
        deadline = asyncio.get_running_loop().time() + BATCH_WINDOW
        while self.executor.outcomes.qsize() < len(self.executor.running) + 1:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.0005))
            await self._start_queued()

    async def _hold_outcomes(self) -> None:
        """Start queued runs as slots free, holding outcomes back (see :meth:`_gather_outcomes`)."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOLD_WINDOW
        # Others' commits (many launchers) do not end the hold: only a change to our own runs (a stop request).
        while len(self._queue) > self._low_water and not self._stopping and self._changed.isdisjoint(self._owned.values()):
            if self.executor.outcomes.qsize() >= HOLD_OUTCOMES or not self.executor.running or self.channel.awaited():
                # A run waiting for a commit (at its exit, its last writes') ends
                # the hold: held, Python runs using the channel took 0.3 s each.
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
            await self._start_queued()

    async def _sleep(self) -> None:
        assert self._wake is not None
        timeout = self.options.poll
        if self._owned:
            timeout = min(timeout, self.options.heartbeat)
        if self.options.idle_exit is not None:
            timeout = min(timeout, self.options.idle_exit)
        if self._held_until is not None:
            timeout = min(timeout, max(0.0, self._held_until - time.monotonic()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _should_exit(self) -> bool:
        busy = bool(self._owned) or self._adoption.busy
        if self._stopping:
            return not busy or self._server_gone
        opts = self.options
        if opts.max_runs is not None and self.report.executed >= opts.max_runs and not busy:
            return True
        if opts.once and not busy and self._claimed_total > 0:
            return True
        if busy:
            self._idle_since = None
            return False
        if self._deadline is not None and self._deadline.closed():
            return True  # a pilot whose remaining time fits no run leaves
        if opts.once and not self._claimable():
            return True
        if opts.idle_exit is not None:
            now_ = time.monotonic()
            if self._idle_since is None:
                self._idle_since = now_
            return now_ - self._idle_since >= opts.idle_exit
        return False

    def _drain_outcomes(self) -> list[Outcome]:
        """Outcomes not yet recorded; they stay queued until a cycle commits them."""
        queue = self.executor.outcomes
        # Starts first: a run that started and ended between two cycles is
        # marked RUNNING before it is settled, so it keeps its start time.
        self._started.extend(self.executor.started)
        self.executor.started.clear()
        while not queue.empty():
            outcome = queue.get_nowait()
            self._pacing.ended(outcome.key, outcome.succeeded, outcome.ended)
            self._unsettled.append(outcome)
        # A run's last writes, still in its channel, are recorded before or with its outcome.
        settleable = self._unsettled[: self.channel.settleable(self._unsettled)]
        return settleable[: self._settleable_now(settleable)]

    # -- one transaction per cycle ----------------------------------------------

    async def _cycle(self, outcomes: list[Outcome]) -> list[Claimed]:
        """Settle, heartbeat and claim in one transaction; return new claims."""
        self.report.cycles += 1
        started = list(self._started)
        writes = self.channel.pending()
        # A cycle that commits anyway tops up a queue of claimed runs run low,
        # so a slot that frees never waits for a claim's commit (one commit per run).
        topping_up = bool(outcomes or started or writes)
        giving = self._to_give_back()  # off the queue first: the room to claim counts without them
        given: list[Claimed] = []  # what the committed transaction gave back
        want = self._claim_room(topping_up=topping_up)
        # Only a launcher with an idle slot takes from other launchers' parts, and
        # only for its idle slots: busy ones topping up (or claiming ahead) would
        # crowd the last runs of a study.
        steal = max(0, self.executor.free_slots() - len(self._queue))
        beat = bool(self._owned) and time.monotonic() - self._last_heartbeat >= self.options.heartbeat
        check_lost = (
            time.monotonic() - self._last_lost_check >= self._lost_check_interval() or self._adoption.has_verdicts
        )
        submitted = list(self.executor.submitted)
        wanted = [want]  # what the committed transaction wanted (it may retry)
        # Started and ended since the last commit, with no write of their own
        # in between: settled in one move through RUNNING (see Recording._settle).
        written = {write.peer.key for write in writes}
        ending = {outcome.key for outcome in outcomes}
        passing = frozenset(key for key in started if key in ending and key not in written)

        def change() -> list[Claimed]:
            self._prefetch_state_records()
            if self._record is None:
                self._register()
            record_submitted(self.db, self.id, submitted)
            self._show_note()
            self._mark_running(started, passing)
            self.channel.apply(self.db, writes)  # before settling: a run's own final state wins
            self._settle(outcomes, passing)
            given[:] = self._give_back(giving) if giving else []
            if beat:
                self._heartbeat()
            if check_lost:
                self._detect_lost()
            # Again on what this transaction sees: a launcher not woken by
            # others' commits (see _on_change) decided ``want`` on an older
            # view, e.g. alone before others registered (and claimed deep).
            room = min(want, self._claim_room(topping_up=topping_up)) if want > 0 else 0
            wanted[0] = room
            if outcomes and self._record is not None and (beat or self._settles_all(outcomes)):
                # With the heartbeat, or once idle: every other launcher re-reads
                # this record to rank itself, and a write per cycle made each
                # of them load it again (executed is exact again at stop).
                self._record.executed = self.report.executed + len(outcomes)
            return self._claim(room, steal) if room > 0 else []

        try:
            # Only a commit by someone else needs a server round trip to be
            # seen; after our own commit the connection is already current.
            external, self._external = self._external or self.handoff.take_stale(), False

            def commit() -> list[Claimed]:
                if external:
                    self.db.catch_up()  # a round trip only for other processes' commits
                return self.db.transact(change, what="record run states", on_conflict=self._conflicted)

            if check_lost or not (self._queue or self.executor.running):
                # Adoption's verdicts change on this loop: it waits meanwhile. With
                # nothing to start meanwhile (a lone run: latency), no thread hop.
                claimed = commit()
            else:
                claimed = await self._starting_meanwhile(commit)
        except MotokoError as exc:
            # Nothing was recorded: outcomes and starts stay queued for the next cycle.
            log.error("launcher cycle failed: %s", exc)
            if self._stopping and isinstance(exc, ServerError) and self._owned:
                # Asked to stop and its server gone for good: waiting would only
                # repeat this. Its runs stay on record as they are, to be adopted
                # or settled from their exit status by the next launcher.
                log.warning("leaving %d run(s) to the next launcher: the server is gone", len(self._owned))
                self._server_gone = True
            if giving:  # still ours: given back by a later cycle
                self._queue.extend(giving)
                self._claimed_alone = True
            return []
        self._started = self._started[len(started) :]
        self.channel.committed(writes)
        del self.executor.submitted[: len(submitted)]
        self._unsettled = self._unsettled[len(outcomes) :]
        self._account(outcomes)
        if beat:
            self._last_heartbeat = time.monotonic()
        if check_lost:
            self._last_lost_check = time.monotonic()
            stop_orphans(self._adoption.orphans)
            for key, oid in self._adoption.after_commit():
                self._owned[key] = oid
        if giving:
            for item in given:
                self._owned.pop((item.study, item.run_id), None)
            self._claimed_total -= len(given)
            self.report.given_back += len(given)
            self._queue.extend(item for item in giving if item not in given)  # changed meanwhile: still ours
        for item in claimed:
            self._owned[(item.study, item.run_id)] = item.oid
        self._queue.extend(claimed)
        self._claimed_alone = self._claimed_alone or bool(claimed and self._alone)
        self._claimed_total += len(claimed)
        self._hungry = self._claim_room() > 0
        # Fewer than wanted: nothing more is claimable until a commit wakes us, so
        # the runs just started may end first and share their RUNNING mark's commit.
        self._claimed_all = len(claimed) >= wanted[0]
        return claimed

    async def _starting_meanwhile(self, commit: Callable[[], list[Claimed]]) -> list[Claimed]:
        """Run ``commit`` in a thread; meanwhile start claimed runs as slots free.

        A commit waits on the server, long on a loaded machine, and runs
        already claimed need none to start. The thread alone uses the
        database connection meanwhile: this loop only starts processes and
        hears of exits (whatever woke it wakes the next cycle too).
        """
        assert self._wake is not None
        work = asyncio.get_running_loop().run_in_executor(self._committer, commit)
        woke = self._wake.is_set()
        while not work.done():
            self._wake.clear()
            woken = asyncio.ensure_future(self._wake.wait())
            either: set[asyncio.Future[Any]] = {work, woken}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            woke = woke or self._wake.is_set()
            await self._start_queued()
        if woke:
            self._wake.set()
        return work.result()

    def _lost_check_interval(self) -> float:
        return max(0.2, min(self.options.lost_after, *(s.lost_after or self.options.lost_after for s in self.studies.values())) / 4)

    def _account(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self._owned.pop(outcome.key, None)
            self.channel.forget(outcome.key)
            self.report.executed += 1
            if outcome.cancelled:
                self.report.cancelled += 1
            elif outcome.succeeded:
                self.report.finished += 1
            else:
                self.report.failed += 1

    # -- starting and cancelling ----------------------------------------------------

    async def _start_queued(self) -> None:
        handed = self.handoff.absorb(self._owned)
        if handed:
            self._queue.extend(handed)
            self._claimed_total += len(handed)
        while self._queue and self.executor.free_slots() > 0:
            item = self._queue.pop(0)
            try:
                launch = self._ahead.pop((item.study, item.run_id), None) or self._prepare(item)
                await self.executor.submit(launch)
            except (MotokoError, OSError) as exc:
                log.warning("run %s.%s could not start: %s", item.study, item.run_id, exc)
                self._unsettled.append(
                    Outcome(item.study, item.run_id, exit_code=None, reason=f"could not start: {exc}")
                )
                if self._wake is not None:
                    self._wake.set()
                continue
            self._pacing.started((item.study, item.run_id))
            if not self.executor.reports_start:
                self._started.append((item.study, item.run_id))
        self._stage_ahead()
        if self._spares is not None:
            self._spares.replenish()

    def _stage_ahead(self) -> None:
        """Prepare the runs next in the queue, one per slot, and have their directories written now.

        Why: under a stream of short runs, a slot that frees otherwise
        waits for the next run's directory to be rendered and written
        before its process can be asked for. A run whose preparation fails
        here is left to its start, which reports the failure.
        """
        if not self.executor.stages:
            return
        for item in self._queue[: self.executor.max_parallel]:
            key = (item.study, item.run_id)
            if key in self._ahead:
                continue
            try:
                launch = self._prepare(item)
            except (MotokoError, OSError):
                continue
            self._ahead[key] = self.executor.stage_ahead(launch)

    def _prepare(self, item: Claimed) -> Launch:
        schema = self.studies[item.study]
        run_dir = Path(item.run_json["run"]["run_path"])
        folder = schema.folder or Path.cwd()
        staged = plan_stage(
            run_dir, folder, schema.exec_file, schema.config_files, item.values, item.run_json, cache=self._cache
        )
        # An executor that stages in its starter thread writes the directory there.
        def stage() -> bool:  # writes it; says whether it created the directory
            return staged.write_reporting(self._spares)[1]

        if not self.executor.stages:
            staged.write()
        shared = self._shared_env()
        env = run_environment(item.values, {**shared, **self._own_env(item, run_dir)})
        attempt = int(item.run_json["run"]["attempt"])
        command = _command(staged.exec_path, staged.exec_head)
        writes = stage if self.executor.stages else None
        return Launch(item.study, item.run_id, run_dir, command, env, item.nproc, item.options, attempt, writes, shared)

    def _shared_env(self) -> dict[str, str]:
        """The environment all our runs share: ours, with the launcher's and database's names.

        Built again only when this process's environment changed (a workflow
        may set a variable between two steps): copying ``os.environ`` decodes
        every variable, about a tenth of a trivial run's start.
        """
        raw = getattr(os.environ, "_data", None)  # its undecoded mapping: comparing it decodes nothing
        cached = self._env_cache
        if cached is not None and raw is not None and raw == cached[0]:
            return cached[1]
        env = dict(os.environ)
        env.update(
            MOTOKO_DB=self.options.db_address or str(self.db.address),
            MOTOKO_WORKFLOW=self.options.workflow_file or "",
            MOTOKO_LAUNCHER=self.id,
            MOTOKO_PYTHON=sys.executable,
        )
        env.pop(ENV_CHANNEL, None)
        paths = [p for p in (env.get("PYTHONPATH"), _PACKAGE_ROOT) if p]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        self._env_cache = (dict(raw) if raw is not None else None, env)
        return env

    def _own_env(self, item: Claimed, run_dir: Path) -> dict[str, str]:
        """What a run's environment holds beyond :meth:`_shared_env` (its parameters come on top)."""
        env = {
            "MOTOKO_RUN_ID": str(item.run_id),
            "MOTOKO_ATTEMPT": str(item.run_json["run"]["attempt"]),
            "MOTOKO_JOB_ID": str(item.values["job_id"]),
            "MOTOKO_STUDY": item.study,
            "MOTOKO_RUN_DIR": str(run_dir),
        }
        types = {name: ftype.name for name, ftype in self.studies[item.study].run_fields.items()}
        env.update(self.channel.environment((item.study, item.run_id), item.run_json, types))
        return env

    async def _handle_cancels(self) -> None:
        """Cancel owned runs whose stop was requested (only changed ones are read)."""
        changed, self._changed = self._changed, set()
        if not changed or not self._owned:
            return
        for key, oid in list(self._owned.items()):
            if oid not in changed:
                continue
            _, run = self._run_of(key)
            if run is None or not run.stop_requested:
                continue
            if key in self.executor.running:
                self.channel.stop(key)
                if key not in self._cancelling:  # asked once; later changes to the run are not new requests
                    self._cancelling.add(key)
                    task = stop_cooperatively(self.executor, key, self.options.cancel_grace)
                    asyncio.get_running_loop().create_task(task).add_done_callback(
                        lambda _, key=key: self._cancelling.discard(key))  # type: ignore[misc]
            else:
                self._queue = [c for c in self._queue if (c.study, c.run_id) != key]
                self._ahead.pop(key, None)
                self._unsettled.append(Outcome(key[0], key[1], cancelled=True))
                if self._wake is not None:
                    self._wake.set()


def _command(exec_path: Path, head: bytes) -> tuple[str, ...]:
    """How to execute a staged exec file (whose first bytes are ``head``): its shebang, else by kind."""
    if head.startswith(b"#!"):
        return shebang_command(head, exec_path) or (str(exec_path),)
    kind = file_kind(exec_path.name, head.decode("utf-8", errors="replace"))
    if kind == "python":
        return (sys.executable, str(exec_path))
    return ("bash", str(exec_path))

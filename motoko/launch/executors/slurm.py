"""Run staged runs as SLURM batch jobs: one job per run, or job arrays of many.

Submitting
    Each attempt of a run gets a small bash script in the run's directory
    (``motoko-slurm.<attempt>.sh``) that exports the run's variables (each
    value ``shlex``-quoted, so a value is never shell-interpreted), checks
    the directory's attempt fence (see :mod:`motoko.launch.attempts`: a
    stale task of an earlier attempt exits without running anything), runs
    the command with stdout and stderr in the run's ``stdout``/``stderr``
    files, and records the exit status in ``exit.<attempt>``. With
    ``bundle_size`` > 1, runs submitted within a short window and sharing
    sbatch options become *one* job array: 10,000 runs are then a few
    hundred scheduler jobs, not 10,000. Before an attempt is submitted, an
    earlier attempt of the run that SLURM still runs is cancelled, so two
    attempts never execute at once.

Tracking
    A background task asks ``squeue`` (one call for all our jobs) every
    ``poll`` seconds. A run stays LAUNCHED while its job waits in the queue
    and becomes RUNNING once squeue shows it started. ``--states=all`` keeps
    ended jobs visible for the cluster's ``MinJobAge``, so their final state
    (COMPLETED, TIMEOUT, CANCELLED, PREEMPTED, NODE_FAIL...) is known
    without accounting. The ``exit.<attempt>`` file gives the exit status,
    so even a cluster without ``sacct`` reports failures exactly. A job
    that left the queue unseen is looked up with ``sacct`` (``sacct -c``
    when only job completion logging is configured); found nowhere and
    without an exit status, it is reported LOST, never left RUNNING.

Cluster limits
    ``scontrol show config`` is read once: arrays are split to fit the
    cluster's ``MaxArraySize``, and no more runs than ``MaxJobCount`` are
    in flight. A refusal that passes (``Resource temporarily unavailable``,
    a submit limit, a controller that times out) keeps the runs queued and
    tries sbatch again with back-off, saying so in the launcher's log and
    in its note that ``motoko status`` shows. A refusal that never passes
    fails the runs with one line naming the setting to change.

Adopting
    A launcher that finds runs whose launcher died asks :meth:`inspect`
    about each: a job still queued or running is *adopted* (tracked like
    one of ours, to its real end), an ended one is settled from its exit
    status, and only a job SLURM no longer knows, with no exit status, is
    LOST (see :mod:`motoko.launch.adoption`).

Cancelling
    ``scancel`` (``JOBID_TASK`` for an array task). SLURM sends TERM, then
    KILL after the cluster's ``KillWait``: that is the grace period here.

This module decides; the scripts and sbatch commands are written by
:mod:`~motoko.launch.executors.slurm_scripts`, an ended job's outcome is
judged by :mod:`~motoko.launch.executors.slurm_jobs`, and SLURM's commands
are run and read by :mod:`~motoko.launch.executors.slurm_cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from motoko.errors import MotokoError, SlurmError
from motoko.launch import attempts
from motoko.launch.executors.base import Executor, Launch, Orphan, Outcome, Verdict
from motoko.launch.executors.slurm_cli import (
    _ENDED,
    _FIXES,
    _TRANSIENT,
    _WAITING,
    _active,
    _call,
    _Queue,
    _require_commands,
    _sacct,
    _squeue,
    cluster_limits,
)
from motoko.launch.executors.slurm_jobs import (
    _JOB_ID,
    _job_ident,
    _read_exit_code,
    _Task,
    cancelled_outside,
    job_outcome,
)
from motoko.launch.executors.slurm_scripts import _array_command, _job_command, _write_run_script

log = logging.getLogger(__name__)

#: Runs in flight when the configuration sets no ``max_parallel``: a cluster
#: queues them, so this bounds the launcher's claims, not the cluster's load.
DEFAULT_MAX_PARALLEL = 1000
#: Seconds to wait for an ended job's exit status file (shared file systems
#: may show it late) before reporting the job without it.
EXIT_FILE_GRACE = 5.0
#: Seconds to wait for SLURM to end an earlier attempt before a retry is submitted.
STALE_STOP_TIMEOUT = 120.0


class SlurmExecutor(Executor):
    """Executes runs as SLURM batch jobs (see the module docstring).

    Args:
        max_parallel: Runs submitted at once (queued ones count); default 1000.
        options: sbatch options for every run (motoko.yaml ``slurm_options``);
            a run's own options come after them and so win.
        bundle_size: Runs per job array; 1 submits one plain job per run.
        poll: Seconds between squeue calls while jobs are tracked.
        window: Seconds a partial bundle waits for more runs before submission.
        submitters: sbatch commands allowed to run at once.
        max_array_size: Runs per array at most, below the cluster's own
            ``MaxArraySize`` (which is read and always respected).
        backoff: First and longest pause, in seconds, after sbatch refused
            for a reason that passes.

    Raises:
        ConfigError: if the SLURM commands are not installed here.
    """

    name = "slurm"
    reports_start = True

    def __init__(
        self,
        max_parallel: int | None = None,
        *,
        options: Iterable[str] = (),
        bundle_size: int = 1,
        poll: float = 0.5,
        window: float = 0.05,
        submitters: int = 4,
        max_array_size: int | None = None,
        backoff: tuple[float, float] = (1.0, 60.0),
    ):
        super().__init__(max_parallel or DEFAULT_MAX_PARALLEL)
        _require_commands()
        self.options = tuple(options)
        self.bundle_size = max(1, int(bundle_size))
        self.poll = poll
        self.window = window
        self._tasks: dict[tuple[str, int], _Task] = {}
        self._jobs: dict[str, list[_Task]] = {}
        self._buffers: dict[tuple[tuple[str, ...], int], list[_Task]] = {}
        self._timers: dict[tuple[tuple[str, ...], int], asyncio.TimerHandle] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._submitters = asyncio.Semaphore(max(1, submitters))
        self._background: set[asyncio.Task[None]] = set()
        self._poke = asyncio.Event()
        self._polling = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self.max_array_size = max_array_size
        self.backoff = backoff
        self._refusals = 0
        self._limits_read = False

    # -- the Executor interface ------------------------------------------------------

    async def start(self) -> None:
        """Read the cluster's limits (once) and start the background squeue poller."""
        if not self._limits_read:
            self._limits_read = True
            limits = await cluster_limits()
            if "MaxArraySize" in limits:
                # Task ids run from 0 to MaxArraySize - 1.
                self.max_array_size = min(self.max_array_size or limits["MaxArraySize"], limits["MaxArraySize"])
            if "MaxJobCount" in limits and limits["MaxJobCount"] > 0:
                self.max_parallel = min(self.max_parallel, limits["MaxJobCount"])
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def submit(self, launch: Launch) -> str:
        """Write the run's script and queue it for sbatch (alone or in an array).

        Returns at once: sbatch runs in the background, and a refused
        submission arrives as a failed outcome naming sbatch's complaint.
        """
        _write_run_script(launch)
        task = _Task(launch)
        self._tasks[launch.key] = task
        self.running[launch.key] = "queued"
        group = (launch.options, launch.nproc)
        buffer = self._buffers.setdefault(group, [])
        buffer.append(task)
        if len(buffer) >= self.bundle_limit:
            self._flush(group)
        elif group not in self._timers:
            self._timers[group] = asyncio.get_running_loop().call_later(self.window, self._flush, group)
        await self.start()
        return "queued"

    @property
    def bundle_limit(self) -> int:
        """Runs per array: ``bundle_size``, split to fit the cluster's ``MaxArraySize``."""
        return max(1, min(self.bundle_size, self.max_array_size or self.bundle_size))

    async def cancel(self, key: tuple[str, int], grace: float) -> None:
        """scancel the run's job (or array task); the outcome says cancelled.

        SLURM sends TERM then KILL after its ``KillWait``, which stands in for
        ``grace``. A run still waiting for its bundle is dropped at once.
        """
        task = self._tasks.get(key)
        if task is None:
            return
        self._cancelled.add(key)
        if task.job is None:
            for buffer in self._buffers.values():
                if task in buffer:
                    buffer.remove(task)
                    self._settle(task, Outcome(key[0], key[1], cancelled=True))
            return  # otherwise sbatch is under way: cancelled once it answers
        await self._scancel(task)

    async def inspect(self, orphan: Orphan) -> Verdict:
        """Whether a dead launcher's run can be adopted: its job is known, or it left its exit status.

        A run with neither a recorded job id nor a ``started`` file may
        still wait in the queue (its launcher died before recording the job
        id): the attempt is revoked first, so that such a task exits at once
        when it starts, and only then is the run given up.
        """
        run_dir, n = orphan.run_dir, orphan.attempt
        if attempts.read_exit(run_dir, n) is not None:
            return Verdict(True, f"attempt {n} recorded its exit status")
        ident = _job_ident(orphan)
        if ident is None:
            if attempts.revoke(run_dir, n):
                return Verdict(False, f"attempt {n} left no trace of a SLURM job (closed to late tasks)", never_ran=True)
            ident = attempts.read_started(run_dir, n)
        return Verdict(True, f"SLURM job {ident}")

    def adopt(self, orphan: Orphan) -> None:
        """Track a dead launcher's job like one of ours, to its real end."""
        launch = Launch(orphan.study, orphan.run_id, orphan.run_dir, (), {}, attempt=orphan.attempt)
        task = _Task(launch)
        self._tasks[launch.key] = task
        self.running[launch.key] = "adopted"
        ident = _job_ident(orphan)
        code = _read_exit_code(launch)
        if ident is None:
            self._settle(task, self._outcome(task, "COMPLETED", "", code))  # no job: its exit status or LOST
            return
        match = _JOB_ID.match(ident)
        assert match is not None
        task.job = match.group(1)
        task.index = int(match.group(2)) if match.group(2) is not None else None
        if task.index is None:
            task.log_file = orphan.run_dir / f"slurm-{task.job}.out"
        self._jobs.setdefault(task.job, []).append(task)
        self.running[launch.key] = task.slurm_id
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop())
        self._poke.set()

    async def reconcile(self) -> None:
        """Ask squeue now instead of at the next poll."""
        await self._poll_once()

    async def close(self) -> None:
        """Stop polling; jobs still in SLURM keep running (the launcher drains first)."""
        for timer in self._timers.values():
            timer.cancel()
        for group in list(self._buffers):
            self._flush(group)
        if self._background:
            await asyncio.wait(self._background, timeout=30)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    # -- submission ---------------------------------------------------------------------

    def _flush(self, group: tuple[tuple[str, ...], int]) -> None:
        timer = self._timers.pop(group, None)
        if timer is not None:
            timer.cancel()
        tasks = self._buffers.pop(group, [])
        if not tasks:
            return
        job = asyncio.get_running_loop().create_task(self._submit(tasks))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _submit(self, tasks: list[_Task]) -> None:
        """sbatch one bundle; report every run of it as failed if SLURM refuses."""
        for task in [t for t in tasks if t.launch.key in self._cancelled]:  # while waiting to retry
            tasks.remove(task)
            self._settle(task, Outcome(task.launch.study, task.launch.run_id, cancelled=True))
        if not tasks:
            return
        for task in tasks:
            await self._stop_stale(task.launch)
        try:
            command = _array_command(tasks, self.options) if len(tasks) > 1 else _job_command(tasks[0], self.options)
            async with self._submitters:
                out = await _call(command)
        except SlurmError as exc:
            if any(text in exc.stderr for text in _TRANSIENT):
                self._retry_later(tasks, exc)
                return
            self._refuse(tasks, exc)
            return
        except (MotokoError, OSError) as exc:
            self._refuse(tasks, exc)
            return
        if self._refusals:
            log.warning("sbatch accepts jobs again")
            self._refusals, self.note = 0, None
        job = out.strip().split(";")[0]
        self._jobs[job] = list(tasks)
        for index, task in enumerate(tasks):
            task.job = job
            if len(tasks) > 1:
                task.index = index
                assert task.log_file is not None
                task.log_file = task.log_file.with_name(f"slurm-{job}_{index}.out")
            else:
                task.log_file = task.launch.run_dir / f"slurm-{job}.out"
            self.running[task.launch.key] = task.slurm_id
            with contextlib.suppress(OSError):  # the first trace of the job, before any commit
                attempts.write_submitted(task.launch.run_dir, task.launch.attempt, task.slurm_id)
            self.report_submitted(task.launch.key, task.slurm_id)
        log.debug("submitted %d run(s) as SLURM job %s", len(tasks), job)
        for task in tasks:
            if task.launch.key in self._cancelled:  # cancelled while sbatch ran
                await self._scancel(task)

    def _refuse(self, tasks: list[_Task], exc: Exception) -> None:
        """Fail every run of a bundle sbatch refused for good, naming the fix when it is known."""
        stderr = getattr(exc, "stderr", "")
        fix = next((hint for text, hint in _FIXES.items() if text.lower() in stderr.lower()), None)
        if fix is not None and isinstance(exc, SlurmError):
            exc = SlurmError(exc.command, exc.stderr, hint=fix)
        for task in tasks:
            reason = f"could not submit to SLURM: {exc}"
            self._settle(task, Outcome(task.launch.study, task.launch.run_id, reason=reason))

    def _retry_later(self, tasks: list[_Task], exc: SlurmError) -> None:
        """Keep a bundle queued after a refusal that passes; sbatch it again after a growing pause."""
        first, longest = self.backoff
        delay = min(longest, first * 2**self._refusals)
        self._refusals += 1
        detail = exc.stderr.splitlines()[-1] if exc.stderr else "no message"
        self.note = (
            f"SLURM refused jobs for now ({detail}): {len(tasks)} run(s) stay queued, sbatch again in {delay:.0f} s"
        )
        log.warning("%s", self.note)

        def again() -> None:
            job = asyncio.get_running_loop().create_task(self._submit(tasks))
            self._background.add(job)
            job.add_done_callback(self._background.discard)

        asyncio.get_running_loop().call_later(delay, again)

    async def _stop_stale(self, launch: Launch) -> None:
        """Cancel an earlier attempt of the run that SLURM still runs, and wait until it ended.

        Its ``started`` file without an exit status names its job. Usually
        that job was killed (time limit, node failure) and SLURM says it
        ended; should it still run, a retry must not start beside it.
        """
        for earlier, ident in attempts.stale_attempts(launch.run_dir, launch.attempt).items():
            if not _JOB_ID.match(ident):
                continue
            deadline = time.monotonic() + STALE_STOP_TIMEOUT
            cancelled = False
            while time.monotonic() < deadline and await _active(ident):
                if not cancelled:
                    log.warning(
                        "attempt %d of %s run %d still runs as SLURM job %s: cancelled before attempt %d starts",
                        earlier, launch.study, launch.run_id, ident, launch.attempt,
                    )
                    with contextlib.suppress(MotokoError, OSError):
                        await _call(["scancel", ident])
                    cancelled = True
                await asyncio.sleep(self.poll)

    async def _scancel(self, task: _Task) -> None:
        try:
            await _call(["scancel", task.slurm_id])
        except (MotokoError, OSError) as exc:
            log.warning("scancel %s failed (the job may have ended): %s", task.slurm_id, exc)
        self._poke.set()

    # -- tracking ---------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            self._poke.clear()
            if self._jobs:
                try:
                    await self._poll_once()
                except Exception:  # the poller must survive anything one poll meets
                    log.exception("polling SLURM failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll)

    async def _poll_once(self) -> None:
        """One squeue call for all our jobs; settle those that ended."""
        async with self._polling:  # the poller and reconcile() must not judge twice
            jobs = list(self._jobs)
            if not jobs:
                return
            try:
                queue = await _squeue(jobs)
            except (MotokoError, OSError) as exc:
                # The controller may be restarting: what exit files say is still true.
                log.warning("squeue failed, reading exit files only: %s", exc)
                for task in self._tracked(jobs):
                    code = _read_exit_code(task.launch)
                    if code is not None:
                        self._settle(task, self._outcome(task, "COMPLETED", "", code))
                return
            # Only the jobs asked about: one submitted meanwhile is not "missing".
            vanished = [task for task in self._tracked(jobs) if not self._update(task, queue)]
            if vanished:
                await self._settle_vanished(vanished)

    def _tracked(self, jobs: list[str]) -> list[_Task]:
        return [task for job in jobs for task in self._jobs.get(job, ())]

    def _update(self, task: _Task, queue: _Queue) -> bool:
        """Apply squeue's view to one task; False when squeue no longer knows it."""
        row = queue.rows.get(task.slurm_id)
        if row is None and task.index is not None and task.job is not None:
            state = queue.array_state(task.job, task.index)
            if state is not None:
                row = (state, "", "")
            elif task.job in queue.arrays and not task.started and not self._began(task):
                # Array tasks leave the range row by starting (a row of their own,
                # kept for MinJobAge once ended) or by a scancel while queued.
                self._settle(task, cancelled_outside(task))
                return True
        if row is None:
            task.missing += 1
            # Twice in a row, so that a job between sbatch and squeue is not judged.
            return task.missing < 2
        task.missing = 0
        state, reason, raw_id = row
        task.raw_id = raw_id or task.raw_id
        if state not in _WAITING:
            self._started_task(task)
        if state in _ENDED:
            self._ended(task, state, reason)
        return True

    def _ended(self, task: _Task, state: str, reason: str) -> None:
        code = _read_exit_code(task.launch)
        if code is None and state in ("COMPLETED", "FAILED"):
            # The script records its status before it exits: wait for the file a little.
            now_ = time.monotonic()
            task.ended_at = task.ended_at or now_
            if now_ - task.ended_at < EXIT_FILE_GRACE:
                return
        self._settle(task, self._outcome(task, state, reason, code))

    async def _settle_vanished(self, tasks: list[_Task]) -> None:
        """Jobs squeue forgot: their exit file, else sacct, else LOST."""
        unknown = []
        for task in tasks:
            code = _read_exit_code(task.launch)
            if code is not None:
                self._settle(task, self._outcome(task, "COMPLETED", "", code))
            else:
                unknown.append(task)
        if not unknown:
            return
        states = await _sacct([task.raw_id or task.slurm_id for task in unknown])
        for task in unknown:
            state = states.get(task.raw_id or task.slurm_id)
            if state in _ENDED:
                self._settle(task, self._outcome(task, state, "", None))
                continue
            reason = (
                f"SLURM job {task.slurm_id} vanished from the queue without recording an exit code "
                "(sacct knows nothing of it either)"
            )
            self._settle(task, Outcome(task.launch.study, task.launch.run_id, lost=True, reason=reason))

    @staticmethod
    def _began(task: _Task) -> bool:
        """Whether the task's script started (it writes ``started.<attempt>`` first)."""
        return attempts.started_file(task.launch.run_dir, task.launch.attempt).exists()

    def _outcome(self, task: _Task, state: str, reason: str, code: int | None) -> Outcome:
        """The outcome of the task's ended job (see :func:`job_outcome`); ours if we cancelled it."""
        return job_outcome(task, state, reason, code, cancelled=task.launch.key in self._cancelled)

    def _started_task(self, task: _Task) -> None:
        if not task.started:
            task.started = True
            self.report_started(task.launch.key)

    def _settle(self, task: _Task, outcome: Outcome) -> None:
        key = task.launch.key
        if self._tasks.pop(key, None) is None:
            return  # already reported
        if outcome.exit_code is not None:  # it ran, even if no poll saw it running
            self._started_task(task)
        if task.job is not None:
            tasks = self._jobs.get(task.job, [])
            with contextlib.suppress(ValueError):
                tasks.remove(task)
            if not tasks:
                self._jobs.pop(task.job, None)
        self._cancelled.discard(key)
        self.report(outcome)


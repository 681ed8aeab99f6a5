"""What became of a SLURM job: a run's task record, and the outcome its end gives.

The SLURM executor (:mod:`motoko.launch.executors.slurm`) tracks each run
as a :class:`_Task`; when squeue, sacct or the run's exit status file say
the job ended, :func:`job_outcome` turns SLURM's final state into the
run's outcome: FAILED with the reason SLURM killed it, LOST when its node
went away, CANCELLED when someone scancelled it outside motoko.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from motoko.launch import attempts
from motoko.launch.executors.base import Launch, Orphan, Outcome, tail

#: Ended states that are no fault of the run: reported LOST (a retry may help).
_LOSSES = {
    "BOOT_FAIL": "its node failed to boot",
    "NODE_FAIL": "its node failed",
    "PREEMPTED": "was preempted",
    "REVOKED": "was revoked (federation)",
}
#: Ended states in which SLURM killed the run: reported FAILED with the reason.
_KILLS = {
    "DEADLINE": "reached its deadline",
    "OUT_OF_MEMORY": "ran out of memory",
    "TIMEOUT": "was killed at its time limit",
}
#: A job id (``123``) or an array task's id (``123_4``).
_JOB_ID = re.compile(r"(\d+)(?:_(\d+))?\Z")
#: What an outside ``scancel`` leaves in the run's error.
_CANCELLED_OUTSIDE = "was cancelled outside motoko (scancel)"


@dataclass
class _Task:
    """One run's life in SLURM: buffered, submitted, then reported."""

    launch: Launch
    job: str | None = None  # the job (or array) id once submitted
    index: int | None = None  # the array task index; None for a plain job
    log_file: Path | None = None  # SLURM's own output (slurmstepd's messages)
    raw_id: str | None = None  # an array task's own job id (what sacct -c knows)
    missing: int = 0  # consecutive polls without the job in squeue
    started: bool = False  # squeue showed it out of the queue (or it wrote its exit code)
    ended_at: float | None = None  # when squeue said it ended without an exit status

    @property
    def slurm_id(self) -> str:
        """``123`` for a plain job, ``123_4`` for an array task."""
        return f"{self.job}_{self.index}" if self.index is not None else str(self.job)


def cancelled_outside(task: _Task, why: str = "while queued") -> Outcome:
    """The outcome of a job someone scancelled outside motoko: cancelled, saying so."""
    launch = task.launch
    reason = f"SLURM job {task.slurm_id} {_CANCELLED_OUTSIDE} ({why})"
    return Outcome(launch.study, launch.run_id, cancelled=True, reason=reason)


def job_outcome(task: _Task, state: str, reason: str, code: int | None, *, cancelled: bool) -> Outcome:
    """The outcome of an ended job from SLURM's final ``state`` and the run's exit ``code``.

    ``cancelled``: motoko cancelled the run itself (not an outside scancel).
    """
    launch = task.launch
    outcome = Outcome(launch.study, launch.run_id, exit_code=code, cancelled=cancelled)
    if state in _KILLS:  # what a study's retry rules may fix (motoko.study.retry)
        outcome.extra["failure"] = state
    why = f"{state}, {reason}" if reason and reason not in ("None", state) else state
    if cancelled:
        pass
    elif state == "CANCELLED" and code != 0:
        # The script may have recorded the killed command's status (143) before it died too.
        outcome = cancelled_outside(task, why)
        outcome.exit_code = code
        outcome.stderr_tail = _failure_tail(task)
        return outcome
    elif state in _LOSSES and code is None:
        outcome.lost = True
        outcome.reason = f"SLURM job {task.slurm_id} {_LOSSES[state]} ({why})"
    elif state in _KILLS:
        outcome.reason = f"SLURM job {task.slurm_id} {_KILLS[state]} ({why})"
    elif code is None:
        outcome.lost = state == "COMPLETED"
        outcome.reason = f"SLURM job {task.slurm_id} ended without recording an exit code ({why})"
    if not outcome.succeeded and not cancelled:
        outcome.stderr_tail = _failure_tail(task)
    return outcome


def _job_ident(orphan: Orphan) -> str | None:
    """The SLURM id of an orphan's job: as recorded on the run, else as its task wrote on start."""
    run_dir, n = orphan.run_dir, orphan.attempt
    for ident in (orphan.executor_id, attempts.read_submitted(run_dir, n), attempts.read_started(run_dir, n)):
        if ident and _JOB_ID.match(ident):
            return ident
    return None


def _read_exit_code(launch: Launch) -> int | None:
    return attempts.read_exit(launch.run_dir, launch.attempt)


def _failure_tail(task: _Task) -> str:
    """The run's stderr tail, and SLURM's own words (slurmstepd) when it killed the job."""
    text = tail(task.launch.run_dir / "stderr")
    if task.log_file is not None:
        slurm = tail(task.log_file, lines=5)
        if slurm:
            text = f"{text}\n{slurm}" if text else slurm
    return text

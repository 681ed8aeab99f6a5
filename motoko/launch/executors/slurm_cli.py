"""Talking to SLURM's commands: calls, and what sbatch, squeue, sacct and scontrol say.

The SLURM executor (:mod:`motoko.launch.executors.slurm`) decides; this
module only runs ``sbatch``/``squeue``/``sacct``/``scontrol``/``scancel``
without blocking the event loop, parses their output into plain values, and
knows which of sbatch's refusals pass with time and which setting fixes the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from motoko.errors import ConfigError, MotokoError, SlurmError

log = logging.getLogger(__name__)

#: Job ids per squeue/sacct call (one argument must stay under 128 KiB).
_IDS_PER_CALL = 2000

#: squeue states of a job that has not started executing yet.
_WAITING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
_ENDED = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
}
#: sbatch complaints that pass with time: the runs stay queued and sbatch is tried again.
_TRANSIENT = (
    "Resource temporarily unavailable", "Socket timed out", "temporarily unable", "Unable to contact slurm controller",
    "job submit limit", "MaxSubmitJobs", "MaxJobCount", "SubmitJob", "Job count limit",
)
#: sbatch complaints that never pass, and the setting that fixes them.
_FIXES = {
    "Invalid job array specification": "the array is larger than the cluster's MaxArraySize: "
    "lower bundle_size (motoko.yaml launcher) below it",
    "invalid partition": "name an existing partition in slurm_options (`sinfo -s` lists them)",
    "Requested node configuration is not available": "ask for no more cores or memory than a node has "
    "(nproc, --mem in slurm_options; `sinfo -o '%c %m'`)",
    "Requested time limit is invalid": "lower --time in slurm_options below the partition's MaxTime (`sinfo -o '%l'`)",
    "Invalid account": "set --account in slurm_options to an account of yours (`sacctmgr show assoc user=$USER`)",
}


#: The SLURM client commands motoko calls.
COMMANDS = ("sbatch", "squeue", "scancel")


def missing_command() -> str | None:
    """The first SLURM client command not on PATH (None: all are there)."""
    return next((command for command in COMMANDS if shutil.which(command) is None), None)


def _require_commands() -> None:
    """Refuse to build a SLURM executor where SLURM's client commands are missing."""
    command = missing_command()
    if command is not None:
        raise ConfigError(
            f"{command} not found: the slurm executor needs the SLURM client commands on PATH",
            hint="install SLURM (or load its module), or use `executor: local`",
        )


@dataclass
class _Queue:
    """What one squeue call says: state and reason per job id, and the arrays' unsplit tasks.

    ``arrays`` maps an array's id to the task ids squeue still shows in one
    range row ("123_[4-9%2]", not started yet) and that row's state.
    """

    rows: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    arrays: dict[str, tuple[set[int], str]] = field(default_factory=dict)

    def array_state(self, job: str, index: int) -> str | None:
        """The state of array task ``job_index`` if it is still in its array's range row."""
        ranged = self.arrays.get(job)
        if ranged is None or index not in ranged[0]:
            return None
        return ranged[1]


async def _call(command: Sequence[str], *, ok: Iterable[str] = ()) -> str:
    """Run a SLURM command without blocking the loop; return its stdout.

    Raises:
        SlurmError: on a non-zero exit, unless its stderr contains one of ``ok``.
    """
    proc = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    stderr = err.decode(errors="replace")
    if proc.returncode != 0 and not any(text in stderr for text in ok):
        raise SlurmError(command, stderr)
    return out.decode(errors="replace")


async def _squeue(jobs: list[str]) -> _Queue:
    """squeue's view of ``jobs``, ended ones included (for ``MinJobAge``)."""
    queue = _Queue()
    for start in range(0, len(jobs), _IDS_PER_CALL):
        ids = ",".join(jobs[start : start + _IDS_PER_CALL])
        # Only ids squeue has forgotten: it then says so and exits 1.
        out = await _call(
            ["squeue", "--states=all", "--noheader", "--format=%i|%F|%K|%A|%T|%r", f"--jobs={ids}"],
            ok=("Invalid job id",),
        )
        _parse_squeue(out, queue)
    return queue


def _parse_squeue(out: str, queue: _Queue) -> None:
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        job_id, array_id, task_id, raw_id, state, reason = parts
        state = state.split()[0] if state.strip() else "UNKNOWN"
        if task_id not in ("N/A", "") and not task_id.isdigit():
            queue.arrays[array_id] = (_task_ids(task_id), state)  # "123_[4-9%2]": tasks not started yet
            continue
        queue.rows[job_id] = (state, reason, raw_id)


async def _sacct(ids: list[str]) -> dict[str, str]:
    """Final states from accounting (``sacct``), else job completion logs (``sacct -c``)."""
    if shutil.which("sacct") is None or not ids:
        return {}
    joined = ",".join(ids[:_IDS_PER_CALL])
    for command in (
        ["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={joined}", "--format=JobID,State"],
        ["sacct", "-c", "--noheader", "--parsable2", f"--jobs={joined}", "--format=jobid,state"],
    ):
        try:
            out = await _call(command)
        except (MotokoError, OSError):
            continue
        states = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 2 and parts[1].strip():
                states[parts[0]] = parts[1].split()[0]
        if states:
            return states
    return {}


async def cluster_limits() -> dict[str, int]:
    """The cluster's MaxArraySize and MaxJobCount (``scontrol show config``); {} when unknown."""
    if shutil.which("scontrol") is None:
        return {}
    try:
        out = await _call(["scontrol", "show", "config"])
    except (MotokoError, OSError) as exc:
        log.warning("cannot read the cluster's limits (scontrol show config): %s", exc)
        return {}
    return parse_limits(out)


def parse_limits(text: str) -> dict[str, int]:
    """MaxArraySize and MaxJobCount from ``scontrol show config`` output."""
    limits = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip().split(" ")[0]
        if name in ("MaxArraySize", "MaxJobCount") and value.isdigit():
            limits[name] = int(value)
    return limits


async def _active(ident: str) -> bool:
    """Whether SLURM still queues or runs job ``ident`` (``123`` or ``123_4``)."""
    try:
        queue = await _squeue([ident])
    except (MotokoError, OSError):
        return False
    job, _, index = ident.partition("_")
    row = queue.rows.get(ident)
    state = row[0] if row is not None else (queue.array_state(job, int(index)) if index else None)
    return state is not None and state not in _ENDED


def _task_ids(spec: str) -> set[int]:
    """Task ids of an squeue range ("0-3,7", "4-9%2"); empty for what cannot be read."""
    ids: set[int] = set()
    for part in spec.split("%")[0].strip("[]").split(","):
        low, _, high = part.partition("-")
        with contextlib.suppress(ValueError):
            ids.update(range(int(low), int(high or low) + 1))
    return ids


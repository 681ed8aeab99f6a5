"""Pilots: launchers submitted as SLURM jobs, each executing many runs in one allocation.

A job array costs the scheduler one record and one scheduling decision per
run; a *pilot* is one SLURM job running ``motoko launcher start`` inside its
allocation, claiming CREATED runs from the database (over TCP with TLS) and
executing them locally, many at once, until it has been idle ``idle_exit``
seconds or its remaining walltime fits no run.

The :class:`PilotManager` keeps pilots coming: while CREATED runs wait and
fewer than ``max`` pilots are queued or running, it submits more (never more
than the waiting runs can keep busy). It knows its pilots by their SLURM job
name and a comment naming the database, through one ``squeue`` call per poll.
A pilot that dies (scancel, node failure, time limit) is a dead launcher like
any other: its runs stop heart-beating and go through the lost-run path.

Nothing here executes runs: pilots are plain launchers with the local
executor and a deadline (:class:`motoko.launch.claiming.Deadline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motoko.config import PilotSettings
from motoko.errors import ConfigError, SlurmError
from motoko.launch.claiming import Deadline, Share, fits_within, pick
from motoko.launch.executors.slurm_cli import missing_command
from motoko.launch.serving import LauncherReport, Served
from motoko.study.database import StudyDB
from motoko.study.records import CREATED
from motoko.study.schema import StudySchema
from motoko.study.server import Address
from motoko.study.walltime import format_duration

log = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: squeue states of a pilot that still counts against ``max``.
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"})
#: Seconds a pilot keeps free before its time limit (settle runs, leave).
MARGIN = 10.0


@dataclass
class Pilot:
    """A pilot as SLURM and the database see it.

    Attributes:
        job_id: The SLURM job id.
        state: SLURM's state (PENDING, RUNNING, ...).
        host: The node it runs on ('' while pending).
        time_left: Seconds before its time limit, None if unknown.
        runs_done: Runs its launcher executed (from its launcher record).
    """

    job_id: str
    state: str
    host: str
    time_left: float | None
    runs_done: int = 0

    @property
    def active(self) -> bool:
        """Queued or running: counts against ``max``."""
        return self.state in ACTIVE_STATES


def require_slurm() -> None:
    """Raise a one-line error naming the SLURM command that is missing."""
    command = missing_command()
    if command is not None:
        raise ConfigError(
            f"no SLURM on this machine: {command} not found on PATH (pilots are SLURM jobs)",
            hint="run where SLURM's client commands are (load its module), or use `executor: local`",
        )


def check_walltimes(settings: PilotSettings, studies: Mapping[str, StudySchema]) -> None:
    """Refuse pilots too short for a study's runs: they would never claim one.

    Raises:
        ConfigError: naming the pilots' ``time`` and the study's ``walltime``.
    """
    for name, schema in studies.items():
        if schema.walltime is not None and schema.walltime > settings.time - MARGIN:
            raise ConfigError(
                f"pilots time {format_duration(settings.time)} (motoko.yaml launcher.pilots.time) is too short "
                f"for study {name}'s walltime {format_duration(schema.walltime)} (bd.yaml) plus {MARGIN:g} s",
                hint="give pilots a longer time, or the study a shorter walltime",
            )


def _partition(options: Sequence[str]) -> str | None:
    """The partition named in sbatch options (``--partition=P``, ``--partition P``, ``-p P``, ``-pP``)."""
    for i, option in enumerate(options):
        if option.startswith("--partition="):
            return option.split("=", 1)[1]
        if option in ("--partition", "-p") and i + 1 < len(options):
            return options[i + 1]
        if option.startswith("-p") and len(option) > 2 and not option.startswith("--"):
            return option[2:]
    return None


def check_node_size(settings: PilotSettings) -> None:
    """Refuse pilots asking more CPUs than any node of their partition has.

    SLURM accepts such a job and leaves it PENDING for ever (reason
    ``PartitionConfig``): the manager would wait on a pilot that never
    starts. When ``sinfo`` cannot tell (it fails, or the partition is
    unknown to it), nothing is refused here: sbatch has the last word.

    Raises:
        ConfigError: naming the pilots' ``cores`` and the largest node's CPUs.
    """
    partition = _partition(settings.slurm_options)
    command = ["sinfo", "--noheader", "--format=%c", *(["--partition", partition] if partition else [])]
    try:
        text = _slurm(command)
    except (SlurmError, OSError, subprocess.SubprocessError):
        return
    sizes = [int(digits) for line in text.split() if (digits := line.rstrip("+").strip()).isdigit()]
    if sizes and settings.cores > max(sizes):
        where = f"partition {partition}" if partition else "the default partition"
        raise ConfigError(
            f"pilots cores {settings.cores} (motoko.yaml launcher.pilots.cores) is more than any node of "
            f"{where} has ({max(sizes)} CPUs): such a pilot would wait in the queue for ever",
            hint=f"set launcher.pilots.cores to {max(sizes)} or fewer, or name a partition of bigger nodes",
        )


def tag(address: Address | str) -> str:
    """The SLURM comment naming a database: how pilots of one workflow are told apart."""
    return "motoko:" + hashlib.sha1(str(address).encode()).hexdigest()[:12]


def _slurm(command: Sequence[str], *, ok: Sequence[str] = ()) -> str:
    """Run a SLURM command; return its stdout.

    Raises:
        SlurmError: on a non-zero exit, unless its stderr contains one of ``ok``.
    """
    proc = subprocess.run(list(command), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if proc.returncode != 0 and not any(text in proc.stderr for text in ok):
        raise SlurmError(command, proc.stderr)
    return proc.stdout


def _seconds(text: str) -> float | None:
    """squeue's ``%L`` (``[D-]HH:MM:SS``, ``MM:SS``) as seconds; None for UNLIMITED/INVALID."""
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    total = 0
    for part in parts:
        total = total * 60 + int(part)
    return float(days * 86400 + total)


def list_pilots(settings: PilotSettings, address: Address | str, db: StudyDB | None = None) -> list[Pilot]:
    """The user's pilots of this database in SLURM's queue, with the runs each executed."""
    out = _slurm(
        ["squeue", "--noheader", f"--name={settings.name}", f"--user={getpass.getuser()}", "--states=all",
         "--format=%i|%T|%N|%L|%k"],
    )
    wanted = tag(address)
    pilots = []
    for line in out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5 or fields[4] != wanted:
            continue
        job_id, state, host, left, _ = fields
        pilots.append(Pilot(job_id, state, host if host not in ("", "(null)") else "", _seconds(left)))
    if db is not None and pilots:
        done: dict[str, int] = {}
        for record in db.launchers().values():
            if record.pilot_job:
                done[str(record.pilot_job)] = done.get(str(record.pilot_job), 0) + int(record.executed)
        for pilot in pilots:
            pilot.runs_done = done.get(pilot.job_id, 0)
    return pilots


def pilot_script(settings: PilotSettings, address: Address, workflow_dir: Path, study: str | None) -> str:
    """The batch script of one pilot: a launcher that knows when its allocation ends.

    TLS files travel as environment variables; the end is computed when the
    job starts (the limit counts from then), a little early to be safe.
    """
    q = shlex.quote
    lines = ["#!/bin/bash", "# Written by motoko: a pilot launcher (see docs/executors.md)."]
    if address.tls is not None:
        lines += [
            f"export MOTOKO_TLS_CA={q(address.tls.ca)}",
            f"export MOTOKO_TLS_CERT={q(address.tls.cert)}",
            f"export MOTOKO_TLS_KEY={q(address.tls.key)}",
        ]
    paths = [p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p]
    lines.append(f"export PYTHONPATH={q(os.pathsep.join(paths))}")
    # When SLURM started the pilot, in its log: how long it queued is the
    # first thing to ask of a slow pilot (bash >= 5 needs no fork for it).
    lines.append('echo "motoko: pilot job $SLURM_JOB_ID started at ${EPOCHREALTIME:-$(date +%s.%N)} on $SLURMD_NODENAME"')
    lines.append(f"end=$(( ${{EPOCHSECONDS:-$(date +%s)}} + {int(settings.time)} - 2 ))")
    command = [
        sys.executable, "-m", "motoko.cli.main", "-C", str(workflow_dir), "launcher", "start",
        "--db", str(address), "--executor", "local", "--idle-exit", f"{settings.idle_exit:g}",
        "-j", str(settings.cores),
    ]
    if study:
        command += ["--study", study]
    # exec: the launcher is the job's process, so scancel's TERM reaches it (and it drains).
    lines.append(f"exec {shlex.join(command)} --walltime-end \"$end\"")
    return "\n".join(lines) + "\n"


def submit_pilots(
    count: int, settings: PilotSettings, address: Address, workflow_dir: Path, log_dir: Path, study: str | None = None
) -> list[str]:
    """Submit ``count`` pilots with sbatch; return their job ids.

    Raises:
        ConfigError: when SLURM is not installed here.
        SlurmError: when sbatch refuses a pilot.
    """
    require_slurm()
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    script = log_dir / "pilot.sh"
    script.write_text(pilot_script(settings, address, workflow_dir, study))
    script.chmod(0o700)
    command = [
        "sbatch", "--parsable", f"--job-name={settings.name}", f"--comment={tag(address)}",
        f"--time={max(1, math.ceil(settings.time / 60))}", "--ntasks=1", f"--cpus-per-task={settings.cores}",
        f"--chdir={workflow_dir}", f"--output={log_dir / 'pilot-%j.out'}", "--export=ALL",
        *settings.slurm_options, str(script),
    ]
    return [_slurm(command).strip().split(";")[0] for _ in range(count)]


def stop_pilots(pilots: Sequence[Pilot], *, now: bool = False) -> list[str]:
    """Stop pilots: by default they drain (TERM to the launcher: no new claims,
    running runs end); ``now`` cancels the jobs outright (their runs then go
    the lost-run way). Returns the job ids signalled."""
    ok = ("Invalid job id", "already completing", "Job/step already", "pending")
    running = [p.job_id for p in pilots if p.active and p.state == "RUNNING"]
    queued = [p.job_id for p in pilots if p.active and p.state != "RUNNING"]
    if queued or (now and running):
        _slurm(["scancel", *queued, *(running if now else [])], ok=ok)
    if running and not now:
        _slurm(["scancel", "--signal=TERM", "--batch", *running], ok=ok)
    return running + queued


class PilotManager(Served):
    """Keeps up to ``max`` pilots queued or running while CREATED runs wait.

    Behaves like a launcher for the services that run one (``serve_async``,
    ``stop``, ``db``, ``report``), so ``motoko launcher start --executor
    pilot`` and ``motoko run`` use it where they would use a launcher.

    Args:
        db: The manager's own database connection.
        studies: The studies whose runs pilots execute.
        settings: ``launcher: pilots:`` from motoko.yaml.
        address: The database address given to pilots.
        workflow_dir: Where pilots start (``-C``), on a file system the nodes share.
        poll: Seconds between squeue calls while pilots are out.
        once: Exit once no run waits and no pilot is left.
        idle_exit: Exit after this many seconds with no run waiting and no pilot.
        study: Pilots serve only this study (None: all of ``studies``).
    """

    def __init__(
        self,
        db: StudyDB,
        studies: Mapping[str, StudySchema],
        settings: PilotSettings,
        address: Address,
        workflow_dir: Path,
        *,
        poll: float = 2.0,
        once: bool = False,
        idle_exit: float | None = None,
        study: str | None = None,
    ):
        require_slurm()
        check_walltimes(settings, studies)
        check_node_size(settings)
        if not address.is_tcp:
            log.warning("pilots reach the database at %s, a unix socket: only pilots on this host can", address)
        self.db = db
        self.studies = dict(studies)
        self.settings = settings
        self.address = address
        self.workflow_dir = Path(workflow_dir)
        self.log_dir = pilot_logs(self.workflow_dir)
        self.poll = poll
        self.once = once
        self.idle_exit = idle_exit
        self.study = study
        self.report = LauncherReport()
        self.submitted: list[str] = []
        self._active: list[Pilot] = []  # as squeue last said, plus pilots submitted since
        self._listed_at = -math.inf  # when squeue last said it (time.monotonic())
        self._stopping = False
        self._wake: asyncio.Event | None = None

    async def _serving(self) -> None:
        """Submit pilots as runs wait, until stopped, idle or (``once``) done."""
        wake = self._wake
        assert wake is not None
        idle_since: float | None = None
        while not self._stopping:
            wake.clear()
            waiting, active = await asyncio.to_thread(self._step)
            if waiting or active:
                idle_since = None
            else:
                idle_since = idle_since or time.monotonic()
                if self.once and self.submitted:
                    break
                if self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                    break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), self.poll)

    def _step(self) -> tuple[int, int]:
        """One look at the database (and the queue when it matters); submit what is missing.

        Every commit wakes the manager, and its pilots commit many times a
        second: asking squeue each time kept a core busy with squeue and
        slurmctld while the pilots worked. The queue is asked at most every
        ``poll`` seconds, unless runs wait that the pilots known to be out
        cannot hold (then at once: a pilot is submitted the moment runs wait).

        Returns (runs waiting, pilots queued or running).
        """
        waiting = self._waiting()
        wanted = min(self.settings.max, math.ceil(waiting / self.settings.cores))
        if len(self._active) < wanted or time.monotonic() - self._listed_at >= self.poll:
            pilots = list_pilots(self.settings, self.address, self.db)
            self._listed_at = time.monotonic()
            self._active = [p for p in pilots if p.active]
            self.report.executed = sum(p.runs_done for p in pilots if p.job_id in self.submitted)
        missing = wanted - len(self._active)
        if missing > 0 and not self._stopping:
            ids = submit_pilots(missing, self.settings, self.address, self.workflow_dir, self.log_dir, self.study)
            self.submitted += ids
            self._active += [Pilot(job_id, "PENDING", "", None) for job_id in ids]
            log.info("submitted %d pilot(s): %s (%d run(s) waiting)", len(ids), ", ".join(ids), waiting)
        return waiting, len(self._active)

    def _waiting(self) -> int:
        """CREATED runs of the served studies that a new pilot could hold.

        Runs declaring a walltime longer than a pilot's time would keep
        pilots coming that never claim them: they are not counted (looking
        at no more runs than ``max`` pilots could take).
        """
        self.db.begin()
        total = 0
        enough = self.settings.max * self.settings.cores
        fresh = Deadline(time.time() + self.settings.time, MARGIN)
        for name, schema in self.studies.items():
            with contextlib.suppress(KeyError, ConfigError):
                study = self.db.study(name)
                fits = fits_within(fresh, schema.walltime, "walltime" in schema.run_fields)
                if fits is None:
                    total += study.count(CREATED)  # a counter: no walk of the index
                else:
                    total += len(pick(study.ids_in_state(CREATED), enough, Share(), fits))
        self.db.abort()
        return total


def settings_for(settings: PilotSettings, cores: int | None) -> PilotSettings:
    """The settings with ``-j`` (pilot cores) given on the command line winning."""
    if cores is None:
        return settings
    return PilotSettings(settings.max, cores, settings.time, settings.idle_exit, list(settings.slurm_options), settings.name)


def pilot_logs(workflow_dir: Path) -> Path:
    """Where pilot scripts and their SLURM output go (private, under ``.motoko``)."""
    return Path(workflow_dir) / ".motoko" / "pilots"


def describe(pilots: Sequence[Pilot]) -> list[dict[str, Any]]:
    """Rows for ``motoko pilots list``."""
    return [
        {
            "job": p.job_id,
            "state": p.state,
            "host": p.host or "-",
            "runs done": p.runs_done,
            "time left": format_duration(p.time_left) if p.time_left is not None and p.active else "-",
        }
        for p in pilots
    ]

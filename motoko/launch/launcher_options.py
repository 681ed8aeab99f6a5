"""How a launcher is told to behave: its intervals, bounded modes and pilot deadline."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LauncherOptions:
    """Tunable behaviour of a launcher.

    Attributes:
        machine_name: Recorded on every run this launcher executes.
        heartbeat: Seconds between heartbeats of owned runs.
        lost_after: Default seconds without heartbeat before a run is LOST
            (a study's bd.yaml ``lost_after`` wins).
        cancel_grace: Seconds between TERM and KILL when cancelling.
        claim_ahead: Runs claimed beyond the free slots, to batch claims
            (default: :data:`~motoko.launch.claims.ALONE_AHEAD` for a local
            launcher alone on its database; among others and in a pilot,
            paced by its runs' durations (:mod:`motoko.launch.pacing`);
            ``max_parallel`` on a scheduler). Set, it overrides all of
            these: more means fewer transactions per run but an unfair
            share when several launchers serve the same study.
        poll: Safety-net poll interval when nothing wakes the launcher.
        once: Execute what is claimable now, then exit when it is done.
        max_runs: Exit after executing this many runs.
        idle_exit: Exit after this many seconds with nothing to do.
        runs_dir: Where run directories go (default: each study's folder).
        workflow_file: The workflow's motoko.yaml, given to runs.
        db_address: The database address given to runs (``MOTOKO_DB``).
        walltime_end: When this launcher's allocation ends (seconds since
            the epoch; pilots): it claims only runs that fit before then.
        walltime_margin: Seconds before ``walltime_end`` when claiming stops.
        pilot_job: The SLURM job id of a pilot, recorded for ``motoko pilots``.
    """

    machine_name: str = field(default_factory=socket.gethostname)
    heartbeat: float = 10.0
    lost_after: float = 60.0
    cancel_grace: float = 10.0
    claim_ahead: int | None = None
    poll: float = 5.0
    once: bool = False
    max_runs: int | None = None
    idle_exit: float | None = None
    runs_dir: Path | None = None
    workflow_file: str | None = None
    db_address: str | None = None
    walltime_end: float | None = None
    walltime_margin: float = 10.0
    pilot_job: str | None = None

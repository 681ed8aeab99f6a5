"""``motoko pilots list|submit|stop``: see and steer the pilot launchers on SLURM."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from motoko.cli.db_commands import config_of
from motoko.cli.format import render

if TYPE_CHECKING:
    from motoko.config import PilotSettings, WorkflowConfig
    from motoko.study.server import Address


def _context(ctx: click.Context, study: str | None = None, *, start: bool = False) -> tuple[WorkflowConfig, PilotSettings, Address]:
    """(config, pilot settings, database address) of the workflow.

    The workflow's own server is started only with ``start`` (submitting
    pilots): looking at them never starts anything.
    """
    from motoko.config import database_address
    from motoko.study.server import default_address, ensure_server

    config = config_of(ctx)
    name = config.resolve(study) if study else next(iter(config.studies))
    address = database_address(config, name)
    if address is None:
        address = ensure_server(config.directory) if start else default_address(config.directory)
    return config, config.launcher.pilots, address


@click.group()
def pilots() -> None:
    """Pilot launchers: SLURM jobs that execute many runs each (launcher.executor: pilot)."""


@pilots.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def pilots_list(ctx: click.Context, fmt: str) -> None:
    """Show the workflow's pilots: job id, state, host, runs done, time left."""
    from motoko.launch.pilots import describe, list_pilots, require_slurm
    from motoko.study.database import StudyDB
    from motoko.study.server import reachable

    _, settings, address = _context(ctx)
    require_slurm()
    db = StudyDB(address) if reachable(address) else None
    try:
        rows = describe(list_pilots(settings, address, db))
    finally:
        if db is not None:
            db.close()
    if not rows and fmt == "table":
        click.echo("no pilot queued or running")
        return
    columns = ["job", "state", "host", "runs done", "time left"]
    click.echo(render(columns, [[row[c] for c in columns] for row in rows], fmt))


@pilots.command("submit")
@click.option("--count", "-n", type=click.IntRange(min=1, max=10_000), default=1, show_default=True, help="Pilots to submit.")
@click.option("--study", "-s", help="Pilots execute only this study's runs.")
@click.pass_context
def pilots_submit(ctx: click.Context, count: int, study: str | None) -> None:
    """Submit pilots now, whatever is waiting (they leave after idle_exit)."""
    from motoko.launch.pilots import check_node_size, check_walltimes, pilot_logs, submit_pilots
    from motoko.launch.service import served_studies

    config, settings, address = _context(ctx, study, start=True)
    check_walltimes(settings, served_studies(config, study, address))
    check_node_size(settings)
    ids = submit_pilots(count, settings, address, config.directory, pilot_logs(config.directory), study)
    click.echo(f"submitted {len(ids)} pilot(s): {', '.join(ids)}")


@pilots.command("stop")
@click.argument("jobs", nargs=-1)
@click.option("--now", is_flag=True, help="Cancel at once (running runs are killed and retried as LOST runs).")
@click.pass_context
def pilots_stop(ctx: click.Context, jobs: tuple[str, ...], now: bool) -> None:
    """Stop the workflow's pilots (or only JOBS): they finish their runs and leave.

    Only this workflow's pilots are ever signalled, whatever ids are given.
    """
    from motoko.errors import UnknownNameError
    from motoko.launch.pilots import list_pilots, require_slurm, stop_pilots

    _, settings, address = _context(ctx)
    require_slurm()
    ours = [p for p in list_pilots(settings, address) if p.active]
    if jobs:
        known = {p.job_id for p in ours}
        for job in jobs:
            if job not in known:
                raise UnknownNameError("pilot job", job, known)
        ours = [p for p in ours if p.job_id in jobs]
    stopped = stop_pilots(ours, now=now)
    if not stopped:
        click.echo("no pilot was queued or running")
        return
    verb = "cancelled" if now else "asked to finish their runs and leave"
    click.echo(f"{len(stopped)} pilot(s) {verb}: {', '.join(stopped)}")


COMMANDS = [pilots]

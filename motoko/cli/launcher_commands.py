"""``motoko launcher start|stop|status``."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

import click

from motoko.cli.db_commands import config_of
from motoko.cli.format import render


class PositiveFloat(click.ParamType):
    """A number of seconds > 0."""

    name = "seconds"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if number <= 0:
            self.fail(f"{value!r} must be greater than 0", param, ctx)
        return number


SECONDS = PositiveFloat()


@click.group()
def launcher() -> None:
    """Start, stop or inspect launcher daemons (they execute CREATED runs)."""


@launcher.command("start")
@click.option("--study", "-s", help="Only execute this study's runs.")
@click.option("--executor", type=click.Choice(["local", "slurm", "dask", "pilot"]), help="Default: motoko.yaml's launcher.executor.")
@click.option("--max-parallel", "-j", type=click.IntRange(min=1), help="Runs executing at once (default: cores; pilot: each pilot's cores).")
@click.option("--detach", "-d", is_flag=True, help="Run in the background.")
@click.option("--once", is_flag=True, help="Execute the runs waiting now, then exit.")
@click.option("--max-runs", type=click.IntRange(min=1), help="Exit after executing this many runs.")
@click.option("--idle-exit", type=SECONDS, help="Exit after this many seconds with nothing to do.")
@click.option("--machine-name", help="Name recorded on the runs (default: host name).")
@click.option("--db", "db_address", metavar="ZEO_ADDRESS", help="Database to serve, e.g. zeo://HOST:PORT (a launcher on another host).")
@click.option("--walltime-end", type=SECONDS, metavar="EPOCH",
              help="When this launcher's allocation ends (seconds since 1970): claim only runs that fit (pilots).")
@click.pass_context
def launcher_start(
    ctx: click.Context,
    study: str | None,
    executor: str | None,
    max_parallel: int | None,
    detach: bool,
    once: bool,
    max_runs: int | None,
    idle_exit: float | None,
    machine_name: str | None,
    db_address: str | None,
    walltime_end: float | None,
) -> None:
    """Start a launcher for the workflow's studies (foreground unless --detach).

    With ``--executor pilot`` it submits pilot launchers as SLURM jobs
    instead of executing runs (motoko.yaml ``launcher: pilots:``).
    """
    from motoko.launch.service import build_launchers, register_self, start_daemon

    config = config_of(ctx)
    if study:
        config.resolve(study)
    if db_address:
        from motoko.study.server import parse_address

        parse_address(db_address, config.directory)  # a malformed address fails here, clearly
        os.environ["MOTOKO_DB"] = db_address  # this launcher, its runs and its studies use it
    kind = executor or config.launcher.executor
    if detach:
        args = []
        for flag, value in (("--study", study), ("--executor", executor), ("--max-parallel", max_parallel),
                            ("--max-runs", max_runs), ("--idle-exit", idle_exit), ("--machine-name", machine_name),
                            ("--db", db_address), ("--walltime-end", walltime_end)):
            if value is not None:
                args += [flag, str(value)]
        if once:
            args.append("--once")
        info = start_daemon(config, args, study=study, executor=kind)
        click.echo(f"launcher started in the background (pid {info.pid}, log {info.log})")
        return
    launchers = build_launchers(
        config, study=study, executor=executor, max_parallel=max_parallel,
        once=once or None, max_runs=max_runs, idle_exit=idle_exit, machine_name=machine_name,
        walltime_end=walltime_end,
        # A launcher inside a SLURM job is a pilot: `motoko pilots` finds it by its job.
        pilot_job=os.environ.get("SLURM_JOB_ID") if walltime_end else None,
    )
    record = register_self(config, study=study, executor=kind)
    try:
        reports = asyncio.run(_serve_with_signals(launchers))
    finally:
        record.unlink(missing_ok=True)
        for item in launchers:
            item.db.close()
    executed = sum(r.executed for r in reports)
    given_back = sum(r.given_back for r in reports)
    click.echo(
        f"launcher exited: {executed} run(s) executed, {sum(r.finished for r in reports)} finished, "
        f"{sum(r.failed for r in reports)} failed, {sum(r.cancelled for r in reports)} cancelled, "
        f"{sum(r.lost_detected for r in reports)} lost detected, {sum(r.claims_conflicts for r in reports)} conflict retries"
        + (f", {given_back} given back to launchers that joined" if given_back else ""),
        err=True,
    )


async def _serve_with_signals(launchers: list[Any]) -> list[Any]:
    """Serve until done; SIGTERM/SIGINT make every launcher drain and exit."""
    import signal

    from motoko.launch.service import serve_all

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [item.stop() for item in launchers])
    return await serve_all(launchers)


@launcher.command("stop")
@click.option("--timeout", type=SECONDS, default=60.0, show_default=True, help="Seconds to wait for running runs.")
@click.pass_context
def launcher_stop(ctx: click.Context, timeout: float) -> None:
    """Stop every launcher of the workflow once its running runs ended."""
    from motoko.launch.service import stop_daemons

    stopped = stop_daemons(config_of(ctx), timeout=timeout)
    click.echo(f"{stopped} launcher(s) stopped" if stopped else "no launcher was running")


@launcher.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def launcher_status(ctx: click.Context, fmt: str) -> None:
    """List the workflow's running launchers."""
    from motoko.launch.service import daemon_status

    config = config_of(ctx)
    infos = daemon_status(config)
    records = _records(config)
    if not infos and not records and fmt == "table":
        click.echo("no launcher running")
        return
    if fmt == "json":
        click.echo(render(["pid", "studies", "executor", "since", "log", "runs", "conflict retries", "host"],
                          _joined(infos, records), fmt))
        return
    if infos:
        rows = [[i.pid, i.study or "all", i.executor, time.strftime("%H:%M:%S", time.localtime(i.started)), str(i.log)] for i in infos]
        click.echo(render(["pid", "studies", "executor", "since", "log"], rows, fmt))
    if records:
        # Every live launcher of the database, on any host (pilots too).
        rows = [[r.machine_name, r.pid, r.executor, r.pilot_job or "-", r.executed, r.conflicts,
                 f"{r.conflicts / r.executed:.2f}" if r.executed else "-"] for r in records]
        click.echo(render(["host", "pid", "executor", "pilot job", "runs", "conflict retries", "per run"], rows, fmt))


def _records(config: Any) -> list[Any]:
    """The live launcher records of the workflow's database; [] when its server is down.

    Reading never starts a server.
    """
    from motoko.config import database_address
    from motoko.study.database import StudyDB
    from motoko.study.server import default_address, reachable

    address = database_address(config, next(iter(config.studies))) or default_address(config.directory)
    if not reachable(address):
        return []
    db = StudyDB(address)
    try:
        return [
            SimpleNamespace(
                machine_name=r.machine_name, pid=r.pid, executor=r.executor, pilot_job=r.pilot_job, executed=r.executed,
                conflicts=r.conflicts, studies=list(r.studies), started=r.started,
            )
            for r in db.launchers().values() if r.stopped is None
        ]
    finally:
        db.close()


def _joined(infos: list[Any], records: list[Any]) -> list[list[Any]]:
    """One row per launcher for JSON: its pid file (if local) and its record (if live)."""
    by_pid = {int(r.pid): r for r in records}
    rows = []
    for info in infos:
        record = by_pid.pop(info.pid, None)
        rows.append([info.pid, info.study or "all", info.executor, info.started, str(info.log),
                     record.executed if record else None, record.conflicts if record else None,
                     record.machine_name if record else None])
    for record in by_pid.values():
        rows.append([record.pid, ",".join(record.studies), record.executor, record.started.timestamp(), "",
                     record.executed, record.conflicts, record.machine_name])
    return rows


COMMANDS = [launcher]

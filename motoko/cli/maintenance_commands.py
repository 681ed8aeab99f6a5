"""Maintenance: ``motoko clean`` (delete runs) and ``motoko db pack|check``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

from motoko.cli.db_commands import open_workflow
from motoko.errors import DatabaseError


def _run_dir_to_remove(run: Any) -> Path | None:
    """The run's directory, only if it looks like one motoko made (never anything else)."""
    if not run.run_path:
        return None
    path = Path(run.run_path)
    if path.name != f"run-{run.id}" or not path.parent.name.startswith("BD-") or not path.is_dir():
        return None
    return path


@click.command()
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study.")
@click.option("--delete", is_flag=True, help="Really delete (default: only list what would go).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def clean(ctx: click.Context, constraints: tuple[str, ...], study: str | None, delete: bool, yes: bool) -> None:
    """Delete the runs matching CONSTRAINTS and their run directories.

    Without --delete, only lists them. Running runs are refused: cancel them
    first. Jobs are kept (they cost little and keep dedupe exact).
    """
    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        plan = []
        for name in studies:
            runs = workflow.db_for(name).select(name, list(constraints) or None)
            active = [r for r in runs if r.state in ("LAUNCHED", "RUNNING")]
            if active:
                raise DatabaseError(
                    f"{len(active)} matching run(s) of {name} are executing (e.g. {name}.{active[0].id})",
                    hint="cancel them first with `motoko cancel`, or narrow the constraints",
                )
            plan.append((name, [r.id for r in runs], [_run_dir_to_remove(r) for r in runs]))
        total = sum(len(ids) for _, ids, _ in plan)
        for name, ids, _ in plan:
            if ids:
                click.echo(f"{name}: {len(ids)} run(s): {', '.join(map(str, ids[:20]))}{' ...' if len(ids) > 20 else ''}")
        if not total:
            click.echo("no run matches")
            return
        if not delete:
            click.echo("nothing deleted (add --delete to delete them)")
            return
        if not yes:
            click.confirm(f"Delete {total} run(s) and their directories?", abort=True, err=True)
        for name, ids, dirs in plan:
            db = workflow.db_for(name)

            def change(db: Any = db, name: str = name, ids: list[int] = ids) -> None:
                study_ = db.study(name)
                for rid in ids:
                    if rid in study_.runs:
                        study_.delete(study_.runs[rid])

            db.transact(change, what=f"delete runs of {name}")
            for path in dirs:
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True)
        click.echo(f"deleted {total} run(s)")
    finally:
        workflow.close()


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("pack")
@click.option("--days", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Keep history newer than this.")
@click.pass_context
def db_pack(ctx: click.Context, days: float) -> None:
    """Reclaim space: drop old revisions and unreachable objects."""
    from motoko.study.server import server_status

    workflow = open_workflow(ctx)
    try:
        status = server_status(workflow.directory)
        before = status.data_file.stat().st_size if status.data_file.exists() else 0
        for database in workflow.databases:
            database.pack(days)
        after = status.data_file.stat().st_size if status.data_file.exists() else 0
        click.echo(f"packed: {before / 1e6:.2f} MB → {after / 1e6:.2f} MB")
    finally:
        workflow.close()


@db.command("check")
@click.pass_context
def db_check(ctx: click.Context) -> None:
    """Check the data file and every study's indexes; exit 1 on a problem."""
    from ZODB.scripts.fstest import FormatError, check

    from motoko.study.server import server_status

    workflow = open_workflow(ctx)
    problems: list[str] = []
    try:
        data = server_status(workflow.directory).data_file
        if data.exists():
            try:
                check(str(data))
            except FormatError as exc:
                problems.append(f"{data}: {exc}")
        for name in workflow.task_managers:
            problems += [f"{name}: {p}" for p in workflow.db_for(name).study(name).check_indexes()]
    finally:
        workflow.close()
    for problem in problems:
        click.echo(problem)
    if problems:
        ctx.exit(1)
    click.echo("database ok")


COMMANDS = [clean, db]

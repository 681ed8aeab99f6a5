"""Maintenance: ``motoko clean`` (delete runs) and ``motoko db pack|check``."""

from __future__ import annotations

import click

from motoko.cli.db_commands import open_workflow
from motoko.views.cleaning import delete_runs, plan_clean, refuse_outside


@click.command()
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study.")
@click.option("--delete", is_flag=True, help="Really delete (default: only list what would go).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--keep-outside", is_flag=True,
              help="Delete the records of runs whose directory is not in this project's run tree, keeping those directories.")
@click.pass_context
def clean(ctx: click.Context, constraints: tuple[str, ...], study: str | None, delete: bool, yes: bool,
          keep_outside: bool) -> None:
    """Delete the runs matching CONSTRAINTS and their run directories.

    Without --delete, only lists them and the directories that would go.
    Running runs are refused: cancel them first. Only directories inside this
    project's run tree are ever deleted; a run whose directory lies elsewhere
    (imported from another project, a symlink) makes the clean refuse, unless
    --keep-outside. Jobs are kept (they cost little and keep dedupe exact).
    """
    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        plan = plan_clean(workflow, studies, list(constraints))
        if not keep_outside:
            refuse_outside(plan)
        total = sum(len(entry.ids) for entry in plan)
        for entry in plan:
            ids = entry.ids
            if ids:
                click.echo(f"{entry.study}: {len(ids)} run(s): {', '.join(map(str, ids[:20]))}{' ...' if len(ids) > 20 else ''}")
            for path in entry.directories:
                click.echo(f"  delete {path}")
            for rid, path, why in entry.outside:
                click.echo(f"  keep {path} (run {rid}: {why})")
        if not total:
            click.echo("no run matches")
            return
        if not delete:
            click.echo("nothing deleted (add --delete to delete them)")
            return
        if not yes:
            count = sum(len(entry.directories) for entry in plan)
            click.confirm(f"Delete {total} run(s) and {count} directories?", abort=True, err=True)
        click.echo(f"deleted {delete_runs(workflow, plan)} run(s)")
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

"""``motoko rerun``, and what ``motoko run`` says about outdated runs and dry runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from motoko.cli.db_commands import open_workflow
from motoko.errors import OutdatedRunsError

if TYPE_CHECKING:  # the CLI starts fast: the engine is imported by the command that needs it
    from motoko.flow.outdated import OutdatedReport


def outdated_choice(rerun_outdated: bool, keep_outdated: bool) -> str | None:
    """``--rerun-outdated`` / ``--keep-outdated`` → "rerun", "keep" or None (motoko.yaml decides)."""
    if rerun_outdated and keep_outdated:
        raise click.UsageError("give --rerun-outdated or --keep-outdated, not both")
    return "rerun" if rerun_outdated else "keep" if keep_outdated else None


def ask_outdated(report: OutdatedReport) -> str:
    """On a terminal: list the outdated runs and ask whether to run them again or reuse them."""
    click.echo(report.summary(), err=True)
    for line in report.lines():
        click.echo("  " + line, err=True)
    if click.confirm("Run them (and their descendants) again?", default=True, err=True):
        return "rerun"
    click.confirm("Reuse them as they are (recorded on the runs)?", abort=True, err=True)
    return "keep"


def outdated_before_detach(file: Path, run_name: str | None, fresh: bool, outdated: str | None) -> list[str]:
    """Arguments deciding the outdated runs of a detached ``motoko run``: asked now, not in its log later.

    Raises:
        OutdatedRunsError: outdated runs, motoko.yaml says to ask, and this is not a terminal.
    """
    if outdated is not None or fresh:
        return []
    from motoko.config import find_config
    from motoko.flow.dry_run import current_run_name
    from motoko.flow.outdated import find_outdated
    from motoko.flow.workflow import Workflow

    path = Path(file).resolve()
    config_path = find_config(path.parent)
    with Workflow(config_path, run_name=current_run_name(config_path.parent, path, run_name, False), create=False) as workflow:
        if workflow.config.resume_outdated != "ask":
            return []
        report = find_outdated(workflow)
    if not report:
        return []
    if not sys.stdin.isatty():
        raise OutdatedRunsError(report.summary(), report.files(), report.total)
    return ["--rerun-outdated"] if ask_outdated(report) == "rerun" else ["--keep-outdated"]


def print_dry_run(file: Path, params: dict[str, Any], *, run_name: str | None, fresh: bool, outdated: str | None) -> None:
    """``motoko run FILE --dry-run``: the plan, step by step."""
    from motoko.flow.dry_run import dry_run_file

    _, lines = dry_run_file(file, params, run_name=run_name, fresh=fresh, outdated=outdated)
    for line in lines:
        click.echo(line)


@click.command()
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study's runs.")
@click.option("--with-descendants", is_flag=True, help="Also run again every run descending from them (when the workflow next asks for it).")
@click.option("--dry-run", is_flag=True, help="Print what would be rerun; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--undo", is_flag=True, help="Give the runs of the last rerun their previous results back (if not started).")
@click.pass_context
def rerun(
    ctx: click.Context, constraints: tuple[str, ...], study: str | None, with_descendants: bool, dry_run: bool,
    yes: bool, undo: bool,
) -> None:
    """Run again the finished runs matching CONSTRAINTS, keeping their history.

    The matching runs are requeued as new attempts at once (a launcher runs
    them); with --with-descendants, the runs descending from them are run
    again when the workflow next asks for them (after their parents), or
    superseded if their parameters changed. `motoko rerun --undo` restores the
    previous results of the last rerun as long as no new attempt has started.
    """
    from motoko.flow import rerun as reruns

    if undo:
        if constraints or study or with_descendants or dry_run:
            raise click.UsageError("--undo takes no constraints or other options")
        workflow = open_workflow(ctx)
        try:
            count = reruns.undo_last_rerun(workflow)
        finally:
            workflow.close()
        click.echo(f"undid the last rerun: {count} run(s) have their previous results back")
        return
    if not constraints:
        raise click.UsageError('give CONSTRAINTS saying which runs to rerun (e.g. "a > 0"), or --undo')
    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        plan = reruns.plan_rerun(workflow, constraints, studies, with_descendants)
        skipped = f" ({plan.skipped} matching run(s) not finished are left alone)" if plan.skipped else ""
        if not plan.total:
            click.echo(f"no finished run matches{skipped}")
            return
        for line in plan.describe():
            click.echo(line)
        if dry_run:
            click.echo(f"dry run: {plan.total} run(s) would be rerun{skipped}; nothing was changed")
            return
        if not yes:
            click.confirm(f"Rerun {plan.total} run(s)?", abort=True, err=True)
        reruns.apply_rerun(workflow, plan)
        click.echo(f"rerun {plan.total} run(s){skipped}; undo with `motoko rerun --undo` before they start")
    finally:
        workflow.close()


COMMANDS = [rerun]

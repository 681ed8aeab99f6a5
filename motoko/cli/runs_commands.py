"""``motoko runs list|show|ls|tail|wait``: find runs and look inside them.

A run is named ``STUDY.ID`` (``calc.3``) or just ``ID`` when only one study
has a run with that id; ``--study`` says which study otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

from motoko.cli.db_commands import open_workflow
from motoko.cli.format import cell, colour_state, render
from motoko.errors import MotokoError, RunNotFound, UnknownNameError, WaitTimeout
from motoko.study.records import Run
from motoko.study.values import jsonable
from motoko.views.status import run_note

#: The fields ``runs show`` prints first, in this order (the rest follows).
SHOWN_FIRST = (
    "state", "job", "run_name", "event_name", "attempt", "created", "launched", "started", "finished",
    "computation_time", "total_time", "queue_position", "machine_name", "launcher", "exit_code", "error",
    "status", "progress", "output", "metadata", "run_path", "parents", "quantities",
)
#: Stored fields not worth a line of their own in ``runs show``.
NOT_SHOWN = {"id", "study", "job_id", "history", "stop_requested", "heartbeat", "executor_id"}
#: Marks shown only when set (see motoko.flow.outdated).
SHOWN_IF_SET = {"outdated_kept", "rerun_pending", "superseded"}


class RunRef(click.ParamType):
    """``STUDY.ID`` or ``ID``: a run, by its study and id."""

    name = "run"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str | None, int]:
        if isinstance(value, tuple):
            return value
        study, dot, rid = str(value).rpartition(".")
        if not rid.isdigit() or (dot and not study):
            self.fail(f"{value!r} is not a run (write ID or STUDY.ID, e.g. 3 or calc.3)", param, ctx)
        return (study or None), int(rid)


def find_run(workflow: Any, ref: tuple[str | None, int], study: str | None) -> Run:
    """The run ``ref`` names; without a study, the one study holding that id.

    Raises:
        RunNotFound: no such run in the named study.
        MotokoError: no study, or several, hold a run with that id.
    """
    named, rid = ref
    if named and study and workflow.config.resolve(named) != workflow.config.resolve(study):
        raise click.UsageError(f"run {named}.{rid} is not in --study {study}")
    chosen = named or study
    if chosen:
        manager = workflow[chosen]
        return manager.runs[rid]  # type: ignore[no-any-return]
    holders = [name for name in workflow.task_managers if rid in workflow.db_for(name).study(name).runs]
    if len(holders) == 1:
        return workflow[holders[0]].runs[rid]  # type: ignore[no-any-return]
    studies = list(workflow.task_managers)
    if not holders:
        if len(studies) == 1:
            raise RunNotFound(studies[0], [rid])
        raise MotokoError(
            f"no run with id {rid} in any study ({', '.join(studies)})",
            hint="list existing runs with `motoko runs list`",
        )
    raise MotokoError(
        f"run id {rid} exists in studies {', '.join(holders)}",
        hint=f"say which: {holders[0]}.{rid} or --study {holders[0]}",
    )


def duration(seconds: float | None) -> str:
    """``0.52 s``, ``3 min 05 s``, ``2 h 07 min``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    whole = int(round(seconds))
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def size(n: int) -> str:
    """``31 B``, ``1.2 KiB``, ``3.4 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _job_text(params: dict[str, Any]) -> str:
    """``x=1.0, mode=ok``: values as the user wrote them (1.0 stays 1.0)."""
    return ", ".join(f"{k}={v if isinstance(v, str | int | float) else cell(v)}" for k, v in params.items() if k != "id")


def _label(run: Run) -> str:
    return f"{run.study}.{run.id}"


# -- the group ----------------------------------------------------------------------------


@click.group()
def runs() -> None:
    """Find runs and look inside them: list, show, ls, tail, wait."""


@runs.command("list")
@click.option("--last", "-n", type=click.IntRange(min=0), help="Only the N newest runs (0: all).")
@click.option("--state", help="Only runs in this state (e.g. FAILED).")
@click.option("--study", "-s", help="Only this study (default: every study).")
@click.option("--run-name", help="Only runs of this run name.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def runs_list(ctx: click.Context, last: int | None, state: str | None, study: str | None,
              run_name: str | None, fmt: str) -> None:
    """List runs, newest first."""
    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        found: list[Run] = []
        unknown: list[UnknownNameError] = []
        for name in studies:
            try:
                found += workflow[name].runs(last=last, state=state, run_name=run_name).runs()
            except UnknownNameError as exc:  # a user state may exist in one study only
                unknown.append(exc)
        if unknown and len(unknown) == len(studies):
            raise unknown[0]
        found.sort(key=lambda r: (r.created is not None, r.created, r.id), reverse=True)
        if last:  # 0 means all, as tm.runs(last=0)
            found = found[:last]
        columns = ["study", "id", "state", "run_name", "job", "created", "time", "progress"]
        rows: list[list[Any]] = [
            [r.study, r.id, r.state, r.run_name, _job_text(r.job.to_dict()), r.created,
             duration(r.computation_time), None if r.progress is None else f"{100 * r.progress:.0f}%"]
            for r in found
        ]
        if fmt == "json":
            click.echo(json.dumps([r.to_dict() for r in found], indent=1))
        elif not rows:
            click.echo("no run matches")
        else:
            click.echo(render(columns, rows, "table"))
    finally:
        workflow.close()


def _show_value(name: str, run: Run, data: dict[str, Any]) -> str:
    value = data.get(name)
    if name == "job":
        return _job_text(value or {})
    if name in ("computation_time", "total_time"):
        return duration(value)
    if name == "progress" and value is not None:
        return f"{100 * value:.0f}%"
    if name in ("created", "launched", "started", "finished"):
        stamp = getattr(run, name)
        return cell(stamp) + (" UTC" if stamp is not None else "")
    if name == "fingerprint" and value:
        files = [f"{file}  {digest[:19]}" for file, digest in sorted((value.get("files") or {}).items())]
        return "\n".join([f"{value.get('digest')} (motoko {value.get('motoko')})", *files])
    if name == "metadata":
        return ", ".join(f"{k}={v}" for k, v in (value or {}).items())
    if name == "parents":
        return ", ".join(f"{s}.{i}" for s, i in (value or []))
    if name == "quantities":
        return ", ".join(value or [])
    if name == "error" and value:
        return str(value)
    if isinstance(value, dict) and not value:
        return ""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)  # 2.0 stays 2.0 (a table cell would show 2)
    return cell(value)


def show_lines(run: Run) -> list[str]:
    """``runs show`` as aligned ``name  value`` lines (continuation lines indented)."""
    data = run.to_dict()
    names = [n for n in SHOWN_FIRST if n in data or n in ("job",)]
    names += [n for n in data if n not in names and n not in NOT_SHOWN and (n not in SHOWN_IF_SET or data[n])]
    width = max(len(n) for n in [*names, "run"]) + 2
    lines = ["run".ljust(width) + _label(run)]
    for name in names:
        text = _show_value(name, run, data)
        first, *rest = text.splitlines() or [""]
        shown = colour_state(first, first) if name == "state" else first
        lines.append((name.ljust(width) + shown).rstrip())
        lines += [" " * width + more for more in rest]
    return lines


@runs.command("show")
@click.argument("run", type=RunRef())
@click.option("--study", "-s", help="The run's study (when several have this id).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def runs_show(ctx: click.Context, run: tuple[str | None, int], study: str | None, fmt: str) -> None:
    """Everything about one run: RUN is ID or STUDY.ID."""
    workflow = open_workflow(ctx)
    try:
        found = find_run(workflow, run, study)
        note = run_note(workflow, found)
        if fmt == "json":
            click.echo(json.dumps({**found.to_dict(), **({"note": note} if note else {})}, indent=1))
        else:
            lines = show_lines(found)
            if note:  # its launcher went silent: say so, aligned with the other values
                width = len(lines[0]) - len(lines[0][3:].lstrip())
                lines.append("note".ljust(width) + click.style(note, fg="red"))
            click.echo("\n".join(lines))
    finally:
        workflow.close()


@runs.command("ls")
@click.argument("run", type=RunRef())
@click.option("--study", "-s", help="The run's study (when several have this id).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def runs_ls(ctx: click.Context, run: tuple[str | None, int], study: str | None, fmt: str) -> None:
    """List the files of a run's directory (name, size, modified)."""
    workflow = open_workflow(ctx)
    try:
        found = find_run(workflow, run, study)
        files = found.files()
        if fmt == "json":
            click.echo(json.dumps([jsonable(f._asdict()) for f in files], indent=1))
        elif not files:
            click.echo(f"run {_label(found)} has no files yet (it is {found.state})")
        else:
            click.echo(f"{found.run_path}:")
            click.echo(render(["name", "size", "modified"], [[f.name, size(f.size), f.modified] for f in files], "table"))
    finally:
        workflow.close()


@runs.command("tail")
@click.argument("run", type=RunRef())
@click.option("--study", "-s", help="The run's study (when several have this id).")
@click.option("--file", "name", default="stdout", show_default=True, help="The file of the run directory.")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=20, show_default=True, help="Lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the run ends.")
@click.pass_context
def runs_tail(ctx: click.Context, run: tuple[str | None, int], study: str | None, name: str, lines: int,
              follow: bool) -> None:
    """Print the end of a run's stdout (or --file); -f follows it until the run ends."""
    workflow = open_workflow(ctx)
    try:
        found = find_run(workflow, run, study)
        if not follow:
            for line in found.tail(name, lines):
                click.echo(line)
            return
        if not found.is_terminal:
            click.echo(f"following {name} of run {_label(found)} ({found.state}); Ctrl-C stops", err=True)
        for line in found.tail(name, lines, follow=True):
            click.echo(line)
        click.echo(f"run {_label(found)} ended {found.state}", err=True)
    finally:
        workflow.close()


@runs.command("wait")
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study (default: every study).")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds (exit 1).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar on stderr.")
@click.pass_context
def runs_wait(ctx: click.Context, constraints: tuple[str, ...], study: str | None, timeout: float | None,
              progress: bool) -> None:
    """Wait until the runs matching CONSTRAINTS are FINISHED (exit 1 if one fails or on timeout)."""
    import time

    from motoko.flow.launcher_watch import watch_for
    from motoko.flow.waiting import is_done

    workflow = open_workflow(ctx)
    try:
        handles = _selected(workflow, constraints, study)
        total = sum(len(h) for h in handles)
        if total == 0:
            click.echo("no run matches")
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for index, handle in enumerate(handles):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                # The sync form runs the change-feed wait on its own event loop.
                handle.result(timeout=left, progress=progress)
            except WaitTimeout as exc:  # name the whole timeout and every study's unfinished runs
                later = [(h.study, r.id, r.state) for h in handles[index + 1:] for r in h.runs() if not is_done(r)]
                pending = exc.pending + later
                found = watch_for(workflow).check(pending)
                raise WaitTimeout(timeout or 0.0, pending, str(found) if found else None) from None
        click.echo(f"{total} run(s) finished")
    finally:
        workflow.close()


def _selected(workflow: Any, constraints: Sequence[str], study: str | None) -> list[Any]:
    """One RunList per study of the runs matching ``constraints`` (bad constraints raise first)."""
    from motoko.flow.futures import RunList

    studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
    selected = [(name, workflow.db_for(name).select(name, list(constraints) or None)) for name in studies]
    return [RunList(workflow, name, [r.id for r in found], resume=False) for name, found in selected if found]


COMMANDS = [runs]

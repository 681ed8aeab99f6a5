"""Commands that show the work: status, export, import, plot, ui, init, completion."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from motoko.cli.db_commands import open_workflow
from motoko.errors import MotokoError, QueryError
from motoko.study.query import Constraint, Where


def complete_study(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion of study names from the motoko.yaml found upward."""
    from click.shell_completion import CompletionItem

    from motoko.config import load_config

    try:
        directory = ctx.find_root().params.get("directory")
        config = load_config(directory)
    except (MotokoError, OSError):
        return []
    names = [*config.studies, *config.aliases]
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


_STUDY = click.option("--study", "-s", "studies", multiple=True, shell_complete=complete_study,
                      help="Only this study (repeatable; default: every study).")


def _scoped(constraints: tuple[str, ...], run_name: str | None) -> list[Constraint]:
    items: list[Constraint] = list(constraints)
    if run_name:
        items.append(Where("run_name", "=", run_name))
    return items


def _selected(workflow: Any, studies: tuple[str, ...], constraints: list[Constraint]) -> list[tuple[str, list[Any]]]:
    """Runs per study; a constraint naming a field a study lacks skips that study unless it was named."""
    names = [workflow.config.resolve(s) for s in studies] if studies else list(workflow.task_managers)
    out, errors = [], []
    for name in names:
        try:
            out.append((name, workflow.db_for(name).select(name, constraints or None)))
        except QueryError as exc:
            if studies:
                raise
            errors.append(exc)
    if not out and errors:
        raise errors[0]
    return out


# -- status ---------------------------------------------------------------------------------------


@click.command()
@_STUDY
@click.option("--watch", "-w", is_flag=True, help="Redraw in place whenever the database changes (Ctrl-C stops).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--failures", type=click.IntRange(min=0), default=5, show_default=True, help="Latest failures shown.")
@click.option("--count", type=click.IntRange(min=1), help="With --watch: stop after this many updates.")
@click.option("--until-done", is_flag=True, help="With --watch: stop once runs exist and none waits or executes.")
@click.pass_context
def status(
    ctx: click.Context, studies: tuple[str, ...], watch: bool, fmt: str, failures: int, count: int | None, until_done: bool
) -> None:
    """Per study the runs by state, the running runs and the latest failures.

    With --watch the view is redrawn within moments of every change of the
    database (ZEO pushes changes; nothing polls) and every 5 s for the
    elapsed times; with --format json each update is one JSON line.
    """
    from motoko.study.feed import ThreadWaiter
    from motoko.views.status import collect_status, render_text, to_json

    workflow = open_workflow(ctx)
    signal = ThreadWaiter([db.feed for db in workflow.databases]) if watch else None
    tty = sys.stdout.isatty()
    updates = 0
    try:
        while True:
            workflow.refresh()
            snapshot = collect_status(workflow, studies or None, failures=failures)
            if fmt == "json":
                click.echo(json.dumps(to_json(snapshot), indent=None if watch else 1))
            elif watch and tty:
                # Home the cursor and overwrite line by line, clearing each line's
                # rest and what is below the end: the screen is never blank, so a
                # redraw does not flicker (clearing the whole screen first did).
                lines = render_text(snapshot, title="motoko status --watch").splitlines()
                click.echo("\033[H" + "".join(f"{line}\033[K\n" for line in lines) + "\033[J", nl=False)
            else:
                click.echo(render_text(snapshot) + ("\n" if watch else ""))
            updates += 1
            if signal is None or (count and updates >= count) or (until_done and snapshot.done):
                return
            # Elapsed times tick on: redraw every few seconds even without a change.
            signal.wait(5.0, settle=0.05)
    except KeyboardInterrupt:
        return  # Ctrl-C is how one leaves --watch, not an error
    finally:
        if signal is not None:
            signal.close()
        workflow.close()


# -- export / import ----------------------------------------------------------------------------


@click.command("export")
@click.argument("constraints", nargs=-1)
@_STUDY
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "parquet", "motoko"]), default="csv", show_default=True)
@click.option("--quantities", "-q", help="Comma-separated quantities (default: all) as columns q.NAME (last value).")
@click.option("--run-name", "-n", help="Only runs of this run name.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Output file (default: standard output).")
@click.pass_context
def export(
    ctx: click.Context, constraints: tuple[str, ...], studies: tuple[str, ...], fmt: str,
    quantities: str | None, run_name: str | None, output: Path | None,
) -> None:
    """Export the runs matching CONSTRAINTS as a table or a motoko file.

    Tables (csv, json, parquet) have one row per run: job parameters, run
    fields and the last value of each quantity. The motoko format keeps
    everything (ids, states, history, quantities at every step, parents)
    for `motoko import`.
    """
    from motoko.views import export as exporting

    workflow = open_workflow(ctx)
    try:
        scoped = _scoped(constraints, run_name)
        if fmt == "motoko":
            names = [n for n, _ in _selected(workflow, studies, scoped)]
            data = exporting.dump_studies(workflow, names, scoped or None)
            text = exporting.write_dump(data, output)
            total = sum(len(s["runs"]) for s in data["studies"])
        else:
            import pandas as pd

            wanted = [q.strip() for q in quantities.split(",") if q.strip()] if quantities else None
            frames = [exporting.to_dataframe(runs, wanted) for _, runs in _selected(workflow, studies, scoped)]
            frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            if fmt == "parquet" and output is None:
                raise click.UsageError("parquet is binary: give -o FILE.parquet")
            text = exporting.write_table(frame, fmt, output)
            total = len(frame)
        if text is not None:
            click.echo(text, nl=False)
        else:
            click.echo(f"exported {total} run(s) to {output}", err=True)
    finally:
        workflow.close()


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_STUDY
@click.option("--database", metavar="ADDRESS", help="Import into this database (zeo://PATH or zeo://HOST:PORT) instead of the workflow's.")
@click.pass_context
def import_(ctx: click.Context, file: Path, studies: tuple[str, ...], database: str | None) -> None:
    """Import the studies of FILE (written by `motoko export --format motoko`).

    Ids, states, quantities and provenance are kept. Importing the same file
    twice changes nothing; a job or run id holding other data is refused.
    """
    from motoko.views.export import import_dump, load_dump

    data = load_dump(file)
    wanted = list(studies) or [s["name"] for s in data["studies"]]
    if database:
        from motoko.study.database import StudyDB

        with StudyDB(database) as db:
            done = import_dump(db, data, wanted)
            where = {name: str(db.address) for name in done}
    else:
        workflow = open_workflow(ctx)
        try:
            done, where = {}, {}
            for name in wanted:
                db = workflow.db_for(name) if name in workflow.config.studies else workflow.main_db
                done.update(import_dump(db, data, [name]))
                where[name] = str(db.address)
        finally:
            workflow.close()
    for name, count in done.items():
        click.echo(f"study {name}: {count} run(s) imported into {where[name]}")


# -- plot -------------------------------------------------------------------------------------------


@click.command()
@click.argument("quantity")
@click.argument("constraints", nargs=-1)
@_STUDY
@click.option("--x", "x_field", metavar="FIELD", help="x axis: step, another quantity, or a job/run field.")
@click.option("--run-name", "-n", help="Only runs of this run name.")
@click.option("--title", help="Plot title (default: the quantity, studies and number of runs).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Image file (.png, .svg, .pdf; default QUANTITY.png).")
@click.pass_context
def plot(
    ctx: click.Context, quantity: str, constraints: tuple[str, ...], studies: tuple[str, ...],
    x_field: str | None, run_name: str | None, title: str | None, output: Path | None,
) -> None:
    """Plot QUANTITY of the runs matching CONSTRAINTS, one line per run.

    Lines are labelled by the job parameters that differ between the runs.
    """
    from motoko.views.plot import plot_runs

    workflow = open_workflow(ctx)
    try:
        runs = [run for _, selected in _selected(workflow, studies, _scoped(constraints, run_name)) for run in selected]
        target = output or Path(f"{quantity}.png")
        data = plot_runs(runs, quantity, target, x=x_field, title=title)
        click.echo(f"plotted {quantity} of {sum(len(s.runs) for s in data.series)} run(s) "
                   f"({len(data.series)} line(s), x: {data.xlabel}) to {target}")
    finally:
        workflow.close()


# -- ui ----------------------------------------------------------------------------------------------


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0 picks a free port.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@click.option("--exit-after", type=click.FloatRange(min=0), metavar="SECONDS", help="Stop serving after this long.")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, open_browser: bool, exit_after: float | None) -> None:
    """Serve the live dashboard: studies, runs, run details and the DAG.

    The page updates as the database changes. It listens on 127.0.0.1
    only, unless --host says otherwise: the dashboard has no login, so anyone
    who reaches the port reads your studies. Cancelling and retrying runs
    from the page needs the token in the printed address (?token=...), and
    is accepted from this machine only.
    """
    from motoko.study.server import is_loopback
    from motoko.views.web import Dashboard

    workflow = open_workflow(ctx)
    try:
        try:
            dashboard = Dashboard(workflow, host, port)
        except OSError as exc:
            raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror} (try another --port, or 0)") from None
        if not is_loopback(host):
            click.echo(f"motoko ui: warning: listening on {host}: anyone who reaches it reads your studies", err=True)
        # The Jupyter way: the token is in the address; whoever opens it may act.
        click.echo(f"motoko ui: serving {dashboard.token_url} (Ctrl-C to stop)", err=True)
        if open_browser:
            import webbrowser

            webbrowser.open(dashboard.token_url)
        try:
            dashboard.serve_forever(exit_after)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how one stops serving
        finally:
            dashboard.close()
    finally:
        workflow.close()


# -- getting started ----------------------------------------------------------------------------------


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--study", default="decay", show_default=True, help="Name of the example study.")
def init(directory: Path, study: str) -> None:
    """Create DIRECTORY with a workflow that runs as is (one study, one workflow file).

    Running it again does nothing; it never overwrites a file that differs.
    """
    from motoko.views.scaffold import scaffold

    done = scaffold(directory, study)
    for path in done.created:
        click.echo(f"created {path.relative_to(done.directory)}")
    if not done.created:
        click.echo(f"{directory} is already set up (nothing to do)")
        return
    click.echo(f"\nnext:  cd {directory} && motoko run workflows/main.py && motoko status")


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), required=False)
@click.pass_context
def completion(ctx: click.Context, shell: str | None) -> None:
    """Print the shell completion script (default: for $SHELL).

    Enable it with, e.g., `eval "$(motoko completion bash)"` in ~/.bashrc,
    or `motoko completion fish > ~/.config/fish/completions/motoko.fish`.
    """
    from click.shell_completion import get_completion_class

    chosen = shell or Path(os.environ.get("SHELL", "bash")).name
    cls = get_completion_class(chosen)
    if cls is None:
        raise click.UsageError(f"no completion for shell {chosen!r}; name one of bash, zsh, fish")
    root = ctx.find_root().command
    click.echo(cls(root, {}, "motoko", "_MOTOKO_COMPLETE").source())


COMMANDS = [status, export, import_, plot, ui, init, completion]

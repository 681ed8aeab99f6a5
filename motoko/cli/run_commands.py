"""``motoko run``, ``motoko graph`` and ``motoko cancel``."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from motoko.cli import progress, rerun_commands
from motoko.cli.db_commands import open_workflow
from motoko.errors import ParameterError
from motoko.study.query import Constraint, Where
from motoko.study.states import CANCELLED, TERMINAL
from motoko.yamldoc import load_bounded


class KeyValue(click.ParamType):
    """``name=value`` with the value parsed as YAML (``x=[1, 2]``, ``flag=true``)."""

    name = "name=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        name, sep, raw = str(value).partition("=")
        if not sep or not name.strip().isidentifier():
            self.fail(f"{value!r} is not name=value (e.g. -p x=1.5)", param, ctx)
        try:
            parsed = load_bounded(raw, f"-p {name.strip()}", ParameterError) if raw.strip() else ""
        except ParameterError as exc:
            self.fail(f"the value of {name!r}: {exc.message}; {exc.hint}", param, ctx)
        except yaml.YAMLError as exc:
            # Str(exc) spans several lines (context, a caret drawing);
            # the CLI promises one line, so keep the problem and its column.
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            column = f" at column {mark.column + 1}" if mark is not None else ""
            self.fail(f"the value of {name!r} is not valid YAML{column}: {problem}", param, ctx)
        return name.strip(), parsed


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@click.option("--run-name", "-n", help="Scope of the runs (default: resume the file's current one).")
@click.option("--fresh", is_flag=True, help="Start a new run name instead of resuming.")
@click.option("-p", "--param", "params", multiple=True, type=KeyValue(), help="Step parameter name=value (YAML).")
@click.option("--executor", type=click.Choice(["local", "slurm", "dask", "pilot"]), help="Override motoko.yaml's executor.")
@click.option("--max-parallel", "-j", type=click.IntRange(min=1), help="Runs executing at once.")
@click.option("--no-launcher", is_flag=True, help="Do not start a launcher (one runs elsewhere).")
@click.option("--detach", "-d", is_flag=True, help="Run in the background (see `motoko run status|stop|logs`).")
@click.option("--progress-every", type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="When stderr is not a terminal: a progress line every SECONDS (default 30, or $MOTOKO_PROGRESS_EVERY).")
@click.option("--follow", "-f", is_flag=True, hidden=True, help="With `run logs`: follow until the workflow ends.")
@click.option("--rerun-outdated", is_flag=True, help="Run again finished runs whose study files changed, and their descendants.")
@click.option("--keep-outdated", is_flag=True, help="Reuse finished runs whose study files changed (recorded on them).")
@click.option("--dry-run", is_flag=True, help="Print what would be created, reused or rerun, step by step; change nothing.")
@click.pass_context
def run(
    ctx: click.Context,
    file: Path | None,
    extra: tuple[str, ...],
    run_name: str | None,
    fresh: bool,
    params: tuple[tuple[str, Any], ...],
    executor: str | None,
    max_parallel: int | None,
    no_launcher: bool,
    detach: bool,
    progress_every: float | None,
    follow: bool,
    rerun_outdated: bool,
    keep_outdated: bool,
    dry_run: bool,
) -> None:
    """Run a workflow file (steps, or a motoko 0.1.4 orchestrator) to completion.

    Without FILE, runs motoko.yaml's orchestrator. Exit status: 0 on success,
    1 when runs failed, 2 on bad input. Arguments after `--` go to the
    orchestrator's populate_arg_parser. `motoko run status|stop|logs [-f]`
    manage workflows started with --detach.
    """
    from motoko.cli import detach as detached
    from motoko.flow.runner import run_file
    from motoko.flow.workflow_file import orchestrator_file

    if file is not None and str(file) in detached.SUBCOMMANDS and not file.exists():
        from motoko.cli.db_commands import config_of

        directory = config_of(ctx).directory
        {"status": lambda: detached.show_status(directory), "stop": lambda: detached.stop(directory),
         "logs": lambda: detached.logs(directory, follow)}[str(file)]()
        return

    if file is not None and str(file).startswith("-"):
        # `motoko run -- --rescale 3` (no FILE: motoko.yaml's orchestrator)
        # made click take "--rescale" for FILE. A workflow file never starts
        # with "-", so it is the first orchestrator argument.
        extra = (str(file), *extra)
        file = None
    if file is None:
        from motoko.cli.db_commands import config_of

        config = config_of(ctx)
        if config.orchestrator is None:
            raise click.UsageError("give a workflow FILE (motoko.yaml names no orchestrator)")
        file, entry = orchestrator_file(config.directory, config.orchestrator)
    else:
        entry = None
    names = [n for n, _ in params]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ParameterError(f"parameter {duplicates[0]!r} given twice", field=duplicates[0], hint="give each -p once")
    overrides = {k: v for k, v in (("executor", executor), ("max_parallel", max_parallel)) if v is not None}
    outdated = rerun_commands.outdated_choice(rerun_outdated, keep_outdated)
    if dry_run:
        rerun_commands.print_dry_run(file, dict(params), run_name=run_name, fresh=fresh, outdated=outdated)
        return
    if detach:
        from motoko.flow.runner import load_workflow_file

        load_workflow_file(file, entry)  # bad input is reported now, not in a log later
        argv = [a for a in _own_argv() if a not in ("--detach", "-d")]
        argv += rerun_commands.outdated_before_detach(file, run_name, fresh, outdated)
        from motoko.config import find_config

        record = detached.start(find_config(Path(file).resolve().parent).parent, argv, str(file))
        click.echo(f"workflow started in the background (pid {record['pid']}); follow it with `motoko run logs -f`")
        return
    outcome = run_file(
        file,
        dict(params),
        run_name=run_name,
        fresh=fresh,
        extra_args=extra,
        entry=entry,
        launcher=not no_launcher,
        launcher_overrides=overrides,
        monitor=functools.partial(progress.monitor, every=progress_every),
        outdated=outdated,
        ask_outdated=rerun_commands.ask_outdated if sys.stdin.isatty() else None,
    )
    click.echo(f"workflow {file} finished (run name {outcome.run_name}) in {outcome.elapsed:.2f} s", err=True)
    for name, result in outcome.results.items():
        if _printable(result):
            click.echo(f"{name}: {result}")


def _printable(result: Any) -> bool:
    """Step results worth printing: plain values, not handles or lists of (run, job)."""
    if result is None or hasattr(result, "ids") or hasattr(result, "constraints"):
        return False
    if isinstance(result, list | tuple) and result and isinstance(result[0], tuple) and len(result[0]) == 2:
        from motoko.study.records import Run

        return not isinstance(result[0][0], Run)
    return True


def _own_argv() -> list[str]:
    """This command's arguments after `run` (to start the same run detached)."""
    argv = sys.argv[1:]
    return argv[argv.index("run") + 1 :] if "run" in argv else argv


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--runs", is_flag=True, help="The provenance graph of the runs (which runs each was created from).")
@click.option("--states", is_flag=True, help="Colour the steps by the state of their runs (the file's current run name).")
@click.option("--where", "constraints", multiple=True, metavar="CONSTRAINTS", help="With --runs: only matching runs (and their ancestors).")
@click.option("--study", "-s", "studies", multiple=True, help="With --runs: only this study's runs (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot", "png"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (required for png).")
@click.pass_context
def graph(
    ctx: click.Context, file: Path | None, runs: bool, states: bool, constraints: tuple[str, ...],
    studies: tuple[str, ...], fmt: str, output: Path | None,
) -> None:
    """Print the step DAG of a workflow FILE, or with --runs the runs' provenance.

    png is drawn with graphviz when its `dot` program is installed, else with
    matplotlib. With --runs and FILE, only the runs of the file's current run
    name are shown. Nodes are coloured by state (text: on a terminal only).
    """
    from motoko.flow.dag import build_graph, describe
    from motoko.views import provenance

    if fmt == "png" and output is None:
        raise click.UsageError("png is an image: give -o FILE.png")
    if file is None and not runs:
        raise click.UsageError("give a workflow FILE, or --runs for the runs' provenance graph")
    if file is not None and not file.is_file():
        from motoko.errors import WorkflowError

        raise WorkflowError(f"workflow file {file} does not exist", hint="give the path of a .py file")
    title = "runs"
    if runs:
        workflow = open_workflow(ctx)
        try:
            scoped: list[Constraint] = list(constraints)
            if file is not None:
                run_name = _current_run_name(workflow.directory, file)
                scoped.append(Where("run_name", "=", run_name))
                title = run_name
            result = provenance.run_graph(workflow, studies or None, scoped or None)
        finally:
            workflow.close()
    else:
        from motoko.flow.runner import load_workflow_file

        assert file is not None
        wf = load_workflow_file(file)
        if not wf.steps:
            raise click.UsageError(f"{file} declares no @step (a 0.1.4 orchestrator has no static graph)")
        result = build_graph(wf.steps, str(file))
        title = file.stem
        if states:
            from motoko.config import find_config
            from motoko.flow.workflow import Workflow

            with Workflow(find_config(wf.path.parent)) as workflow:
                provenance.step_states(workflow, result, _current_run_name(workflow.directory, wf.path))
        elif fmt != "png":
            _emit(describe(result, fmt), output)
            return
    if fmt == "png":
        assert output is not None
        engine = provenance.render_png(result, output, title=title)
        click.echo(f"wrote {output} ({result.number_of_nodes()} nodes, drawn with {engine})", err=True)
        return
    _emit(provenance.describe(result, fmt, name=title), output)


def _current_run_name(directory: Path, file: Path) -> str:
    """The run name `motoko run FILE` would resume (it records one per file)."""
    from motoko.views.web.api import recorded_run_names

    return recorded_run_names(directory).get(str(file.resolve()), file.stem)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n")


@click.command()
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--wait", "wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait up to SECONDS for running runs to end (exit 1 if some have not).")
@click.pass_context
def cancel(ctx: click.Context, constraints: tuple[str, ...], study: str | None, yes: bool, wait: float | None) -> None:
    """Cancel the runs matching CONSTRAINTS (CREATED at once, running ones stopped).

    Running runs get a stop request (run.should_stop() turns True), then
    after its cancel_grace their launcher sends TERM, then KILL.
    """
    from motoko.flow.futures import RunList

    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        handles = []
        for name in studies:  # every constraint is checked before anything is cancelled
            found = [r.id for r in workflow.db_for(name).select(name, list(constraints) or None) if not r.is_terminal]
            if found:
                handles.append(RunList(workflow, name, found, resume=False))
        total = sum(len(h) for h in handles)
        if total == 0:
            click.echo("no unfinished run matches")
            return
        if not yes:
            click.confirm(f"Cancel {total} run(s)?", abort=True, err=True)
        for handle in handles:
            handle.cancel()
        if wait:
            for handle in handles:
                handle.cancel(wait_timeout=wait)
        states = [(h.study, r.id, r.state) for h in handles for r in h.runs()]
        click.echo(f"cancel requested for {total} run(s): {_cancel_summary(states)}")
        stopping = [f"{s}.{i}" for s, i, state in states if state not in TERMINAL]
        if wait is not None and stopping:
            click.echo(f"still running after {wait:g} s: {', '.join(stopping)}", err=True)
            ctx.exit(1)
    finally:
        workflow.close()


def _cancel_summary(states: list[tuple[str, int, str]]) -> str:
    """``2 cancelled, 1 stopping`` (a run may also have ended otherwise meanwhile)."""
    counts: dict[str, int] = {}
    for _, _, state in states:
        key = "cancelled" if state == CANCELLED else ("stopping" if state not in TERMINAL else state)
        counts[key] = counts.get(key, 0) + 1
    order = ["cancelled", "stopping", *sorted(k for k in counts if k not in ("cancelled", "stopping"))]
    return ", ".join(f"{counts[k]} {k}" for k in order if k in counts)


COMMANDS = [run, graph, cancel]

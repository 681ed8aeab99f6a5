"""Study database commands: create, select, info, server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from motoko.cli.format import colour_state, render, stream, stream_table
from motoko.config import WorkflowConfig, load_config
from motoko.errors import QueryError, UnknownNameError
from motoko.study.prefetch import jobs_by_id, prefetch
from motoko.study.states import STATES
from motoko.views.status import silent_counts

FORMATS = click.Choice(["table", "json", "csv"])


def config_of(ctx: click.Context) -> WorkflowConfig:
    """The workflow configuration for the command's directory."""
    return load_config(ctx.obj.directory if ctx.obj else None)


def open_workflow(ctx: click.Context, **kwargs: Any) -> Any:
    """Open the Workflow of the command's directory."""
    from motoko.flow.workflow import Workflow

    return Workflow(load_config(ctx.obj.directory if ctx.obj else None).path, **kwargs)


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Drop existing runs without asking.")
@click.option("--keep", is_flag=True, help="Keep existing runs; only update the studies' schemas.")
@click.pass_context
def create(ctx: click.Context, yes: bool, keep: bool) -> None:
    """Create the study databases from each study's bd.yaml.

    Every bd.yaml is validated first; then studies are created. A study that
    already holds runs is emptied only after confirmation (or --yes), unless
    --keep is given.
    """
    workflow = open_workflow(ctx, create=False)
    try:
        existing = {}
        for name in workflow.task_managers:
            db = workflow.db_for(name)
            if name in db.studies():
                existing[name] = len(db.study(name).runs)
        with_runs = {n: c for n, c in existing.items() if c}
        drop = bool(with_runs) and not keep
        if drop and not yes:
            listing = ", ".join(f"{n} ({c} runs)" for n, c in with_runs.items())
            click.confirm(f"Drop every run of {listing}?", abort=True, err=True)
        workflow.create(drop=drop)
        for name in workflow.task_managers:
            state = "emptied" if drop and name in with_runs else ("updated" if name in existing else "created")
            click.echo(f"study {name}: {state}")
    finally:
        workflow.close()


def _column_known(column: str, schema: Any, runs: list[Any]) -> bool:
    """Whether a --fields column is a field of the study or an attribute of a selected run."""
    prefix, dot, rest = column.partition(".")
    if dot and prefix == "jobs":
        return rest in schema.all_job_fields()
    name = rest if dot and prefix == "runs" else column
    if name in ("state", "study") or name in schema.all_run_fields():
        return True
    if not dot and name in schema.all_job_fields():
        return True
    # Free attributes (run.y = ...) exist only on the runs that set them.
    return any(hasattr(run, name) and not callable(getattr(run, name)) for run in runs)


#: Runs turned into rows (and printed) at a time: their jobs come in one batch.
PAGE = 500


def _select_runs(
    workflow: Any, study: str, constraints: list[str], fields: list[str] | None
) -> tuple[list[str], list[Any], set[str]]:
    """The selected runs of one study, its columns, and the requested columns it knows."""
    manager = workflow[study]
    runs = workflow.db_for(study).select(manager.name, constraints or None)
    columns = fields or ["id", "job_id", "state", "run_name", *manager.schema.job_fields, "progress", "machine_name"]
    known = {c for c in columns if _column_known(c, manager.schema, runs)}
    return columns, runs, known


def _row_pages(workflow: Any, study: str, columns: list[str], runs: list[Any]) -> Iterator[list[list[Any]]]:
    """The runs as rows, :data:`PAGE` at a time: each page's runs and jobs fetched in a batch.

    Rows are made as they are printed: the first are on the screen before the
    last runs are read, and memory holds one page, whatever the selection.
    """
    manager = workflow[study]
    job_fields = set(manager.schema.job_fields)
    jobs_tree = workflow.db_for(study).study(manager.name).jobs
    for start in range(0, len(runs), PAGE):
        page = runs[start : start + PAGE]
        prefetch(page)
        jobs = jobs_by_id(jobs_tree, (run.job_id for run in page))
        rows = []
        for run in page:
            job = jobs.get(run.job_id) or run.job
            row = []
            for column in columns:
                name = column.split(".", 1)[1] if column.startswith(("runs.", "jobs.")) else column
                if column.startswith("jobs.") or (name in job_fields and not column.startswith("runs.")):
                    row.append(job.get(name))
                else:
                    row.append(getattr(run, name, None))
            rows.append(row)
        yield rows


def _check_fields(workflow: Any, studies: list[str], fields: list[str], known: set[str], any_runs: bool) -> None:
    """Refuse a --fields column that no selected study or run knows (it printed empty)."""
    unknown = [c for c in fields if c not in known]
    if not unknown or not any_runs:
        return  # without runs, a free attribute cannot be told from a typo
    column = unknown[0]
    prefix = column.partition(".")[0] + "." if column.startswith(("jobs.", "runs.")) else ""
    possible: set[str] = {"state", "study"} if prefix != "jobs." else set()
    for name in studies:
        schema = workflow[name].schema
        possible |= set(schema.all_job_fields()) if prefix != "runs." else set()
        possible |= set(schema.all_run_fields()) if prefix != "jobs." else set()
    raise UnknownNameError("column", column, {prefix + p for p in possible}, where="--fields")


@click.command()
@click.argument("constraints", nargs=-1)
@click.option("--study", "-s", help="Only this study (default: every study).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--fields", help="Comma-separated columns (run fields, job fields, runs.X / jobs.X).")
@click.pass_context
def select(ctx: click.Context, constraints: tuple[str, ...], study: str | None, fmt: str, fields: str | None) -> None:
    """Print the runs matching CONSTRAINTS, e.g. "state = FINISHED, x > 2"."""
    workflow = open_workflow(ctx)
    try:
        studies = [workflow.config.resolve(study)] if study else list(workflow.task_managers)
        field_list = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        outputs, errors = [], []
        known: set[str] = set()
        for name in studies:
            try:
                columns, runs, known_here = _select_runs(workflow, name, list(constraints), field_list)
            except QueryError as exc:
                if study:
                    raise
                errors.append(exc)
                continue
            outputs.append((name, columns, runs))
            known |= known_here
        if not outputs and errors:
            raise errors[0]
        _warn_state_typos(workflow, [name for name, _, _ in outputs], list(constraints))
        if field_list:
            _check_fields(workflow, studies, field_list, known, any(runs for _, _, runs in outputs))
        _print_selection(workflow, outputs, fmt)
    finally:
        workflow.close()


def _warn_state_typos(workflow: Any, studies: list[str], constraints: list[str]) -> None:
    """Warn (stderr) about a state no run is in that looks like a misspelt known one."""
    if not any("state" in constraint.lower() for constraint in constraints):
        return  # no state named: nothing to parse again
    from motoko.study.state_names import state_typos

    found = state_typos((workflow.db_for(name).study(name) for name in studies), constraints)
    for typo in found:
        click.echo(f"motoko: warning: {typo}", err=True)


def _print_selection(workflow: Any, outputs: list[tuple[str, list[str], list[Any]]], fmt: str) -> None:
    """Print the selected runs as their rows are made (see :func:`_row_pages`)."""
    if fmt == "table":
        for number, (name, columns, runs) in enumerate(outputs):
            click.echo(("\n" if number else "") + click.style(f"{name}: {len(runs)} run(s)", bold=True))
            for line in stream_table(columns, _row_pages(workflow, name, columns, runs)):
                click.echo(line)
        return
    all_columns = ["study"]
    for _, columns, _ in outputs:
        all_columns += [c for c in columns if c not in all_columns]

    def merged() -> Iterator[list[list[Any]]]:
        for name, columns, runs in outputs:
            for rows in _row_pages(workflow, name, columns, runs):
                yield [[name, *(dict(zip(columns, row, strict=True)).get(c) for c in all_columns[1:])] for row in rows]

    for text in stream(all_columns, merged(), fmt):
        click.echo(text)


@click.command()
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
def info(ctx: click.Context, fmt: str) -> None:
    """Per study: the number of runs in each state."""
    workflow = open_workflow(ctx)
    try:
        rows = []
        states: list[str] = list(STATES)
        counts_by_study = {}
        for name in workflow.task_managers:
            db = workflow.db_for(name)
            counts = db.study(name).counts()
            counts_by_study[name] = (counts, str(db.address))
            states += [s for s in counts if s not in states]
        for name, (counts, address) in counts_by_study.items():
            rows.append([name, sum(counts.values()), *(counts.get(s, 0) for s in states), address])
        columns = ["study", "total", *states, "database"]
        if fmt == "table":
            text = render(columns, rows, fmt)
            for state in states:
                text = text.replace(state, colour_state(state, state), 1)
            click.echo(text)
            for name, note in silent_counts(workflow).items():
                click.echo(click.style(f"{name}: {note}", fg="red"))
        else:
            click.echo(render(columns, rows, fmt))
    finally:
        workflow.close()


@click.group()
def server() -> None:
    """Start, stop or inspect the workflow's database server."""


_PEM = click.Path(exists=True, dir_okay=False)


@server.command("start")
@click.option("--listen", metavar="HOST:PORT", help="Listen on TCP instead of the private unix socket.")
@click.option("--tls-cert", type=_PEM, help="Server certificate (PEM).")
@click.option("--tls-key", type=_PEM, help="Server private key (PEM).")
@click.option("--tls-ca", type=_PEM, help="CA whose signed client certificates are accepted.")
@click.option("--client-cert", type=_PEM, help="Certificate this workflow's own processes present.")
@click.option("--client-key", type=_PEM, help="Key of --client-cert.")
@click.option("--insecure", is_flag=True, help="Allow a TCP address without TLS (anyone who reaches it owns the database).")
@click.pass_context
def server_start(
    ctx: click.Context,
    listen: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    client_cert: str | None,
    client_key: str | None,
    insecure: bool,
) -> None:
    """Start the server (does nothing if it already runs with these settings).

    By default the server listens on a private unix socket under .motoko/.
    With --listen it serves TCP, which requires TLS with client certificates
    (--tls-cert, --tls-key, --tls-ca) unless --insecure: on loopback too, as
    every local user can connect to it. A refused or failed --listen is not
    recorded.
    """
    from motoko.study.server import configure_server, ensure_server, read_settings, record_settings
    from motoko.study.tls import TLSFiles

    config = config_of(ctx)
    tls_given = [v for v in (tls_cert, tls_key, tls_ca) if v]
    if tls_given and len(tls_given) != 3:
        raise click.UsageError("TLS needs all of --tls-cert, --tls-key and --tls-ca")
    tls = TLSFiles(str(Path(tls_ca).resolve()), str(Path(tls_cert).resolve()), str(Path(tls_key).resolve())) if tls_cert and tls_key and tls_ca else None
    client = None
    if client_cert or client_key:
        if not (client_cert and client_key and tls_ca):
            raise click.UsageError("--client-cert needs --client-key and --tls-ca")
        client = TLSFiles(str(Path(tls_ca).resolve()), str(Path(client_cert).resolve()), str(Path(client_key).resolve()))
    previous = read_settings(config.directory)
    if listen or tls or ctx.get_parameter_source("insecure") == click.core.ParameterSource.COMMANDLINE:
        configure_server(config.directory, listen, tls, client, insecure)
    try:
        address = ensure_server(config.directory, auto=False)  # started on purpose: runs until stopped
    except Exception:
        record_settings(config.directory, previous)  # a --listen that cannot start is not the address
        raise
    secure = bool(read_settings(config.directory).get("tls"))
    click.echo(f"server running at {address}" + (" (TLS, client certificates required)" if secure else ""))


@server.command("stop")
@click.pass_context
def server_stop(ctx: click.Context) -> None:
    """Stop the server (does nothing if it is not running)."""
    from motoko.study.server import stop_server

    config = config_of(ctx)
    stopped = stop_server(config.directory)
    click.echo("server stopped" if stopped else "server was not running")


@server.command("status")
@click.pass_context
def server_status(ctx: click.Context) -> None:
    """Say whether the server runs, where, and how big its data file is."""
    from motoko.study.server import server_status as status

    config = config_of(ctx)
    st = status(config.directory)
    if st.running:
        click.echo(f"running at {st.address} (pid {st.pid}), data {_size(st.size)} in {st.data_file}")
    else:
        click.echo(f"not running (data {_size(st.size)} in {st.data_file})")
        ctx.exit(3)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n //= 1024
    return f"{n} TiB"


COMMANDS = [create, select, info, server]

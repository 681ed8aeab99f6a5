"""The ``motoko`` command: one entry point that maps errors to exit codes.

Commands raise; only :func:`main` turns exceptions into output: a user error
(:class:`~motoko.errors.MotokoError`, a click usage error) prints one line
``motoko: error: ...`` to stderr and exits 2; failed work (runs that failed)
exits 1; ``--debug`` shows the traceback instead.

Only the invoked command's module is imported (:data:`COMMAND_MODULES`), and
commands import what they use inside their functions, on purpose: ``motoko
--version``, ``motoko select`` and ``motoko status`` must not pay for ZODB,
pandas or the launcher machinery they never touch (the only function-level
imports of motoko modules outside ``cli/`` are likewise for start-up time,
optional engines, or the run side's promise to import nothing heavy).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from motoko import __version__
from motoko.errors import MotokoError


class Context:
    """Options shared by every command (passed explicitly, not thread-local)."""

    def __init__(self, debug: bool, directory: str | None):
        self.debug = debug
        self.directory = directory


#: The module (under ``motoko.cli``) of each command. Only the invoked
#: command's module is imported: ``motoko select`` does not pay for the
#: modules of ``run``, ``launcher`` or ``ui`` (their imports, asyncio's
#: progress display among them), nor ``--version`` for any of them. ``--help``
#: and shell completion import them all, to show each one's summary.
COMMAND_MODULES = {
    **dict.fromkeys(("create", "select", "info", "server"), "db_commands"),
    "launcher": "launcher_commands",
    **dict.fromkeys(("run", "graph", "cancel"), "run_commands"),
    "runs": "runs_commands",
    **dict.fromkeys(("clean", "db"), "maintenance_commands"),
    **dict.fromkeys(("status", "export", "import", "plot", "ui", "init", "completion"), "view_commands"),
    "rerun": "rerun_commands",
    "pilots": "pilot_commands",
}


class _LazyGroup(click.Group):
    """A group that imports a command's module when the command is asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is not None and cmd_name not in self.commands:
            module = importlib.import_module(f"motoko.cli.{module_name}")
            for command in module.COMMANDS:
                self.commands.setdefault(command.name, command)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:
            # click suggests among the commands loaded so far: here, among them all.
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    # exists=True: a missing directory used to fall back, silently, to the
    # motoko.yaml found upward from the current directory.
    "-C", "--directory", type=click.Path(exists=True, file_okay=False), default=None,
    help="Workflow directory (default: search upward from the current directory).",
)
@click.version_option(__version__, prog_name="motoko")
@click.pass_context
def cli(ctx: click.Context, debug: bool, directory: str | None) -> None:
    """motoko: workflows over parametric studies."""
    from motoko.cli.format import one_line_logs  # not for --version, which exits before this

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    one_line_logs(debug)
    if not debug:
        # Dask configures its own loggers at INFO when imported (here and in
        # its worker processes): a dozen lines per cluster start and stop
        # drowned `motoko run`'s output. Its warnings and errors still show.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    ctx.obj = Context(debug, directory)


class _Stderr(logging.Handler):
    """Writes to the stderr of the moment (tests swap it), as the CLI's own lines."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(self.format(record), err=True)


@contextlib.contextmanager
def _announcing() -> Iterator[None]:
    """Print what the library says to the user as the CLI's own ``motoko: ...`` lines.

    "started the database server ..." (when the command starts one) and
    "3 runs waiting, no launcher alive ..." (a wait with no launcher) are
    log records of their modules; the CLI shows them without a timestamp.
    """
    # By name: importing their modules would load the database client for
    # commands that never open one (--version, --help).
    announce = logging.getLogger("motoko.study.server.started")
    launcher_watch = logging.getLogger("motoko.flow.launcher_watch")
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("motoko: %(message)s"))
    saved = [(logger, logger.level, logger.propagate) for logger in (announce, launcher_watch)]
    for logger, _, _ in saved:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    try:
        yield
    finally:  # called in-process (tests), the CLI's handler must not outlive the command
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; the only place that turns exceptions into exit codes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    for stream in (sys.stdout, sys.stderr):
        # A lone surrogate a run stored prints as \ud800 instead of breaking a listing.
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        with _announcing():
            result = cli.main(args=argv, prog_name="motoko", standalone_mode=False)
        # ctx.exit(code) comes back as the return value without standalone mode.
        if isinstance(result, int) and not isinstance(result, bool) and result:
            sys.exit(result)
        return result
    except click.exceptions.Abort as exc:
        # click turns Ctrl-C into Abort; a declined confirmation is one too.
        if isinstance(exc.__context__, KeyboardInterrupt):
            click.echo("motoko: interrupted", err=True)
            sys.exit(130)
        click.echo("motoko: aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        if debug:
            raise
        message = exc.format_message()
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message += f" (see `{exc.ctx.command_path} --help`)"
        click.echo(f"motoko: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except MotokoError as exc:
        if debug:
            raise
        click.echo(f"motoko: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("motoko: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # `motoko select ... | head`: the reader went away; not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()

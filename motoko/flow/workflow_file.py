"""A workflow file: loading it, its steps or orchestrator, its command-line arguments.

A workflow file is Python: ``@step`` functions, or a motoko 0.1.4
orchestrator ``main(workflow, **params)`` (with an optional
``populate_arg_parser``). Loading it checks the step graph before anything
touches a database, and every error names the file and line to fix.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from motoko.errors import MotokoError, ServerError, UnknownNameError, WorkflowError
from motoko.flow.dag import build_graph, steps_of


@dataclass
class WorkflowFile:
    """What a loaded workflow file offers."""

    path: Path
    module: ModuleType
    steps: dict[str, Any] = field(default_factory=dict)
    main: Callable[..., Awaitable[Any]] | None = None
    populate_arg_parser: Callable[[argparse.ArgumentParser], Any] | None = None


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """Import a Python file as a module (its directory on sys.path).

    Raises:
        WorkflowError: naming the file and line for syntax and import errors.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise WorkflowError(f"workflow file {path} does not exist", hint="give the path of a .py file")
    module_name = name or f"motoko_workflow_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise WorkflowError(f"cannot load {path} as Python", hint="give a .py file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise WorkflowError(f"syntax error: {exc.msg}", where=f"{path}:{exc.lineno}", hint="fix the Python syntax") from None
    except MotokoError as exc:
        if exc.where is None:  # e.g. @step on a plain def: say where it is
            line = _line_in(exc, path)
            exc.where = f"{path}:{line}" if line else str(path)
            exc.args = (str(exc),)
        raise
    except Exception as exc:
        line = _line_in(exc, path)
        raise WorkflowError(
            f"loading the workflow file failed: {type(exc).__name__}: {exc}",
            where=f"{path}:{line}" if line else str(path),
            hint="run it with --debug for the traceback",
        ) from exc
    return module


def in_workflow_code(exc: MotokoError, path: Path) -> MotokoError:
    """``exc`` with the place in the workflow file it came from, when it names none.

    A user error raised while a step or orchestrator runs (``workflow.slo``,
    a bad constraint, a wrong parameter) is reported as one line; the line of
    the workflow file that made the call is what the user has to fix. Failed
    work (exit code 1: runs that failed, a timeout) is left as it is, and so
    is a lost server: no line of the workflow file caused it.
    """
    if isinstance(exc, ServerError):
        return exc
    if exc.exit_code != 2 or (exc.where is not None and not exc.where.startswith("constraint ")):
        return exc
    line = _line_in(exc, path)
    if line is not None:
        # A constraint's column is kept: "FILE:LINE, constraint 'x >', column 4".
        exc.where = f"{path}:{line}" + (f", {exc.where}" if exc.where else "")
        exc.args = (str(exc),)
    return exc


def _line_in(exc: BaseException, path: Path) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path:
            line = frame.lineno
    return line


def load_workflow_file(path: Path | str, entry: str | None = None) -> WorkflowFile:
    """Load a workflow file and check its step graph (no database needed).

    Args:
        path: The Python file.
        entry: The orchestrator function to run (motoko.yaml's
            ``orchestrator: module.function``); default ``main``.
    """
    module = load_module(Path(path))
    wf = WorkflowFile(Path(path).resolve(), module)
    wf.steps = steps_of(vars(module)) if entry is None else {}
    if wf.steps:
        build_graph(wf.steps, str(wf.path))
    main = getattr(module, entry or "main", None)
    if entry is not None and not callable(main):
        functions = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UnknownNameError("orchestrator function", entry, functions, where=str(wf.path))
    if callable(main):
        wf.main = main
    wf.populate_arg_parser = getattr(module, "populate_arg_parser", None)
    if not wf.steps and wf.main is None:
        raise WorkflowError(
            "the file declares no @step function and no main(workflow, **params)",
            where=str(wf.path),
            hint="decorate async functions with @motoko.step",
        )
    return wf


def orchestrator_file(workflow_dir: Path, spec: str) -> tuple[Path, str]:
    """Resolve motoko.yaml's ``orchestrator: module.function`` to (file, function)."""
    module, _, func = spec.rpartition(".")
    if not module or not func:
        raise WorkflowError(f"orchestrator {spec!r} is not 'module.function'", hint="e.g. orchestrator: orchestrator.main")
    return workflow_dir / (module.replace(".", "/") + ".py"), func


def parse_extra_args(wf: WorkflowFile, args: Sequence[str]) -> dict[str, Any]:
    """Parse ``-- args`` with the orchestrator's ``populate_arg_parser``."""
    if not args and wf.populate_arg_parser is None:
        return {}
    parser = argparse.ArgumentParser(prog=f"motoko run {wf.path.name} --", exit_on_error=False)
    if wf.populate_arg_parser is not None:
        wf.populate_arg_parser(parser)
    try:
        namespace, unknown = parser.parse_known_args(list(args))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise WorkflowError(f"bad workflow arguments {' '.join(args)!r}: {exc}", hint="see the orchestrator's populate_arg_parser") from None
    if unknown:
        raise WorkflowError(f"unknown workflow arguments: {' '.join(unknown)}", hint=parser.format_usage().strip())
    return {k: v for k, v in vars(namespace).items() if v is not None}


__all__ = ["WorkflowFile", "in_workflow_code", "load_module", "load_workflow_file", "orchestrator_file", "parse_extra_args"]

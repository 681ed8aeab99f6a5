"""Running a workflow file: steps or a motoko 0.1.4 orchestrator.

:func:`run_file` loads a Python workflow file, finds its ``@step`` functions
(or an orchestrator ``main(workflow, **params)``), opens the Workflow with the
right run name, starts an embedded launcher unless a launcher daemon already
serves the workflow, and runs everything on one event loop. Interrupting it
(Ctrl-C) cancels the runs this execution created that have not ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from motoko.config import find_config
from motoko.errors import MotokoError, RunsFailed, ServerError, UnknownNameError, WorkflowError
from motoko.flow.context import current_event
from motoko.flow.dag import build_graph, check_params, run_steps, steps_of
from motoko.flow.launcher_watch import watch_for
from motoko.flow.outdated import OutdatedReport, settle_outdated
from motoko.flow.rerun import settle_pending
from motoko.flow.step_record import record_done
from motoko.flow.workflow import Workflow
from motoko.study.blocking import blocking, motoko_loop
from motoko.study.query import Where
from motoko.study.states import ACTIVE, CREATED, FAILED, LOST

log = logging.getLogger(__name__)


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


# -- run names ------------------------------------------------------------------------


def resolve_run_name(workflow_dir: Path, file: Path, run_name: str | None, fresh: bool) -> str:
    """The run name: given, else the file's current one (a new one with ``fresh``).

    Running the same file again resumes its current run name, so finished runs
    are reused; ``--fresh`` starts a new run name and makes it current.
    """
    record = workflow_dir / ".motoko" / "run-names.json"
    record.parent.mkdir(mode=0o700, exist_ok=True)
    # Locked: two `--fresh` executions started in the same second must not share a name.
    with open(record.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        names: dict[str, str] = {}
        with contextlib.suppress(OSError, ValueError):
            names = json.loads(record.read_text())
        key = str(file)
        if run_name:
            chosen = run_name
        elif fresh or key not in names:
            chosen = file.stem if key not in names and not fresh else _new_name(record, file.stem, set(names.values()))
        else:
            chosen = names[key]
        names[key] = chosen
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like the database
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(names, indent=1))
        os.chmod(record, 0o600)
    return chosen


def _new_name(record: Path, stem: str, taken: set[str]) -> str:
    """``stem-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``... when that one was issued already.

    The names issued in the current second are kept beside the record (the
    record holds only each file's current name), under the record's lock.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    issued_file = record.with_name("fresh-run-names.json")
    issued: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        issued = json.loads(issued_file.read_text())
    this_second = list(issued.get("names", [])) if issued.get("stamp") == stamp else []
    base = f"{stem}-{stamp}"
    chosen, count = base, 1
    while chosen in taken or chosen in this_second:
        count += 1
        chosen = f"{base}-{count}"
    fd = os.open(issued_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"stamp": stamp, "names": [*this_second, chosen]}))
    return chosen


# -- running -----------------------------------------------------------------------


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


async def run_orchestrator_async(workflow: Workflow, main: Callable[..., Awaitable[Any]], params: Mapping[str, Any]) -> None:
    """Run ``main`` and the actions until ``workflow.finished`` (or main ends without actions)."""
    with motoko_loop():  # main and the actions share this loop: refuse synchronous waits
        await _run_orchestrator(workflow, main, params)


async def _run_orchestrator(workflow: Workflow, main: Callable[..., Awaitable[Any]], params: Mapping[str, Any]) -> None:
    workflow.params = dict(params)
    token = current_event.set(getattr(main, "__name__", "main"))
    try:
        main_task = asyncio.ensure_future(main(workflow, **params))
    finally:
        current_event.reset(token)
    events_task: asyncio.Task[Any] | None = None
    try:
        while True:
            if events_task is None and workflow.actions:
                events_task = asyncio.ensure_future(workflow.run_events())
            waits: list[asyncio.Future[Any]] = [main_task] if not main_task.done() else []
            if events_task is not None:
                waits.append(events_task)
            if not waits:
                break
            done, _ = await asyncio.wait(waits, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if main_task.done() and (events_task is None and not workflow.actions or workflow.finished):
                if events_task is not None:
                    await events_task
                break
            if events_task is not None and events_task.done():
                break
    finally:
        for left in (main_task, events_task):  # (renamed: mypy typed `task` as a Future above)
            if left is not None and not left.done():
                left.cancel()
        workflow.refresh()


def run_orchestrator(workflow: Workflow, params: Mapping[str, Any]) -> None:
    """Synchronous entry for ``workflow.execute(**params)`` (motoko 0.1.4 API)."""
    spec = workflow.config.orchestrator
    if spec is None:
        raise WorkflowError("motoko.yaml names no orchestrator", hint="add `orchestrator: module.function`")
    file, func = orchestrator_file(workflow.directory, spec)
    module = load_module(file)
    main = getattr(module, func, None)
    if main is None:
        raise WorkflowError(f"{file} has no function {func!r}", where=str(workflow.config.path))
    # On a loop of its own, in a helper thread under a notebook's running loop.
    blocking("workflow.execute()", "await main(workflow, **params)",
             lambda: run_orchestrator_async(workflow, main, params))


@dataclass
class RunOutcome:
    """What :func:`run_file` did."""

    run_name: str
    results: dict[str, Any]
    elapsed: float


def run_file(
    path: Path | str,
    params: Mapping[str, Any] | None = None,
    *,
    run_name: str | None = None,
    fresh: bool = False,
    extra_args: Sequence[str] = (),
    entry: str | None = None,
    launcher: bool = True,
    launcher_overrides: Mapping[str, Any] | None = None,
    monitor: Callable[[Workflow], Awaitable[None]] | None = None,
    outdated: str | None = None,
    ask_outdated: Callable[[OutdatedReport], str] | None = None,
) -> RunOutcome:
    """Run a workflow file to completion.

    Before anything is created, finished runs of the run name whose study
    files changed since (and their descendants) are found, and handled as
    ``outdated`` ("rerun" or "keep") says, else as motoko.yaml's ``resume:``
    says; asking means calling ``ask_outdated`` (see
    :func:`motoko.flow.outdated.settle_outdated`).

    Raises:
        WorkflowError, ConfigError...: bad input, before anything is created.
        OutdatedRunsError: outdated runs and nobody to ask, before anything is created.
        RunsFailed: when awaited runs failed.
        KeyboardInterrupt: after cancelling this execution's unfinished runs.
    """
    started = time.monotonic()
    wf_file = load_workflow_file(path, entry)
    params = dict(params or {})
    params.update(parse_extra_args(wf_file, extra_args))
    if wf_file.steps:
        check_params(wf_file.steps, params, str(wf_file.path))
    config_path = find_config(wf_file.path.parent)
    name = resolve_run_name(config_path.parent, wf_file.path, run_name, fresh)
    workflow = Workflow(config_path, run_name=name, create=False)
    embedded = None
    try:
        workflow.check()  # a refused bd.yaml says so before outdated runs are counted
        settle_outdated(workflow, outdated, ask_outdated)
        workflow.create()
        embedded = _start_launcher(workflow, launcher, launcher_overrides or {})
        with _interruptible():
            results = asyncio.run(_main(workflow, wf_file, params, monitor))
        settle_pending(workflow)
    except RunsFailed as failed:
        # The first failure ends the wait; the embedded launcher lets the
        # other runs end first, so the summary counts every failed run.
        if embedded is not None:
            embedded.stop()
            embedded = None
        raise all_failures(workflow, failed) from None
    except MotokoError as exc:
        in_workflow_code(exc, wf_file.path)
        raise
    except KeyboardInterrupt:
        cancelled = cancel_unfinished(workflow)
        log.warning("interrupted: cancelled %d unfinished run(s) of %s", cancelled, name)
        raise
    finally:
        if embedded is not None:
            embedded.stop()
        workflow.close()
    return RunOutcome(name, results, time.monotonic() - started)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once, wherever the main thread is.

    ``asyncio.run`` would otherwise only cancel the main task, which takes
    effect at its next ``await``: never, while a step blocks (e.g. waiting
    for a lost database server). asyncio leaves a handler other than
    Python's default in place.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _start_launcher(workflow: Workflow, wanted: bool, overrides: Mapping[str, Any]) -> Any:
    if not wanted:
        return None
    from motoko.launch.service import EmbeddedLauncher, daemon_status

    if daemon_status(workflow.config) and not overrides:
        return None
    databases = {str(db.address): db for db in workflow.databases}
    embedded = EmbeddedLauncher(workflow.config, databases=databases, **overrides).start()
    watch_for(workflow).embedded = embedded  # it serves the runs even before its executor is up
    return embedded


async def _main(
    workflow: Workflow, wf_file: WorkflowFile, params: Mapping[str, Any], monitor: Callable[[Workflow], Awaitable[None]] | None
) -> dict[str, Any]:
    monitor_task = asyncio.ensure_future(monitor(workflow)) if monitor else None
    try:
        if wf_file.steps:
            graph = build_graph(wf_file.steps, str(wf_file.path))
            run_name = workflow.run_name or ""

            def on_step(name: str, what: str) -> None:
                if what == "done":  # a step without runs then shows as done, not PENDING
                    record_done(workflow.directory, run_name, name)

            return await run_steps(graph, workflow, params, on_step)
        assert wf_file.main is not None
        await run_orchestrator_async(workflow, wf_file.main, params)
        return {}
    finally:
        if monitor_task is not None:
            monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await monitor_task


def cancel_unfinished(workflow: Workflow) -> int:
    """Cancel the runs of the workflow's run name that have not ended."""
    count = 0
    for name, manager in workflow.task_managers.items():
        db = workflow.db_for(name)
        if not db.connected:
            # Waiting for a lost server here would make Ctrl-C hang: the runs'
            # launchers, or lost-run detection, settle them once it is back.
            log.warning("cannot cancel the runs of %s: the database server at %s is lost", name, db.address)
            continue

        def change(manager: Any = manager, db: Any = db) -> int:
            study = db.study(manager.name)
            n = 0
            for run in db.select(manager.name, [Where("run_name", "=", workflow.run_name)]):
                if run.state == CREATED or run.state in ACTIVE:
                    study.cancel(run)
                    n += 1
            return n

        with contextlib.suppress(MotokoError):
            count += db.transact(change, what="cancel unfinished runs")
    return count


def all_failures(workflow: Workflow, failed: RunsFailed) -> RunsFailed:
    """``failed`` completed with the other runs of the run name that failed meanwhile.

    A wait stops at the first failure it sees; by the time the workflow has
    ended, runs started next to it may have failed too. The summary names
    them all (those of the studies ``failed`` names, in id order).
    """
    found = {(study, rid): (study, rid, state, code, err) for study, rid, state, code, err in failed.failures}
    for study in dict.fromkeys(f[0] for f in failed.failures):
        with contextlib.suppress(MotokoError, KeyError):
            workflow.refresh()
            name = (workflow.run_name or "").replace("\\", "\\\\").replace("'", "\\'")
            constraints = [f"run_name = '{name}'", f"state in ('{FAILED}', '{LOST}')"]
            for run in workflow.db_for(study).select(study, constraints):
                found.setdefault((study, run.id), (study, run.id, run.state, run.exit_code, run.error))
    return RunsFailed(sorted(found.values(), key=lambda f: (f[0], f[1])))

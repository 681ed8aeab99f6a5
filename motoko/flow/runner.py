"""Running a workflow file: steps or a motoko 0.1.4 orchestrator.

:func:`run_file` loads a Python workflow file, finds its ``@step`` functions
(or an orchestrator ``main(workflow, **params)``), opens the Workflow with the
right run name, starts an embedded launcher unless a launcher daemon already
serves the workflow, and runs everything on one event loop. Interrupting it
(Ctrl-C) cancels the runs this execution created that have not ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motoko.config import find_config
from motoko.errors import MotokoError, RunsFailed
from motoko.flow.dag import build_graph, check_params, run_steps
from motoko.flow.launcher_watch import watch_for
from motoko.flow.orchestrator import run_orchestrator_async
from motoko.flow.outdated import OutdatedReport, settle_outdated
from motoko.flow.rerun import settle_pending
from motoko.flow.step_record import record_done
from motoko.flow.workflow import Workflow
from motoko.flow.workflow_file import (
    WorkflowFile,
    in_workflow_code,
    load_workflow_file,
    parse_extra_args,
)
from motoko.launch.service import EmbeddedLauncher, daemon_status
from motoko.study.query import Where
from motoko.study.states import ACTIVE, CREATED, FAILED, LOST

log = logging.getLogger(__name__)


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
            # Recording a step costs ~1 ms of file writes: in a thread of its
            # own, off the path from a step's end to the next step's createTask.
            recorder = ThreadPoolExecutor(1, thread_name_prefix="motoko-steps")

            def on_step(name: str, what: str) -> None:
                if what == "done":  # a step without runs then shows as done, not PENDING
                    recorder.submit(record_done, workflow.directory, run_name, name).add_done_callback(_recorded)

            try:
                return await run_steps(graph, workflow, params, on_step)
            finally:
                recorder.shutdown(wait=True)  # every record written before run_file returns
        assert wf_file.main is not None
        await run_orchestrator_async(workflow.action_loop, wf_file.main, params)
        return {}
    finally:
        if monitor_task is not None:
            monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await monitor_task


def _recorded(done: Future[None]) -> None:
    """Say so when a step could not be recorded (it then reads PENDING in graphs)."""
    error = done.exception()
    if error is not None:
        log.warning("could not record a step as done: %s", error)


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
            constraints = [Where("run_name", "=", workflow.run_name or ""), Where("state", "in", (FAILED, LOST))]
            for run in workflow.db_for(study).select(study, constraints):
                found.setdefault((study, run.id), (study, run.id, run.state, run.exit_code, run.error))
    return RunsFailed(sorted(found.values(), key=lambda f: (f[0], f[1])))

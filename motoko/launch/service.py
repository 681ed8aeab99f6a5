"""Launchers as services: built from motoko.yaml, embedded or daemonised.

* :func:`build_launcher` turns a workflow's configuration into a
  :class:`~motoko.launch.launcher.Launcher` with the configured executor.
* :class:`EmbeddedLauncher` runs one in a thread of the current process: what
  ``motoko run`` does when no launcher daemon is running, so that a fresh
  checkout needs no set-up step.
* :func:`start_daemon`, :func:`stop_daemons`, :func:`daemon_status` manage
  detached launcher processes through pid files in ``.motoko/launchers/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motoko.config import WorkflowConfig, database_address
from motoko.errors import ConfigError, MotokoError
from motoko.launch.executors.base import Executor
from motoko.launch.launcher import Launcher
from motoko.launch.launcher_options import LauncherOptions
from motoko.launch.pilots import PilotManager, settings_for
from motoko.launch.processes import is_recorded_process
from motoko.launch.serving import LauncherReport
from motoko.study.database import StudyDB
from motoko.study.schema import load_schema
from motoko.study.server import Address, default_address, ensure_server, pid_alive, state_dir

log = logging.getLogger(__name__)


def make_executor(config: WorkflowConfig, kind: str | None = None, max_parallel: int | None = None) -> Executor:
    """Create the executor named by ``kind`` or the configuration."""
    settings = config.launcher
    kind = kind or settings.executor
    parallel = max_parallel or settings.max_parallel
    if kind == "local":
        from motoko.launch.executors.local import LocalExecutor

        return LocalExecutor(parallel)
    if kind == "slurm":
        from motoko.launch.executors.slurm import SlurmExecutor  # type: ignore[import-not-found]

        return SlurmExecutor(parallel, options=settings.slurm_options, bundle_size=settings.bundle_size)  # type: ignore[no-any-return]
    if kind == "dask":
        from motoko.launch.executors.dask import DaskExecutor  # type: ignore[import-not-found]

        return DaskExecutor(parallel, scheduler=settings.scheduler)  # type: ignore[no-any-return]
    raise ConfigError(f"unknown executor {kind!r}", hint="use local, slurm, dask or pilot")


def served_studies(config: WorkflowConfig, study: str | None, address: Address) -> dict[str, Any]:
    """The studies of ``config`` living at ``address`` (or just ``study``)."""
    names = [config.resolve(study)] if study else list(config.studies)
    out = {}
    for name in names:
        if str(_address_of(config, name)) == str(address):
            out[name] = load_schema(config.studies[name].folder)
    return out


def _address_of(config: WorkflowConfig, study: str) -> Address:
    return database_address(config, study) or default_address(config.directory)


def launcher_options(config: WorkflowConfig, **overrides: Any) -> LauncherOptions:
    """LauncherOptions from motoko.yaml, with explicit overrides winning."""
    settings = config.launcher
    options = LauncherOptions(
        lost_after=config.lost_after,
        cancel_grace=settings.cancel_grace,
        claim_ahead=settings.claim_ahead,
        poll=settings.poll,
        runs_dir=config.runs_dir,
        workflow_file=str(config.path),
    )
    options.heartbeat = settings.heartbeat or max(0.2, config.lost_after / 6)
    if settings.machine_name:
        options.machine_name = settings.machine_name
    for key, value in overrides.items():
        if value is not None:
            setattr(options, key, value)
    return options


def database_groups(config: WorkflowConfig) -> dict[str, list[str]]:
    """Studies grouped by the database holding them (most workflows: one group)."""
    groups: dict[str, list[str]] = {}
    for name in config.studies:
        groups.setdefault(str(_address_of(config, name)), []).append(name)
    return groups


def build_launcher(
    config: WorkflowConfig,
    *,
    study: str | None = None,
    group: str | None = None,
    executor: str | None = None,
    max_parallel: int | None = None,
    databases: Mapping[str, StudyDB] | None = None,
    **overrides: Any,
) -> Launcher | PilotManager:
    """Open a connection and build a launcher for a workflow's studies.

    Args:
        study: Serve only this study.
        group: Serve every study in the same database as this one (default:
            the first study's).
        databases: Connections of this process by address: the launcher
            shares their database client (see ``StudyDB.sibling``) instead
            of opening its own.
    """
    chosen = study or group
    first = config.resolve(chosen) if chosen else next(iter(config.studies))
    address = database_address(config, first) or ensure_server(config.directory, idle_stop=config.server_idle_stop)
    studies = served_studies(config, study, address)
    shared = (databases or {}).get(str(address))
    db = shared.sibling() if shared is not None else StudyDB(address)
    for schema in studies.values():
        db.create_study(schema)
    if (executor or config.launcher.executor) == "pilot":
        return _pilot_manager(config, db, studies, address, study, max_parallel, overrides)
    options = launcher_options(config, db_address=str(address), **overrides)
    return Launcher(db, studies, make_executor(config, executor, max_parallel), options)


def _pilot_manager(
    config: WorkflowConfig, db: StudyDB, studies: dict[str, Any], address: Address, study: str | None,
    cores: int | None, overrides: dict[str, Any],
) -> PilotManager:
    """A pilot manager where a launcher was asked for (``executor: pilot``)."""
    try:
        return PilotManager(
            db, studies, settings_for(config.launcher.pilots, cores), address, config.directory,
            poll=min(config.launcher.poll, 2.0), once=bool(overrides.get("once")),
            idle_exit=overrides.get("idle_exit"), study=study,
        )
    except BaseException:
        db.close()
        raise


def build_launchers(config: WorkflowConfig, *, study: str | None = None, **kwargs: Any) -> list[Launcher | PilotManager]:
    """One launcher per database holding the workflow's studies (or for ``study``)."""
    if study:
        return [build_launcher(config, study=study, **kwargs)]
    return [build_launcher(config, group=names[0], **kwargs) for names in database_groups(config).values()]


async def serve_all(launchers: list[Launcher | PilotManager]) -> list[LauncherReport]:
    """Serve several launchers on this event loop until all have exited."""
    return list(await asyncio.gather(*(launcher.serve_async() for launcher in launchers)))


class EmbeddedLauncher:
    """Launchers (one per database) running in a background thread of this process.

    Given the workflow's ``databases`` (address → connection), each launcher
    shares the workflow's database client: it hears of the runs the workflow
    creates, and the workflow of their outcomes, in-process.
    """

    def __init__(self, config: WorkflowConfig, **kwargs: Any):
        self.config = config
        self.kwargs = kwargs
        self.launchers: list[Launcher | PilotManager] = []
        self.reports: list[LauncherReport] = []
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="motoko-launcher", daemon=True)

    def start(self) -> EmbeddedLauncher:
        """Start the thread and wait until the launcher is serving."""
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def _main(self) -> None:
        try:
            self.launchers = build_launchers(self.config, **self.kwargs)
        except BaseException as exc:  # reported to the starting thread
            self.error = exc
            self._ready.set()
            return
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._ready.set()
            self.reports = loop.run_until_complete(serve_all(self.launchers))
        except BaseException as exc:
            self.error = exc
            log.exception("embedded launcher failed")
        finally:
            loop.close()
            for launcher in self.launchers:
                launcher.db.close()

    @property
    def alive(self) -> bool:
        """True while the launchers' thread runs (also while its executor starts up)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let running runs end (up to ``timeout``), join."""
        if self._loop is not None:
            for launcher in self.launchers:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(launcher.stop)
        self._thread.join(timeout)


# -- daemons ----------------------------------------------------------------------


@dataclass
class DaemonInfo:
    """A launcher daemon found through its pid file."""

    pid: int
    alive: bool
    study: str | None
    executor: str
    started: float
    log: Path


def _daemon_dir(config: WorkflowConfig) -> Path:
    path = state_dir(config.directory) / "launchers"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def start_daemon(config: WorkflowConfig, args: list[str], *, study: str | None, executor: str) -> DaemonInfo:
    """Start ``motoko launcher start`` detached; return its pid file info."""
    directory = _daemon_dir(config)
    log_path = directory / f"launcher-{int(time.time() * 1000)}.log"
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start", *args],
            cwd=config.directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    info = {"pid": proc.pid, "study": study, "executor": executor, "started": time.time(), "log": str(log_path)}
    (directory / f"{proc.pid}.json").write_text(json.dumps(info))
    return _info(directory / f"{proc.pid}.json")


def _info(path: Path) -> DaemonInfo:
    data = json.loads(path.read_text())
    pid = int(data["pid"])
    return DaemonInfo(pid, pid_alive(pid), data.get("study"), data.get("executor", "local"), data.get("started", 0.0), Path(data["log"]))


def daemon_status(config: WorkflowConfig) -> list[DaemonInfo]:
    """Every recorded launcher daemon; stale records (dead pids) are removed."""
    out = []
    for path in sorted(_daemon_dir(config).glob("*.json")):
        try:
            info = _info(path)
        except (OSError, ValueError, KeyError):
            continue
        if not info.alive:
            path.unlink(missing_ok=True)
            continue
        out.append(info)
    return out


def register_self(config: WorkflowConfig, *, study: str | None, executor: str) -> Path:
    """Record the current (foreground) launcher process so that status/stop see it."""
    directory = _daemon_dir(config)
    path = directory / f"{os.getpid()}.json"
    if not path.exists():
        info = {"pid": os.getpid(), "study": study, "executor": executor, "started": time.time(), "log": ""}
        path.write_text(json.dumps(info))
    return path


def stop_daemons(config: WorkflowConfig, *, timeout: float = 30.0) -> int:
    """Ask every launcher daemon to stop (drain), wait; return how many stopped.

    Idempotent: with no daemon running it returns 0.
    """
    # A record whose pid a later process now holds is stale: that process is not ours.
    infos = [info for info in daemon_status(config) if is_recorded_process(info.pid, info.started)]
    for info in infos:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for info in infos:
        while pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(info.pid):
            raise MotokoError(
                f"launcher {info.pid} did not stop within {timeout:g} s (its runs are still running)",
                hint="wait for them, or cancel them with `motoko cancel`",
            )
        (_daemon_dir(config) / f"{info.pid}.json").unlink(missing_ok=True)
    return len(infos)

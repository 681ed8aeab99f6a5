"""Run staged runs as subprocesses on Dask workers.

Each run is one Dask task, :func:`execute_run`: on a worker it starts the
run's command in the run's directory (a shared file system, as on SLURM),
writes ``stdout``/``stderr`` there and returns the exit status. The executor
talks to Dask through the asynchronous client, so the launcher's event loop
never blocks. Without a scheduler address it starts, and owns, a
``LocalCluster`` of single-threaded worker processes.

Dask cannot interrupt a running task, so cancelling writes a ``cancel`` file
that the task watches: it then terminates the run's process group (TERM,
then KILL after the grace period). A worker that dies while running a run
is noticed two ways: the executor watches the scheduler's workers, and a
task that Dask reschedules after its worker died refuses to run the command
a second time. Either way the run is reported LOST, and motoko's own retry
policy (``retries``/``retry_on`` in bd.yaml) decides what happens next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from motoko.errors import (
    ConfigError,
    DaskError,  # noqa: F401 (defined there, importable from here)
    )
from motoko.launch.executors.base import Executor, Launch, Outcome, tail

log = logging.getLogger(__name__)

#: Written into the run directory to ask the task to stop (holds the grace period).
CANCEL_FILE = "cancel"
#: Written by the task when it starts the command: key, worker, host, pid.
STARTED_FILE = "dask-task.json"
#: Runs in flight when no ``max_parallel`` is configured (Dask queues them).
DEFAULT_MAX_PARALLEL = 1000
#: Seconds between checks of the cancel file, on the worker.
CANCEL_POLL = 0.1


# -- on the worker ------------------------------------------------------------------


def execute_run(command: list[str], cwd: str, env: dict[str, str], key: str) -> dict[str, Any]:
    """Run one staged run on a Dask worker; return how it ended.

    Module-level so that workers import it by name. Returns ``{"status": N}``
    (a Popen return code: negative for a signal), ``{"cancelled": True}`` if
    cancelled before it started, or ``{"lost": reason}`` when Dask runs the
    task again after the worker that started it died: a run's command is
    never executed twice by one submission.
    """
    run_dir = Path(cwd)
    started = run_dir / STARTED_FILE
    previous = _read_started(started)
    if previous.get("key") == key:
        return {"lost": f"its Dask worker {previous.get('worker')} died while running it"}
    if (run_dir / CANCEL_FILE).exists():
        return {"cancelled": True}
    with open(run_dir / "stdout", "wb") as out, open(run_dir / "stderr", "wb") as err:
        proc = subprocess.Popen(
            command, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, close_fds=True,
        )
    info = {"key": key, "worker": _worker_address(), "host": socket.gethostname(), "pid": proc.pid}
    started.write_text(json.dumps(info))
    return {"status": _wait(proc, run_dir / CANCEL_FILE)}


def _wait(proc: subprocess.Popen[bytes], cancel_file: Path) -> int:
    """Wait for the process, terminating its group if the cancel file appears."""
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout=CANCEL_POLL)
        if cancel_file.exists():
            try:
                grace = float(cancel_file.read_text().strip() or 0)
            except (OSError, ValueError):
                grace = 0.0
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                return proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                return proc.wait()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "?"


def _read_started(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# -- in the launcher -------------------------------------------------------------------------


@dataclass
class _Task:
    launch: Launch
    key: str
    future: Any  # distributed.Future
    started: dict[str, Any] | None = None  # the task's STARTED_FILE, once read


class DaskExecutor(Executor):
    """Executes runs on a Dask cluster (see the module docstring).

    Args:
        max_parallel: Runs submitted at once (queued ones count); default 1000.
        scheduler: ``tcp://HOST:PORT`` of a running scheduler; None starts a
            LocalCluster owned (and closed) by this executor.
        n_workers: Workers of the LocalCluster; default ``min(max_parallel,
            cores)``, one thread each (a run is a process, not a thread).
        check: Seconds between checks that the workers running our runs live.
        connect_timeout: Seconds to wait for the scheduler to answer.

    Raises:
        ConfigError: if dask.distributed is not installed.
    """

    name = "dask"

    def __init__(
        self,
        max_parallel: int | None = None,
        *,
        scheduler: str | None = None,
        n_workers: int | None = None,
        check: float = 1.0,
        connect_timeout: float = 10.0,
    ):
        super().__init__(max_parallel or DEFAULT_MAX_PARALLEL)
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the dask executor needs dask.distributed, which is not installed",
                hint="pip install 'dask[distributed]' (or motoko[dask]), or use `executor: local`",
            ) from None
        self.scheduler = scheduler
        self.n_workers = n_workers or min(self.max_parallel, os.cpu_count() or 1)
        self.check = check
        self.connect_timeout = connect_timeout
        self._client: Any = None
        self._cluster: Any = None
        self._tasks: dict[tuple[str, int], _Task] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect to the scheduler, or start the LocalCluster (idempotent).

        Raises:
            DaskError: if the scheduler does not answer.
        """
        if self._client is not None:
            return
        from distributed import Client, LocalCluster

        try:
            if self.scheduler:
                self._client = await Client(self.scheduler, asynchronous=True, timeout=self.connect_timeout)
            else:
                self._cluster = await LocalCluster(
                    n_workers=self.n_workers, threads_per_worker=1, processes=True,
                    asynchronous=True, dashboard_address=None,
                )
                self._client = await Client(self._cluster, asynchronous=True)
        except (OSError, TimeoutError) as exc:
            where = self.scheduler or "a LocalCluster"
            raise DaskError(
                f"cannot reach the Dask scheduler at {where}: {exc}",
                hint="start one with `dask scheduler` and `dask worker`, or leave `scheduler:` out to use a local cluster",
            ) from None
        self._watcher = asyncio.get_running_loop().create_task(self._watch_workers())

    async def submit(self, launch: Launch) -> str:
        """Submit the run as a Dask task; its outcome is queued when it ends."""
        await self.start()
        for name in (CANCEL_FILE, STARTED_FILE):  # left by an earlier attempt of this run
            (launch.run_dir / name).unlink(missing_ok=True)
        key = f"motoko-{launch.study}-{launch.run_id}-{uuid.uuid4().hex[:8]}"
        future = self._client.submit(
            execute_run, list(launch.command), str(launch.run_dir), dict(launch.env), key,
            key=key, pure=False, retries=0,
        )
        self._tasks[launch.key] = _Task(launch, key, future)
        self.running[launch.key] = key
        self._spawn(self._await(launch.key))
        return key

    async def cancel(self, key: tuple[str, int], grace: float) -> None:
        """Stop a run: TERM its process group, KILL after ``grace``; or drop it if queued."""
        task = self._tasks.get(key)
        if task is None:
            return
        self._cancelled.add(key)
        (task.launch.run_dir / CANCEL_FILE).write_text(f"{grace}\n")
        if not (task.launch.run_dir / STARTED_FILE).exists():
            await self._client.cancel([task.future])  # not started: it never will
            return
        # Started: the task stops the process itself and returns. Should its
        # worker be wedged, give up on it after the grace period and a margin.
        deadline = time.monotonic() + grace + 10
        while key in self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if key in self._tasks:
            await self._client.cancel([task.future], force=True)

    async def close(self) -> None:
        """Stop watching, close the client and the cluster this executor started."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for job in list(self._background):
            job.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                await self._cluster.close()
        self._client = self._cluster = self._watcher = None

    # -- outcomes -----------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        job = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _await(self, key: tuple[str, int]) -> None:
        """Wait for one task's result and turn it into an outcome."""
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        task = self._tasks[key]
        launch = task.launch
        outcome = Outcome(launch.study, launch.run_id, cancelled=key in self._cancelled)
        try:
            result = await task.future
        except FutureCancelledError:
            outcome.cancelled = True
            if key not in self._cancelled:
                outcome.lost, outcome.reason = True, f"Dask task {task.key} was cancelled outside motoko"
        except KilledWorker as exc:
            outcome.lost, outcome.reason = True, f"the Dask workers running it died ({exc})"
        except Exception as exc:  # the task itself raised (cwd missing, command not found...)
            outcome.reason = f"Dask task {task.key} failed: {type(exc).__name__}: {exc}"
        else:
            _apply(outcome, result, key in self._cancelled)
        if not outcome.succeeded and not outcome.cancelled:
            outcome.stderr_tail = tail(launch.run_dir / "stderr")
        self._settle(key, outcome)

    def _settle(self, key: tuple[str, int], outcome: Outcome) -> None:
        if self._tasks.pop(key, None) is None:
            return  # already reported (lost worker, then the task's own answer)
        self._cancelled.discard(key)
        self.report(outcome)

    # -- lost workers -----------------------------------------------------------------------

    async def _watch_workers(self) -> None:
        """Report LOST the runs whose worker left the cluster."""
        while True:
            await asyncio.sleep(self.check)
            if not self._tasks:
                continue
            try:
                workers = set(await self._client.nthreads())
            except Exception as exc:  # the scheduler may be restarting
                log.warning("cannot list Dask workers: %s", exc)
                continue
            self._check_started(workers)

    def _check_started(self, workers: set[str]) -> None:
        for key, task in list(self._tasks.items()):
            if task.started is None:
                info = _read_started(task.launch.run_dir / STARTED_FILE)
                if info.get("key") != task.key:
                    continue  # not started yet: queued in Dask, nothing to lose
                task.started = info
            worker = task.started.get("worker")
            if worker in workers or worker == "?":
                continue
            _kill_orphan(task.started, task.launch.run_dir)
            self._spawn(self._client.cancel([task.future], force=True))
            launch = task.launch
            reason = f"its Dask worker {worker} died while running it"
            self._settle(key, Outcome(launch.study, launch.run_id, lost=True, reason=reason))


def _apply(outcome: Outcome, result: Any, cancelled: bool) -> None:
    """Fill an outcome from what :func:`execute_run` returned."""
    if not isinstance(result, dict):
        outcome.reason = f"unexpected Dask task result {result!r}"
    elif "lost" in result:
        outcome.lost, outcome.reason = True, str(result["lost"])
    elif result.get("cancelled"):
        outcome.cancelled = True
    else:
        status = int(result["status"])
        outcome.exit_code = status if status >= 0 else None
        outcome.signal = -status if status < 0 else None
        outcome.cancelled = cancelled


def _kill_orphan(info: dict[str, Any], run_dir: Path) -> None:
    """KILL the process a dead worker left behind, when it runs on this host.

    Its worker is gone and the run is reported LOST: left alive, it could
    race a retry of the same run. The process is recognised by its working
    directory, so a recycled pid is never killed.
    """
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return
    with contextlib.suppress(OSError):
        if Path(os.readlink(f"/proc/{pid}/cwd")) == run_dir.resolve():
            _signal_group(pid, signal.SIGKILL)

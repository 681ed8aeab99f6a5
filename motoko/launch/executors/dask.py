"""Run staged runs as subprocesses on Dask workers.

Each run is one Dask task, :func:`execute_run`: on a worker it starts the
run's command in the run's directory (a shared file system, as on SLURM),
writes ``stdout``/``stderr`` there and returns the exit status. The executor
talks to Dask through the asynchronous client, so the launcher's event loop
never blocks. Without a scheduler address it starts, and owns, a
``LocalCluster`` of single-threaded worker processes.

At most ``max_parallel`` runs are handed to the scheduler at once (by
default, as many as the cluster has worker threads), and a run becomes
RUNNING only when a worker starts its command: the task says so through a
Dask event topic the executor subscribes to.

Each attempt leaves ``started.<attempt>`` (the task's key, worker, host and
pid) and ``exit.<attempt>`` (the command's status) in the run directory and
respects the attempt fence (see :mod:`motoko.launch.attempts`). A launcher
that finds the runs of a dead launcher adopts those whose worker still runs
them, or which recorded their exit status, and watches the exit file to the
end (:meth:`DaskExecutor.inspect`).

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
from motoko.launch import attempts
from motoko.launch.executors.base import Executor, Launch, Orphan, Outcome, Verdict, tail

log = logging.getLogger(__name__)

#: Written into the run directory to ask the task to stop (holds the grace period).
CANCEL_FILE = "cancel"
#: Runs in flight before the cluster's worker threads are counted (see :meth:`DaskExecutor.start`).
DEFAULT_MAX_PARALLEL = 1000
#: Seconds between checks of the cancel file, on the worker.
CANCEL_POLL = 0.1


# -- on the worker ------------------------------------------------------------------


def execute_run(command: list[str], cwd: str, env: dict[str, str], key: str, attempt: int = 1, topic: str = "") -> dict[str, Any]:
    """Run one attempt of a staged run on a Dask worker; return how it ended.

    Module-level so that workers import it by name. Returns ``{"status": N}``
    (a Popen return code: negative for a signal), ``{"cancelled": True}`` if
    cancelled before it started, ``{"stale": True}`` when the run moved on
    to another attempt, or ``{"lost": reason}`` when Dask runs the task
    again after the worker that started it died: a run's command is never
    executed twice by one submission.
    """
    run_dir = Path(cwd)
    started = attempts.started_file(run_dir, attempt)
    previous = _read_started(started)
    if previous.get("key") == key:
        return {"lost": f"its Dask worker {previous.get('worker')} died while running it"}
    if (run_dir / CANCEL_FILE).exists():
        return {"cancelled": True}
    info: dict[str, Any] = {"key": key, "worker": _worker_address(), "host": socket.gethostname(), "pid": None}
    attempts.write_started(run_dir, attempt, json.dumps(info))
    if attempts.fence(run_dir) != str(attempt):  # said started, then checked: see motoko.launch.attempts
        started.unlink(missing_ok=True)
        return {"stale": True}
    with open(run_dir / "stdout", "wb") as out, open(run_dir / "stderr", "wb") as err:
        proc = subprocess.Popen(
            command, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, close_fds=True,
        )
    info["pid"] = proc.pid
    attempts.write_started(run_dir, attempt, json.dumps(info))
    _tell_started(topic, key)
    status = _wait(proc, run_dir / CANCEL_FILE)
    attempts.record_exit(run_dir, attempt, status)
    return {"status": status}


def _tell_started(topic: str, key: str) -> None:
    """Tell the launcher (subscribed to ``topic``) that ``key``'s command started."""
    if not topic:
        return
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        get_worker().log_event(topic, {"key": key})


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
    started: dict[str, Any] | None = None  # the task's started file, once read
    adopted: bool = False  # a dead launcher's run: watched through its files, not a future


class DaskExecutor(Executor):
    """Executes runs on a Dask cluster (see the module docstring).

    Args:
        max_parallel: Runs handed to the scheduler at once (queued ones
            count); default: the cluster's worker threads, counted again as
            workers come and go.
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
    reports_start = True

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
        self._auto_parallel = not max_parallel
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
        self._topic = f"motoko-started-{uuid.uuid4().hex}"
        self._keys: dict[str, tuple[str, int]] = {}  # Dask key → run

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
        self._client.subscribe_topic(self._topic, self._on_started)
        if self._auto_parallel:
            await self._count_threads()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_workers())

    async def _count_threads(self) -> set[str]:
        """The workers' addresses; sizes ``max_parallel`` to their threads unless configured."""
        nthreads = await self._client.nthreads()
        if self._auto_parallel:
            self.max_parallel = max(1, sum(nthreads.values()))
        return set(nthreads)

    def _on_started(self, event: Any) -> None:
        """A worker started a run's command (a ``log_event`` on our topic)."""
        _, message = event
        run = self._keys.get(str(message.get("key"))) if isinstance(message, dict) else None
        if run is not None and run in self._tasks:
            self.report_started(run)

    async def submit(self, launch: Launch) -> str:
        """Submit the run as a Dask task; its outcome is queued when it ends."""
        await self.start()
        (launch.run_dir / CANCEL_FILE).unlink(missing_ok=True)  # left by an earlier attempt
        attempts.write_fence(launch.run_dir, launch.attempt)
        key = f"motoko-{launch.study}-{launch.run_id}-{launch.attempt}-{uuid.uuid4().hex[:8]}"
        future = self._client.submit(
            execute_run, list(launch.command), str(launch.run_dir), dict(launch.env), key, launch.attempt,
            self._topic, key=key, pure=False, retries=0,
        )
        self._tasks[launch.key] = _Task(launch, key, future)
        self._keys[key] = launch.key
        self.running[launch.key] = key
        self.report_submitted(launch.key, key)
        self._spawn(self._await(launch.key))
        return key

    async def cancel(self, key: tuple[str, int], grace: float) -> None:
        """Stop a run: TERM its process group, KILL after ``grace``; or drop it if queued."""
        task = self._tasks.get(key)
        if task is None:
            return
        self._cancelled.add(key)
        (task.launch.run_dir / CANCEL_FILE).write_text(f"{grace}\n")
        if task.future is None:
            return  # adopted: the task reads the cancel file
        if not attempts.started_file(task.launch.run_dir, task.launch.attempt).exists():
            await self._client.cancel([task.future])  # not started: it never will
            return
        # Started: the task stops the process itself and returns. Should its
        # worker be wedged, give up on it after the grace period and a margin.
        deadline = time.monotonic() + grace + 10
        while key in self._tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if key in self._tasks and task.future is not None:
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
        task = self._tasks.pop(key, None)
        if task is None:
            return  # already reported (lost worker, then the task's own answer)
        self._keys.pop(task.key, None)
        if outcome.exit_code is not None and not outcome.cancelled:
            self.report_started(key)  # it ran, even if its start went unheard
        self._cancelled.discard(key)
        self.report(outcome)

    # -- adoption ------------------------------------------------------------------------------

    async def inspect(self, orphan: Orphan) -> Verdict:
        """Whether a dead launcher's run can be adopted: it recorded its exit, or its worker runs it.

        A run that never started is revoked (a late task stands down) and
        given up; one whose worker left the cluster is LOST, and its process,
        if on this host, killed.
        """
        await self.start()
        run_dir, n = orphan.run_dir, orphan.attempt
        if attempts.read_exit(run_dir, n) is not None:
            return Verdict(True, f"attempt {n} recorded its exit status")
        if attempts.revoke(run_dir, n):
            return Verdict(False, f"attempt {n} never started on a Dask worker (closed to late tasks)")
        info = _read_started(attempts.started_file(run_dir, n))
        workers = await self._count_threads()
        if info.get("worker") in workers:
            return Verdict(True, f"Dask worker {info.get('worker')} runs it")
        if attempts.read_exit(run_dir, n) is not None:
            return Verdict(True, f"attempt {n} recorded its exit status")
        _kill_orphan(info, run_dir)
        return Verdict(False, f"its Dask worker {info.get('worker')} left the cluster")

    def adopt(self, orphan: Orphan) -> None:
        """Watch a dead launcher's run through its attempt files and its worker, to its end."""
        launch = Launch(orphan.study, orphan.run_id, orphan.run_dir, (), {}, attempt=orphan.attempt)
        info = _read_started(attempts.started_file(orphan.run_dir, orphan.attempt))
        task = _Task(launch, str(info.get("key") or orphan.executor_id), None, info or None, adopted=True)
        self._tasks[launch.key] = task
        self.running[launch.key] = task.key
        self.report_started(launch.key)
        self._check_adopted(None)

    # -- lost workers -----------------------------------------------------------------------

    async def _watch_workers(self) -> None:
        """Report LOST the runs whose worker left the cluster."""
        while True:
            await asyncio.sleep(self.check)
            if not self._tasks:
                continue
            try:
                workers = await self._count_threads()
            except Exception as exc:  # the scheduler may be restarting
                log.warning("cannot list Dask workers: %s", exc)
                continue
            self._check_adopted(workers)
            self._check_started(workers)

    def _check_adopted(self, workers: set[str] | None) -> None:
        """Settle adopted runs that recorded their exit, or whose worker left (``workers`` known)."""
        for key, task in list(self._tasks.items()):
            if not task.adopted:
                continue
            launch = task.launch
            code = attempts.read_exit(launch.run_dir, launch.attempt)
            outcome = Outcome(launch.study, launch.run_id, cancelled=key in self._cancelled)
            if code is not None:
                _apply(outcome, {"status": code}, key in self._cancelled)
            elif workers is not None and (task.started or {}).get("worker") not in workers:
                outcome.lost, outcome.reason = True, f"its Dask worker {(task.started or {}).get('worker')} died while running it"
            else:
                continue
            if not outcome.succeeded and not outcome.cancelled:
                outcome.stderr_tail = tail(launch.run_dir / "stderr")
            self._settle(key, outcome)

    def _check_started(self, workers: set[str]) -> None:
        for key, task in list(self._tasks.items()):
            if task.adopted:
                continue
            if task.started is None:
                info = _read_started(attempts.started_file(task.launch.run_dir, task.launch.attempt))
                if info.get("key") != task.key:
                    continue  # not started yet: queued in Dask, nothing to lose
                task.started = info
            worker = task.started.get("worker")
            if worker in workers or worker == "?":
                continue
            _kill_orphan(task.started, task.launch.run_dir)
            if task.future is not None:
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
    elif result.get("stale"):
        outcome.lost, outcome.reason = True, "the run moved on to another attempt before this one started"
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

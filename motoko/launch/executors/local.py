"""Run staged runs as local subprocesses, at most ``max_parallel`` at once.

Each run is its own process group (so cancelling reaches ``launch.sh``'s
children too), with stdout and stderr written to files in its directory.
Process exits are noticed through a pidfd registered with the event loop,
so thousands of short runs cost no thread and no polling each; where pidfds
are missing (old kernels, other systems) a waiting thread does the same job.

A run's process outlives a launcher killed with SIGKILL (it has its own
session), and only a parent learns a process's exit status. So the command
runs under a tiny ``/bin/sh`` that records its status: a line appended to
its launcher's exit log beside the run directories (a new ``exit.<attempt>``
file per run cost an inode; see :mod:`motoko.launch.attempts`). The launcher
that finds the run silent asks :meth:`inspect`: a run that recorded its exit
status is settled from it; a process still running, found on this host by
its environment markers (even when its pid was never recorded), is
*adopted*: watched through a pidfd to its end, then settled from the status
it recorded. Only a run with neither is LOST, and retried if allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from motoko.errors import StagingError
from motoko.launch import attempts
from motoko.launch.executors.base import Executor, Launch, Orphan, Outcome, Verdict, tail
from motoko.launch.processes import find_run_processes

#: Seconds to wait for an ended orphan's exit file to be complete.
EXIT_FILE_GRACE = 1.0
#: What ``running`` says of a run whose process is being started.
STARTING = "starting"
#: Threads starting processes at most (one per slot up to this).
STARTERS = 4
#: The environment variable naming a run's launcher (whose exit log the run appends to).
LAUNCHER_ENV = "MOTOKO_LAUNCHER"


class LocalExecutor(Executor):
    """Executes runs on this machine."""

    name = "local"
    shares_host = True
    # A run is RUNNING once its process exists: submit() returns before that
    # (the process starts in the starter thread) and report_started() says when.
    reports_start = True
    # The run directory is written in the starter thread too (Launch.stage).
    stages = True

    def __init__(self, max_parallel: int | None = None):
        super().__init__(max_parallel or os.cpu_count() or 1)
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._launches: dict[tuple[str, int], Launch] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._adopted: dict[tuple[str, int], int] = {}  # orphans watched: run → pid
        self._starting: dict[tuple[str, int], asyncio.Future[None]] = {}
        # Threads start processes: writing the fence and forking wait on the
        # kernel (long on a loaded machine), while the launcher's loop commits.
        self._starter = ThreadPoolExecutor(min(self.max_parallel, STARTERS), thread_name_prefix="motoko-starter")

    async def submit(self, launch: Launch) -> str:
        """Start the run's process (in the starter thread); its outcome is queued when it exits.

        The run holds its slot at once. Its start is reported by
        :meth:`report_started`, or a failure to start as an outcome.
        """
        key = launch.key
        self._launches[key] = launch
        if not self.running and not self._starting:
            # Nothing else executes (a lone run: latency): start it here, no thread hop.
            self.running[key] = STARTING
            try:
                proc = _spawn(launch)
            except (OSError, StagingError) as exc:
                self._launches.pop(key, None)
                self.report(Outcome(launch.study, launch.run_id, exit_code=None, reason=f"could not start: {exc}"))
                return STARTING
            self._started_now(key, proc)
            return str(proc.pid)
        self.running[key] = STARTING
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._starting[key] = done
        job = loop.run_in_executor(self._starter, _spawn, launch)
        job.add_done_callback(lambda job: self._spawned(key, job, done))
        return STARTING

    def _spawned(self, key: tuple[str, int], job: asyncio.Future[subprocess.Popen[bytes]], done: asyncio.Future[None]) -> None:
        del self._starting[key]
        done.set_result(None)
        launch = self._launches[key]
        error = job.exception()
        if error is not None:
            self._launches.pop(key, None)
            self._cancelled.discard(key)
            self.report(Outcome(launch.study, launch.run_id, exit_code=None, reason=f"could not start: {error}"))
            return
        self._started_now(key, job.result())  # a cancel awaiting this start signals it next

    def _started_now(self, key: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
        self._procs[key] = proc
        self.running[key] = str(proc.pid)
        self._watch(key, proc)
        self.report_started(key)

    def _watch(self, key: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_thread, args=(loop, key, proc), daemon=True).start()
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._finish(key, proc.wait())

        loop.add_reader(pidfd, exited)

    def _wait_thread(
        self, loop: asyncio.AbstractEventLoop, key: tuple[str, int], proc: subprocess.Popen[bytes]
    ) -> None:
        status = proc.wait()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._finish, key, status)

    def _finish(self, key: tuple[str, int], status: int) -> None:
        launch = self._launches.pop(key)
        self._procs.pop(key, None)
        self.running.pop(key, None)
        cancelled = key in self._cancelled
        self._cancelled.discard(key)
        outcome = Outcome(
            launch.study,
            launch.run_id,
            exit_code=status if status >= 0 else None,
            signal=-status if status < 0 else None,
            cancelled=cancelled,
        )
        if status != 0:
            outcome.stderr_tail = tail(launch.run_dir / "stderr")
        self.report(outcome)

    async def cancel(self, key: tuple[str, int], grace: float) -> None:
        """TERM the run's process group, then KILL it after ``grace`` seconds."""
        starting = self._starting.get(key)
        if starting is not None:
            self._cancelled.add(key)
            await starting
        proc = self._procs.get(key)
        pid = proc.pid if proc is not None else self._adopted.get(key)
        if pid is None:
            return
        self._cancelled.add(key)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (key in self._procs or key in self._adopted):
            await asyncio.sleep(0.02)
        if key in self._procs or key in self._adopted:
            _signal_group(pid, signal.SIGKILL)

    async def inspect(self, orphan: Orphan) -> Verdict:
        """Adopt a dead launcher's run that recorded its exit status or still runs on this host."""
        if attempts.fence(orphan.run_dir) != str(orphan.attempt):
            # The fence is written before the process starts: this attempt never did.
            return Verdict(False, f"attempt {orphan.attempt} never started", never_ran=True)
        if attempts.recorded_status(orphan.run_dir, orphan.run_id, orphan.attempt, orphan.launcher) is not None:
            return Verdict(True, f"attempt {orphan.attempt} recorded its exit status")
        pids = await asyncio.to_thread(
            find_run_processes, orphan.study, orphan.run_id, orphan.launcher, orphan.attempt
        )
        if pids:
            return Verdict(True, f"its process {pids[0]} still runs")
        await asyncio.sleep(EXIT_FILE_GRACE)  # it may have ended while we looked
        if attempts.recorded_status(orphan.run_dir, orphan.run_id, orphan.attempt, orphan.launcher) is not None:
            return Verdict(True, f"attempt {orphan.attempt} recorded its exit status")
        return Verdict(False, "no process of it runs on this host and it recorded no exit status")

    def adopt(self, orphan: Orphan) -> None:
        """Watch a dead launcher's process (a pidfd) to its end; settle it from its exit file."""
        launch = Launch(orphan.study, orphan.run_id, orphan.run_dir, (), {LAUNCHER_ENV: orphan.launcher}, attempt=orphan.attempt)
        key = launch.key
        self._launches[key] = launch
        pids = find_run_processes(orphan.study, orphan.run_id, orphan.launcher, orphan.attempt)
        if not pids:
            self.running[key] = "adopted"
            self._finish_orphan(key)
            return
        pid = pids[0]
        self._adopted[key] = pid
        self.running[key] = str(pid)
        self.report_started(key)
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already (or no pidfds): its exit file says how it ended
            self._finish_orphan(key)
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._finish_orphan(key)

        loop.add_reader(pidfd, exited)

    def _finish_orphan(self, key: tuple[str, int]) -> None:
        launch = self._launches.pop(key)
        self._adopted.pop(key, None)
        code = attempts.recorded_status(launch.run_dir, launch.run_id, launch.attempt, launch.env.get(LAUNCHER_ENV))
        cancelled = key in self._cancelled
        self._cancelled.discard(key)
        outcome = Outcome(launch.study, launch.run_id, exit_code=code, cancelled=cancelled)
        if code is None and not cancelled:
            outcome.lost = True
            outcome.reason = "its process ended without recording an exit status"
        if code is not None and code != 0:
            outcome.stderr_tail = tail(launch.run_dir / "stderr")
        if code is not None:
            self.report_started(key)
        self.report(outcome)

    async def close(self) -> None:
        """Let the starter thread go (processes are owned by the launcher's drain)."""
        self._starter.shutdown(wait=False)

    def kill_all(self) -> None:
        """KILL every running process group (the launcher is going down hard)."""
        for pid in [proc.pid for proc in self._procs.values()] + list(self._adopted.values()):
            _signal_group(pid, signal.SIGKILL)


def _spawn(launch: Launch) -> subprocess.Popen[bytes]:
    """Write the run directory, open it to this attempt and start its process (in the starter thread)."""
    if launch.stage is not None:
        launch.stage()
    attempts.write_fence(launch.run_dir, launch.attempt)
    # The run's shell creates its stdout and stderr files: not the launcher.
    # It appends its exit status to its launcher's exit log (no exit.<N>).
    launcher = launch.env.get(LAUNCHER_ENV)
    command = (
        attempts.logged(launch.run_id, launch.attempt, launch.command, launcher, launch.run_dir)
        if launcher else attempts.recorded(launch.attempt, launch.command, output=True)
    )
    return subprocess.Popen(
        command,
        cwd=launch.run_dir,
        env=launch.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

"""Run staged runs as local subprocesses, at most ``max_parallel`` at once.

Each run is its own process group (so cancelling reaches ``launch.sh``'s
children too), with stdout and stderr written to files in its directory.
Process exits are noticed through a pidfd registered with the event loop,
so thousands of short runs cost no thread and no polling each; where pidfds
are missing (old kernels, other systems) a waiting thread does the same job.

A run's process outlives a launcher killed with SIGKILL (it has its own
session). The launcher that finds the run silent asks :meth:`inspect`: the
process, found on this host by its environment markers (even when its pid
was never recorded), is stopped (TERM, then KILL) and waited for *before*
the run is declared LOST, so that a retry never runs beside it. Its exit
status died with its launcher (only a parent learns it), which is why a
local run is not adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time

from motoko.launch.executors.base import Executor, Launch, Orphan, Outcome, Verdict, tail
from motoko.launch.processes import find_run_processes, stop_and_wait

#: Seconds between TERM and KILL for a process a dead launcher left behind.
ORPHAN_GRACE = 5.0


class LocalExecutor(Executor):
    """Executes runs on this machine."""

    name = "local"
    shares_host = True

    def __init__(self, max_parallel: int | None = None):
        super().__init__(max_parallel or os.cpu_count() or 1)
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self._launches: dict[tuple[str, int], Launch] = {}
        self._cancelled: set[tuple[str, int]] = set()

    async def submit(self, launch: Launch) -> str:
        """Start the run's process; its outcome is queued when it exits."""
        key = launch.key
        with open(launch.run_dir / "stdout", "wb") as out, open(launch.run_dir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                launch.command,
                cwd=launch.run_dir,
                env=launch.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[key] = proc
        self._launches[key] = launch
        self.running[key] = str(proc.pid)
        self._watch(key, proc)
        return str(proc.pid)

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
        proc = self._procs.get(key)
        if proc is None:
            return
        self._cancelled.add(key)
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and key in self._procs:
            await asyncio.sleep(0.02)
        if key in self._procs:
            _signal_group(proc.pid, signal.SIGKILL)

    async def inspect(self, orphan: Orphan) -> Verdict:
        """Stop the processes a dead launcher left of ``orphan`` on this host; never adopt.

        Returns once they are gone: the run is then declared LOST (and
        retried if allowed) with nothing of it left running.
        """
        pids = await asyncio.to_thread(
            find_run_processes, orphan.study, orphan.run_id, orphan.launcher, orphan.attempt
        )
        if not pids:
            return Verdict(False, "no process of it runs on this host")
        await stop_and_wait(pids, ORPHAN_GRACE)
        listed = ", ".join(map(str, pids))
        return Verdict(False, f"its process {listed} outlived its launcher and was stopped before any retry")

    async def close(self) -> None:
        """Nothing to release: processes are owned by the launcher's drain."""

    def kill_all(self) -> None:
        """KILL every running process group (the launcher is going down hard)."""
        for proc in list(self._procs.values()):
            _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

"""Run staged runs as local subprocesses, at most ``max_parallel`` at once.

Each run is its own process group (so cancelling reaches ``launch.sh``'s
children too), with stdout and stderr written to files in its directory.
Process exits are told by the run host (below) on a socket that the event
loop reads, so thousands of short runs cost no thread and no polling each;
processes that are not the host's (adopted ones) are watched through pidfds.

A run's process outlives a launcher killed with SIGKILL (it has its own
session), and only a parent learns a process's exit status. So the runs are
started by the launcher's *run host* (:mod:`motoko.launch.run_host`), a
small process that outlives its launcher: it records each run's status, a
line appended to its launcher's exit log beside the run directories (a new
``exit.<attempt>`` file per run cost an inode; see
:mod:`motoko.launch.attempts`), then tells the launcher. The launcher that
finds the run silent asks :meth:`inspect`: a run that recorded its exit
status is settled from it; a process still running, found on this host by
its environment markers (even when its pid was never recorded), is
*adopted*: watched through a pidfd to its end, then settled from the status
its host recorded. Only a run with neither is LOST, and retried if allowed.
The same holds when the run host dies under a living launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from motoko.errors import StagingError
from motoko.launch import attempts
from motoko.launch.executors.base import Executor, Launch, Orphan, Outcome, Verdict, tail
from motoko.launch.processes import find_run_processes
from motoko.launch.run_host import RunHost

log = logging.getLogger(__name__)

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
        self._pids: dict[tuple[str, int], int] = {}  # runs of our host: run → pid
        self._launches: dict[tuple[str, int], Launch] = {}
        self._cancelled: set[tuple[str, int]] = set()
        self._adopted: dict[tuple[str, int], int] = {}  # orphans watched: run → pid
        self._starting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self._host: RunHost | None = None
        self._broken: str | None = None  # why no run host can start (one failed at its start)
        self._tokens: dict[int, tuple[str, int]] = {}  # requests to the host: token → run
        self._settling: set[asyncio.Task[None]] = set()
        self._next_token = 0
        # Threads write run directories and fences (they wait on the kernel,
        # long on a loaded machine) while the launcher's loop commits.
        self._starter = ThreadPoolExecutor(min(self.max_parallel, STARTERS), thread_name_prefix="motoko-starter")

    async def start(self) -> None:
        """Start the run host now: the first run need not wait for it."""
        self._ensure_host()

    def _ensure_host(self) -> RunHost:
        """The run host, started if there is none (OSError: it cannot be, or it failed at its start)."""
        if self._broken is not None:
            raise OSError(self._broken)
        if self._host is None or self._host.closed:
            self._host = RunHost(self._on_reply, self._host_gone)
            self._host.listen(asyncio.get_running_loop())
        return self._host

    def stage_ahead(self, launch: Launch) -> Launch:
        """Write the run's directory now, in a starter thread; its submit then only opens it and asks the host.

        Why: a slot that frees then waits for no directory, only for the
        fence (a link) and the host's fork. The run starts nowhere before
        it is submitted: its fence, written then, is what opens the
        directory to its attempt (a launcher dying meanwhile leaves a
        directory without a fence, an attempt that never started).
        """
        if launch.stage is None:
            return launch
        staging = self._starter.submit(launch.stage)
        # Submitted earlier to the same first-in first-out pool, it is running
        # or done when the start's own job (or the loop, for a lone run) waits on it.
        return dataclasses.replace(launch, stage=staging.result)

    async def submit(self, launch: Launch) -> str:
        """Stage the run (in the starter thread) and ask the run host to start it.

        The run holds its slot at once. Its start is reported by
        :meth:`report_started` when the host says it started, or a failure
        to start as an outcome; its end comes from the host too.
        """
        key = launch.key
        host = self._ensure_host()  # first: a run that cannot start holds no slot
        self._launches[key] = launch
        self.running[key] = STARTING
        loop = asyncio.get_running_loop()
        self._next_token += 1
        token = self._next_token
        self._tokens[token] = key
        done: asyncio.Future[None] = loop.create_future()
        self._starting[key] = done
        if len(self._starting) == 1 and len(self.running) == 1:
            # Nothing else executes (a lone run: latency): stage it here, no thread hop.
            try:
                _request(host, token, launch)
            except (OSError, StagingError) as exc:
                self._not_started(key, token, str(exc))
                return STARTING
            host.read_until(lambda: key not in self._starting)
            return self.running.get(key, STARTING)
        job = self._starter.submit(_request, host, token, launch)

        def requested(job: Future[None]) -> None:  # in the starter thread
            error = job.exception()
            if error is not None:  # else the host's reply wakes the loop: no wake-up of its own
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it
                    loop.call_soon_threadsafe(self._request_failed, key, token, error)

        job.add_done_callback(requested)
        return STARTING

    def _request_failed(self, key: tuple[str, int], token: int, error: BaseException) -> None:
        if token in self._tokens:  # else the host's loss settled it already
            self._not_started(key, token, str(error))

    def _not_started(self, key: tuple[str, int], token: int, error: str) -> None:
        self._tokens.pop(token, None)
        starting = self._starting.pop(key, None)
        if starting is not None:
            starting.set_result(None)
        launch = self._launches.pop(key)
        self.running.pop(key, None)
        self._cancelled.discard(key)
        self.report(Outcome(launch.study, launch.run_id, exit_code=None, reason=f"could not start: {error}"))

    def _on_reply(self, reply: dict[str, Any]) -> None:
        """A line from the run host: a run started, could not start, or ended."""
        if "started" in reply:
            key = self._tokens[reply["started"]]
            self._starting.pop(key).set_result(None)  # a cancel awaiting this start signals it next
            self._pids[key] = reply["pid"]
            self.running[key] = str(reply["pid"])
            self.report_started(key)
        elif "failed" in reply:
            token = reply["failed"]
            if token in self._tokens:
                self._not_started(self._tokens[token], token, reply["error"])
        elif "ended" in reply:
            key = self._tokens.pop(reply["ended"])
            self._finish(key, reply["status"])
        else:
            log.warning("%s", reply.get("error", reply))

    def _host_gone(self) -> None:
        """The run host died: its runs are watched as orphans and settled from what they recorded.

        A run it had started and that recorded no status is LOST, as after a
        launcher's death; one it never started may be running anyway (the
        host died after starting it), so it is looked for the same way. A
        host that failed at its start (an exit status before any answer)
        started nothing: its runs, and every later one, fail to start with
        the reason, instead of being LOST and retried without end.
        """
        host, self._host = self._host, None
        if host is None:
            return
        log.warning("the run host (pid %d) is gone; watching its %d runs as orphans", host.pid, len(self._tokens))
        with contextlib.suppress(subprocess.TimeoutExpired):
            host.process.wait(1.0)
        if not host.answered and host.process.returncode is not None and host.process.returncode > 0:
            # It failed at its start (not killed): another would fail alike, and
            # its runs would be LOST and retried without end. Runs fail instead.
            self._broken = (
                f"the run host exited before answering (exit status {host.process.returncode}); "
                "its error is on the launcher's stderr"
            )
            log.error("%s", self._broken)
        for token, key in list(self._tokens.items()):
            if self._broken is not None:  # it started nothing
                self._not_started(key, token, self._broken)
                continue
            del self._tokens[token]
            starting = self._starting.pop(key, None)
            if starting is not None:
                starting.set_result(None)
            launch = self._launches[key]
            pid = self._pids.pop(key, None)
            started = pid is not None  # and reported so
            if pid is None:
                pids = find_run_processes(launch.study, launch.run_id, launch.env.get(LAUNCHER_ENV, ""), launch.attempt)
                pid = pids[0] if pids else None
            if pid is None:
                self._finish_orphan(key)
            else:
                self._watch_orphan(key, pid, report=not started)

    def _finish(self, key: tuple[str, int], status: int) -> None:
        launch = self._launches.pop(key)
        self._pids.pop(key, None)
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
        pid = self._pids.get(key, self._adopted.get(key))
        if pid is None:
            return
        self._cancelled.add(key)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (key in self._pids or key in self._adopted):
            await asyncio.sleep(0.02)
        if key in self._pids or key in self._adopted:
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
        self._watch_orphan(key, pids[0])

    def _watch_orphan(self, key: tuple[str, int], pid: int, *, report: bool = True) -> None:
        """Watch a process that is not our child (a pidfd) to its end; settle it from its recorded status.

        ``report``: say it started (an adopted run; a run of ours said so already).
        """
        self._adopted[key] = pid
        self.running[key] = str(pid)
        if report:
            self.report_started(key)
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # gone already (or no pidfds): its exit record says how it ended
            self._finish_orphan(key)
            return

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            settle = loop.create_task(self._settle_orphan(key))
            self._settling.add(settle)
            settle.add_done_callback(self._settling.discard)

        loop.add_reader(pidfd, exited)

    async def _settle_orphan(self, key: tuple[str, int]) -> None:
        """Settle an orphan that ended, once its status is recorded (or after a grace: then it is LOST).

        Its host records the status after reaping it, that is just after
        the pidfd says it ended.
        """
        launch = self._launches[key]
        deadline = time.monotonic() + EXIT_FILE_GRACE
        while time.monotonic() < deadline and attempts.recorded_status(
            launch.run_dir, launch.run_id, launch.attempt, launch.env.get(LAUNCHER_ENV)
        ) is None:
            await asyncio.sleep(0.01)
        self._finish_orphan(key)

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
        """Let the starter thread and the run host go (processes are owned by the launcher's drain)."""
        self._starter.shutdown(wait=False)
        if self._host is not None:
            self._host.close()



def _request(host: RunHost, token: int, launch: Launch) -> None:
    """Write the run directory, open it to this attempt and ask the host to start it (in the starter thread)."""
    fresh = launch.stage() if launch.stage is not None else False
    attempts.write_fence(launch.run_dir, launch.attempt, fresh=fresh)
    launcher = launch.env.get(LAUNCHER_ENV)
    # The host records the status in the launcher's exit log (no exit.<N>),
    # else (no launcher: tests, tools) in exit.<N>.
    recorded: dict[str, object] = (
        {"log": str(attempts.exit_log(launch.run_dir, launcher)), "run": launch.run_id, "attempt": launch.attempt}
        if launcher else {"file": attempts.exit_file(launch.run_dir, launch.attempt).name}
    )
    host.start(token, launch.command, str(launch.run_dir), launch.env, base=launch.env_base, **recorded)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)

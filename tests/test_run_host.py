"""The run host: the process that starts a local launcher's runs and records how they end.

Real host processes throughout: driven directly through :class:`RunHost`
(its protocol and its failure paths), and under real launchers killed with
SIGKILL (what it is for: a run's status outlives its launcher).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from launch_support import (
    create_runs,
    kill_launcher,
    make_study,
    run_hosts_of,
    run_of,
    start_launcher,
    wait_until,
)

from motoko.launch import attempts
from motoko.launch.processes import find_run_processes
from motoko.launch.run_host import RunHost
from motoko.study.records import FINISHED, LOST, RUNNING

CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.3, heartbeat: 0.5, cancel_grace: 1}\n"
MARKERS = {"MOTOKO_STUDY": "s", "MOTOKO_RUN_ID": "7", "MOTOKO_ATTEMPT": "1", "MOTOKO_LAUNCHER": "me"}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class _Driver:
    """A real run host and what it said."""

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.gone = False
        self.host = RunHost(self.replies.append, self._gone)
        self.host.listen(asyncio.get_running_loop())

    def _gone(self) -> None:
        self.gone = True

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; replies: {self.replies}"
            await asyncio.sleep(0.01)

    def reply(self, kind: str, token: int) -> dict[str, Any] | None:
        return next((reply for reply in self.replies if reply.get(kind) == token), None)


def _drive(test: Callable[[_Driver], Awaitable[None]]) -> None:
    async def main() -> None:
        driver = _Driver()
        try:
            await test(driver)
        finally:
            driver.host.close()
            if driver.host.process.poll() is None:
                driver.host.process.kill()
            driver.host.process.wait(10)

    asyncio.run(main())


def test_a_host_keeps_reading_starts_while_its_launcher_does_not_read_its_replies(tmp_path):
    """A launcher starting thousands of runs at once reads no reply until it is done sending: a
    host blocked on its replies would stop reading requests, and both would wait for ever. The
    host sends only what the socket takes and keeps reading."""
    replies: list[dict[str, Any]] = []
    host = RunHost(replies.append, lambda: None)
    count = 6000  # their replies, ~90 bytes each, are more than a socket's buffer
    env = {"PADDING": "x" * 1000}  # and the requests too
    sent = threading.Event()

    def send_all() -> None:
        for token in range(count):  # a missing directory: answered "failed", no process to start
            host.start(token, ["true"], str(tmp_path / "missing"), env, file="exit.1")
        sent.set()

    sender = threading.Thread(target=send_all, daemon=True)
    try:
        sender.start()
        assert sent.wait(60), "the host stopped reading requests: both sides blocked"
        host.read_until(lambda: len(replies) == count, timeout=60)
        assert len(replies) == count and all("No such file" in reply["error"] for reply in replies)
        assert [reply["failed"] for reply in replies] == list(range(count))
    finally:
        host.close()
        host.process.wait(10)

def test_a_run_s_status_is_recorded_before_its_launcher_is_told(tmp_path):
    log = tmp_path / ".motoko-exits.me"
    scripts = {1: "echo out; echo err >&2; exit 3", 2: "kill -9 $$", 3: "exit 0"}
    runs = {rid: tmp_path / f"run-{rid}" for rid in scripts}
    for folder in runs.values():
        folder.mkdir()

    async def test(driver: _Driver) -> None:
        for rid, script in scripts.items():
            driver.host.start(rid, ["/bin/bash", "-c", script], str(runs[rid]), dict(os.environ), log=str(log), run=rid, attempt=1)
        await driver.until(lambda: all(driver.reply("ended", rid) for rid in runs), "three ends")
        assert {rid: driver.reply("ended", rid)["status"] for rid in runs} == {1: 3, 2: -9, 3: 0}  # type: ignore[index]
        assert [driver.reply("started", rid) is not None for rid in runs] == [True] * 3

    _drive(test)
    assert (runs[1] / "stdout").read_text() == "out\n" and (runs[1] / "stderr").read_text() == "err\n"
    # In the format the shell of earlier versions wrote, which adoption reads: 128 + N when killed by signal N.
    assert [attempts.read_logged_exit(runs[rid], rid, 1, "me") for rid in runs] == [3, 137, 0]


def test_without_a_launcher_log_the_status_goes_to_the_attempt_s_exit_file(tmp_path):
    async def test(driver: _Driver) -> None:
        driver.host.start(1, ["/bin/sh", "-c", "exit 4"], str(tmp_path), dict(os.environ), file="exit.2")
        await driver.until(lambda: driver.reply("ended", 1) is not None, "the end")

    _drive(test)
    assert (tmp_path / "exit.2").read_text() == "4\n"


def test_runs_sharing_an_environment_get_it_whole_though_it_is_sent_once(tmp_path):
    """The shared part of the runs' environment goes to the host once per object; each run's
    own variables, and those it changes, come with it. A shared name missing from a run's
    environment makes the launcher send that run's environment whole."""
    shared = {"PATH": os.environ["PATH"], "COMMON": "1", "CHANGED": "before"}
    other = {"PATH": os.environ["PATH"], "COMMON": "2"}
    envs = {
        1: {**shared, "OWN": "a"},
        2: {**shared, "CHANGED": "after", "OWN": "b"},
        3: {"PATH": os.environ["PATH"], "OWN": "c"},  # COMMON and CHANGED missing
        4: {**other, "OWN": "d"},
        5: {**shared, "OWN": "e"},
    }
    bases = {1: shared, 2: shared, 3: shared, 4: other, 5: shared}
    sent: list[bytes] = []

    async def test(driver: _Driver) -> None:
        driver.host._socket = _Recording(driver.host._socket, sent)
        for rid, env in envs.items():
            (tmp_path / str(rid)).mkdir()
            script = "echo ${COMMON-unset} ${CHANGED-unset} $OWN"
            driver.host.start(rid, ["/bin/sh", "-c", script], str(tmp_path / str(rid)), env, base=bases[rid], file="exit.1")
        await driver.until(lambda: all(driver.reply("ended", rid) for rid in envs), "five ends")

    _drive(test)
    outputs = {rid: (tmp_path / str(rid) / "stdout").read_text() for rid in envs}
    assert outputs == {1: "1 before a\n", 2: "1 after b\n", 3: "unset unset c\n", 4: "2 unset d\n", 5: "1 before e\n"}
    shared_lines = [line for line in sent if line.startswith(b'{"shared"')]
    assert len(shared_lines) == 3  # shared, other, shared again: once per change of object
    whole = [line for line in sent if b'"start": 3' in line]
    assert b'"env"' in whole[0] and b'"more"' not in whole[0]


class _Recording:
    """A socket whose sends are also kept."""

    def __init__(self, sock: socket.socket, sent: list[bytes]) -> None:
        self._sock, self._sent = sock, sent

    def sendall(self, data: bytes) -> None:
        self._sent.append(data)
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_requests_it_cannot_read_or_start_are_answered_and_the_host_goes_on(tmp_path):
    async def test(driver: _Driver) -> None:
        with driver.host._lock:
            driver.host._socket.sendall(b"this is not json\n{\"no\": \"token\"}\n")
        driver.host.start(1, ["/no/such/program"], str(tmp_path), dict(os.environ), file="exit.1")
        driver.host.start(2, ["true"], str(tmp_path / "missing-directory"), dict(os.environ), file="exit.1")
        driver.host.start(3, ["/bin/sh", "-c", "exit 0"], str(tmp_path), dict(os.environ), file="exit.1")
        await driver.until(lambda: driver.reply("ended", 3) is not None, "the good run's end")
        errors = [reply["error"] for reply in driver.replies if set(reply) == {"error"}]
        assert errors == ["run host: unreadable request b'this is not json'", "run host: unreadable request b'{\"no\": \"token\"}'"]
        assert driver.reply("failed", 1) == {"failed": 1, "error": "[Errno 2] No such file or directory: '/no/such/program'"}
        assert "No such file or directory" in driver.reply("failed", 2)["error"]  # type: ignore[index]
        assert driver.reply("started", 1) is None and driver.reply("started", 2) is None

    _drive(test)


def test_the_host_is_no_run_s_process_and_its_runs_get_default_signals(tmp_path):
    """The host catches TERM, yet a run it starts dies of TERM (a cancel), in its own session."""

    async def test(driver: _Driver) -> None:
        driver.host.start(1, ["sleep", "30"], str(tmp_path), {**os.environ, **MARKERS}, file="exit.1")
        await driver.until(lambda: driver.reply("started", 1) is not None, "the start")
        pid = driver.reply("started", 1)["pid"]  # type: ignore[index]
        assert find_run_processes("s", 7, "me", 1) == [pid]  # the run alone: the host carries no markers
        assert os.getsid(driver.host.pid) != os.getsid(pid) == pid
        os.kill(driver.host.pid, signal.SIGTERM)  # ignored by the host
        os.killpg(pid, signal.SIGTERM)
        await driver.until(lambda: driver.reply("ended", 1) is not None, "the cancelled run's end")
        assert driver.reply("ended", 1)["status"] == -signal.SIGTERM  # type: ignore[index]
        assert _alive(driver.host.pid)

    _drive(test)
    assert (tmp_path / "exit.1").read_text() == "143\n"


def test_a_closed_host_records_its_last_runs_and_then_leaves(tmp_path):
    async def test(driver: _Driver) -> None:
        driver.host.start(1, ["/bin/sh", "-c", "sleep 1; exit 6"], str(tmp_path), dict(os.environ), file="exit.1")
        await driver.until(lambda: driver.reply("started", 1) is not None, "the start")
        driver.host.close()  # as a launcher that goes away: the host stays for its run
        await asyncio.sleep(0.3)
        assert _alive(driver.host.pid) and not (tmp_path / "exit.1").exists()
        await driver.until(lambda: driver.host.process.poll() is not None, "the host to leave")
        assert driver.host.process.returncode == 0

    _drive(test)
    assert (tmp_path / "exit.1").read_text() == "6\n"


def test_a_flooding_peer_is_cut_off_and_the_host_leaves(tmp_path):
    async def test(driver: _Driver) -> None:
        flood = b"x" * (1 << 20)
        with driver.host._lock:
            try:
                for _ in range(20):  # 20 MiB without a line end: past the longest line a host accepts
                    driver.host._socket.sendall(flood)
            except OSError:
                pass
        await driver.until(lambda: driver.host.process.poll() is not None, "the host to leave", timeout=30)

    _drive(test)


def test_a_run_host_outlives_its_killed_launcher_and_its_record_settles_the_run_once(workdir):
    done = workdir / "done"
    launch = f'#!/bin/bash\nsleep 2\necho "$MOTOKO_RUN_ID" >> {done}\n'
    _, db = make_study(workdir, CONFIG, launch=launch, extra="retries: 2\nretry_on: [LOST]\n")
    (rid,) = create_runs(db, x=1)
    first = start_launcher(workdir)
    try:
        wait_until(lambda: run_of(db, rid).state == RUNNING, 30, "the run to start")
        (host,) = run_hosts_of(first.pid)
    finally:
        kill_launcher(first)
    run = run_of(db, rid)
    assert _alive(host)
    wait_until(lambda: attempts.recorded_status(Path(run.run_path), rid, 1, run.launcher) == 0, 30, "the host to record the end")
    wait_until(lambda: not _alive(host), 10, "the host to leave after its last run")
    second = start_launcher(workdir, "--idle-exit", "3", log="second.log")
    try:
        second.wait(60)
    finally:
        kill_launcher(second)
    run = run_of(db, rid)
    assert (run.state, run.attempt, run.exit_code) == (FINISHED, 1, 0)
    assert done.read_text().split() == [str(rid)]  # its work once


def test_a_run_host_killed_under_its_launcher_leaves_its_run_lost_and_a_new_host_starts_the_next(workdir):
    done = workdir / "done"
    launch = f'#!/bin/bash\n[ "$MOTOKO_PARAM_x" = 1 ] && sleep 2\necho "$MOTOKO_RUN_ID" >> {done}\n'
    _, db = make_study(workdir, CONFIG, launch=launch)
    (first_run,) = create_runs(db, x=1)
    launcher = start_launcher(workdir, "--idle-exit", "4")
    try:
        wait_until(lambda: run_of(db, first_run).state == RUNNING, 30, "the run to start")
        (host,) = run_hosts_of(launcher.pid)
        os.kill(host, signal.SIGKILL)
        wait_until(lambda: run_of(db, first_run).state == LOST, 30, "the run to be LOST")
        (second_run,) = create_runs(db, x=2)
        wait_until(lambda: run_of(db, second_run).state == FINISHED, 30, "the next run to finish")
        assert run_hosts_of(launcher.pid) and run_hosts_of(launcher.pid) != [host]
        launcher.wait(60)
    finally:
        kill_launcher(launcher)
    lost = run_of(db, first_run)
    assert lost.error == "its process ended without recording an exit status"
    assert sorted(done.read_text().split()) == sorted([str(first_run), str(second_run)])  # the lost one ran once
    assert "the run host" in (workdir / "launcher.log").read_text()


def test_the_control_channel_is_a_private_socket_pair():
    """Nothing on the file system names it: only the launcher and its host hold its ends."""

    async def test(driver: _Driver) -> None:
        fd = driver.host._socket.fileno()
        assert driver.host._socket.family == socket.AF_UNIX
        assert not os.path.exists(os.readlink(f"/proc/self/fd/{fd}"))  # 'socket:[inode]', no path
        stdin = os.readlink(f"/proc/{driver.host.pid}/fd/0")
        assert stdin.startswith("socket:")

    _drive(test)


def test_a_run_host_that_fails_at_its_start_fails_the_runs_with_one_line_not_loses_them(workdir, monkeypatch):
    """No retry loop: LOST runs are retried, and every new host would fail the same way."""
    import sys

    from launch_support import Background

    from motoko.config import load_config
    from motoko.launch import run_host
    from motoko.study.records import FAILED

    monkeypatch.setattr(run_host, "_command", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    _, db = make_study(workdir, CONFIG, extra="retries: 2\nretry_on: [LOST]\n")
    ids = create_runs(db, x=[1, 2, 3])
    report = Background(load_config(workdir), once=True, max_parallel=2).join(60)
    assert report.executed == 3 and report.finished == 0
    for rid in ids:
        run = run_of(db, rid)
        assert (run.state, run.attempt) == (FAILED, 1)
        assert run.error == (
            "could not start: the run host exited before answering (exit status 3); its error is on the launcher's stderr"
        )

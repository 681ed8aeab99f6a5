"""The run host: one process that starts a local launcher's runs and records how they end.

Why a process of its own: only a parent learns a process's exit status, and
a run outlives its launcher killed with SIGKILL (it has its own session).
An adopting launcher settles such a run from its recorded status instead of
running it again, so something that survives the launcher must be the
run's parent. That used to be a ``/bin/sh`` per run: one more fork and
exec for every run, about a quarter of a trivial run's CPU. One host per launcher is now
the parent of all its runs.

The launcher starts its host (:class:`RunHost`) in a session of its own, as
``python -I -S <this file>``: the host imports the standard library only,
so that it starts in a few milliseconds and no user environment variable
changes how it runs. They talk over a socket pair, the host's stdin, one
JSON object per line:

* launcher to host: ``{"start": token, "argv": [...], "cwd": dir, "env":
  {...}, "log": exit log, "run": id, "attempt": n}``; ``"file": path``
  instead of ``"log"``, ``"run"`` records the status in an ``exit.<N>`` file.
  A launcher's runs share most of their environment: ``{"shared": {...}}``
  sends that part once, and a start then carries ``"more": {...}`` (what
  the run's environment adds or changes) instead of ``"env"``. Why: the
  whole environment, encoded by the launcher and decoded here for every
  run, was a tenth of what starting a trivial run cost the launcher;
* host to launcher: ``{"started": token, "pid": pid}``, ``{"failed": token,
  "error": text}`` or ``{"ended": token, "status": status}`` (a status as
  :attr:`subprocess.Popen.returncode` gives it: minus the signal that
  killed the run).

The host records a status (the format :mod:`motoko.launch.attempts` reads:
``128 + N`` for a run killed by signal N) *before* it tells its launcher,
so whoever learns of the end finds it on disk. It creates each run's
``stdout`` and ``stderr`` in its directory, as the run's shell did. It
ignores TERM, INT and HUP (a run's own handlers are the default ones: exec
resets caught signals), and when its launcher goes away (end of file) it
starts nothing more, records the ends of the runs it has, and exits after
the last one.

This module imports nothing of motoko: it is both the host and the
launcher's side of the protocol, written once.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Bytes read from the control socket at once.
CHUNK = 1 << 16
#: The longest line either side accepts (a run's environment is in it).
MAX_LINE = 1 << 24
#: Seconds a launcher waits, blocking, for a lone run's start (then its loop reads the reply).
START_WAIT = 2.0


def exit_code(status: int) -> int:
    """A returncode as the run's shell would have written it: ``128 + N`` when killed by signal N."""
    return 128 - status if status < 0 else status


def record_line(run_id: int, attempt: int, code: int) -> bytes:
    """The exit log's line for a run: its own line, its numbers' sum last (a torn line is no status)."""
    return f"\n{run_id} {attempt} {code} {run_id + attempt + code}\n".encode()


class _Host:
    """The host's side: starts runs on request, reaps them, records and reports their ends."""

    def __init__(self, control: socket.socket):
        self.control = control
        self.control.setblocking(False)
        self.children: dict[int, tuple[subprocess.Popen[bytes], dict[str, Any]]] = {}
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.launcher_gone = False
        #: Replies the launcher has not taken yet. Never a blocking send: a
        #: launcher sending many starts at once, blocked as the host stopped
        #: reading them while blocked on replies the launcher had no time to
        #: read, would wait for each other for ever (thousands of slots).
        self.outbox = bytearray()
        self.waiting_room = False  # watching the socket for room to send the outbox
        self.selector = selectors.DefaultSelector()
        self.shared: dict[str, str] = {}  # the environment the launcher's runs share (see the module docstring)

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _ignore)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _ignore)  # caught, not ignored: exec gives the runs their defaults back
        selector = self.selector
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_read, selectors.EVENT_READ, "child")
        pending = b""
        while not self.launcher_gone or self.children:
            for key, mask in selector.select():
                if key.data == "child":
                    while _drained(wake_read):
                        pass
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush()
                if not mask & selectors.EVENT_READ or self.launcher_gone:
                    continue
                try:
                    data = self.control.recv(CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.leave()
                    continue
                pending += data
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_LINE:
                    self.leave()  # not our launcher talking: start nothing more
                    pending = b""
                for line in lines:
                    self.handle(line)
            self.reap()

    def handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if isinstance(message.get("shared"), dict):
                self.shared = message["shared"]
                return
            token = message["start"]
            if "more" in message:
                message["env"] = {**self.shared, **message.pop("more")}
        except (ValueError, KeyError, TypeError, AttributeError):
            self.tell({"error": f"run host: unreadable request {line[:80]!r}"})
            return
        try:
            proc = self.spawn(message)
        except Exception as exc:  # anything that stops a start is the run's failure, not the host's
            self.tell({"failed": token, "error": str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"})
            return
        self.children[proc.pid] = (proc, message)
        self.tell({"started": token, "pid": proc.pid})

    def spawn(self, message: dict[str, Any]) -> subprocess.Popen[bytes]:
        cwd = message["cwd"]
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        out = os.open(os.path.join(cwd, "stdout"), flags, 0o666)
        try:
            err = os.open(os.path.join(cwd, "stderr"), flags, 0o666)
            try:
                return subprocess.Popen(
                    message["argv"], cwd=cwd, env=message["env"], stdin=self.devnull, stdout=out, stderr=err,
                    start_new_session=True, close_fds=True,
                )
            finally:
                os.close(err)
        finally:
            os.close(out)

    def reap(self) -> None:
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            entry = self.children.pop(pid, None)
            if entry is None:
                continue
            proc, message = entry
            status = os.waitstatus_to_exitcode(wait_status)
            proc.returncode = status  # reaped here: Popen must not wait for it again
            try:
                record(message, exit_code(status))
            except OSError as exc:
                print(f"motoko run host: could not record the status of {message.get('cwd')}: {exc}", file=sys.stderr)
            self.tell({"ended": message["start"], "status": status})

    def tell(self, reply: dict[str, Any]) -> None:
        if self.launcher_gone:
            return
        self.outbox += json.dumps(reply).encode() + b"\n"
        self.flush()

    def flush(self) -> None:
        """Send what the socket takes now; watch for room for the rest."""
        try:
            while self.outbox:
                del self.outbox[: self.control.send(self.outbox)]
        except BlockingIOError:
            pass
        except OSError:
            self.leave()
            return
        if self.waiting_room != bool(self.outbox):
            self.waiting_room = bool(self.outbox)
            self.selector.modify(self.control, selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbox else 0), "control")

    def leave(self) -> None:
        """The launcher is gone (or not ours): start nothing more, tell it nothing more."""
        if not self.launcher_gone:
            self.launcher_gone = True
            self.outbox.clear()
            self.selector.unregister(self.control)


def record(message: dict[str, Any], code: int) -> None:
    """Write a run's exit status where its request says: a line of the exit log, or its ``exit.<N>`` file."""
    if "log" in message:
        fd = os.open(message["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, record_line(int(message["run"]), int(message["attempt"]), code))
        finally:
            os.close(fd)
    else:
        path = os.path.join(message["cwd"], message["file"])
        with open(path + ".tmp", "w") as file:
            file.write(f"{code}\n")
        os.replace(path + ".tmp", path)


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing (a caught signal, unlike an ignored one, is reset by exec)."""


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


class RunHost:
    """A launcher's side of its run host (see the module docstring).

    Requests may be sent from any thread; replies are read on the launcher's
    event loop, which calls ``on_reply`` with each one and ``on_gone`` once
    when the host is gone (it died, or was closed).
    """

    def __init__(self, on_reply: Callable[[dict[str, Any]], None], on_gone: Callable[[], None]):
        self._on_reply = on_reply
        self._on_gone = on_gone
        self._lock = threading.Lock()
        self._pending = b""
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                _command(), stdin=theirs.fileno(), stdout=subprocess.DEVNULL, env=_host_env(), start_new_session=True,
                close_fds=True,
            )
        self._socket = ours
        self._shared: Any = None  # the shared environment the host was last sent (that very object)
        self._loop: Any = None
        self.closed = False
        #: Whether the host said anything yet (one that exits before did not start).
        self.answered = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def listen(self, loop: Any) -> None:
        """Read the host's replies on ``loop`` (an asyncio event loop)."""
        self._loop = loop
        loop.add_reader(self._socket.fileno(), self._readable)

    def start(
        self,
        token: int,
        argv: tuple[str, ...] | list[str],
        cwd: str,
        env: Mapping[str, str],
        base: Mapping[str, str] | None = None,
        **recorded: Any,
    ) -> None:
        """Ask the host to start a run; ``recorded`` is ``log=, run=, attempt=`` or ``file=``.

        Args:
            base: The part of ``env`` that the launcher's runs share, if
                known: every key of it is in ``env``, and the values ``env``
                did not change are the same objects. It is sent to the host
                once, and each run then only what it adds or changes.

        Raises:
            OSError: The host is gone.
        """
        more = None
        if base is not None:
            more = {name: value for name, value in env.items() if base.get(name) is not value}
            if len(env) - len(more) + sum(1 for name in more if name in base) != len(base):
                more = None  # a shared name missing from env: send it whole
        request: dict[str, Any] = {"start": token, "argv": list(argv), "cwd": cwd, **recorded}
        if more is None:
            request["env"] = dict(env)
        else:
            request["more"] = more
        line = json.dumps(request).encode() + b"\n"
        with self._lock:
            if base is not None and more is not None and base is not self._shared:
                self._socket.sendall(json.dumps({"shared": dict(base)}).encode() + b"\n")
                self._shared = base
            self._socket.sendall(line)

    def close(self) -> None:
        """Stop talking to the host: it starts nothing more and exits after its last run."""
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self._socket.fileno())
        self._socket.close()
        if self.process.poll() is None:
            # Reaped in a thread: the host may outlive the launcher's loop (its runs go on).
            threading.Thread(target=self.process.wait, daemon=True, name="motoko-run-host-wait").start()

    def read_until(self, done: Callable[[], bool], timeout: float = START_WAIT) -> None:
        """Read replies here, blocking, until ``done()`` (at most ``timeout`` s).

        For a lone run, until the host says whether it started: its start is
        then reported in the launcher's same cycle, not in one more (a hop's
        latency). Replies read meanwhile are handled in order; past the
        timeout the loop's reader takes over.
        """
        deadline = time.monotonic() + timeout
        while not self.closed and not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._socket], [], [], remaining)[0]:
                return
            self._readable()

    def _readable(self) -> None:
        try:
            data = self._socket.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            self._on_gone()
            return
        self.answered = True
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._on_reply(json.loads(line))


def _command() -> list[str]:
    """How to start the host: this file, under the launcher's interpreter, with no site and no PYTHON* variables."""
    path = os.path.abspath(__file__)
    if os.path.isfile(path):
        return [sys.executable, "-I", "-S", path]
    return [sys.executable, "-m", "motoko.launch.run_host"]  # pragma: no cover (a zipped install)


def _host_env() -> dict[str, str]:
    """The host's environment: the locale only; each run's environment comes with its request.

    Not the launcher's: a launcher started inside a run would hand that run's
    markers on, and the host would pass for a process of that run.
    """
    return {name: os.environ[name] for name in ("LANG", "LC_ALL", "LC_CTYPE") if name in os.environ}


def main() -> None:
    """The host's entry point: serve the launcher on stdin."""
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    _Host(control).serve()


if __name__ == "__main__":
    main()

"""The run channel, the launcher's side: runs write through their launcher.

A launcher whose runs execute on its own host serves a unix socket in a
private directory (the directory 0700, the socket 0600: only the user can
reach it) and names it in each run's environment (``MOTOKO_CHANNEL``). A run
says ``hello`` with its study, id and attempt; the launcher answers with the
run and its job as claimed (so the run never opens the database) and from
then on receives the run's writes as small JSON lines (see
:mod:`motoko.launch.messages`).

Writes are not committed one by one. The launcher's cycle takes the
:meth:`RunChannel.pending` writes of all its runs, applies them in its own
transaction (the same one that marks runs RUNNING and settles outcomes), and
calls :meth:`RunChannel.committed` once it committed. So:

* a run process is never a database client: one client per launcher, not
  one per run, however many runs execute;
* every write is fenced by the run's attempt, in the transaction: a write of
  a superseded attempt is refused and the run is told to stop;
* a write the database refuses (an impossible state change, a value a run
  field's type refuses) is dropped alone and the run is told;
* a run's last writes, sent before it exits, commit in the same transaction
  as its outcome, or before it: the launcher settles a run only once it read
  the run's connection to its end (:meth:`RunChannel.settleable`), so a run
  exits without waiting for its launcher;
* a run flooding the channel is slowed down, not buffered without bound:
  past :data:`MAX_QUEUED` uncommitted writes the launcher stops reading it
  (the run blocks in ``send``) and commits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motoko.errors import ChannelError, MotokoError
from motoko.launch.messages import (
    ENV_CHANNEL,
    MAX_MESSAGE,
    apply_write,
    check_write,
    decode,
    encode,
)
from motoko.study.database import StudyDB
from motoko.study.server import pid_alive

log = logging.getLogger(__name__)

#: Uncommitted writes of one run after which the launcher stops reading it.
MAX_QUEUED = 1000
#: Channel directories in the temp directory: this, the launcher's pid, a dash, random letters.
CHANNEL_PREFIX = "motoko-channel-"
#: Seconds a write waits for the launcher's next commit at most (more writes join it).
FLUSH_DELAY = 0.05
#: Errors and refusals told to one run (and logged); past that they are only counted (a run that never reads).
MAX_TOLD = 20
#: Seconds a run's outcome waits for its connection to be read to the end (a
#: child process that inherited the socket may hold it open longer).
HOLD_LIMIT = 1.0


@dataclass
class Admission:
    """A run the launcher started and will accept on its channel."""

    attempt: int | None
    run: dict[str, Any]
    job: dict[str, Any]
    field_types: dict[str, str]


@dataclass
class Peer:
    """One connected run process."""

    key: tuple[str, int]
    attempt: int | None
    pid: int | None
    writer: asyncio.StreamWriter
    field_types: dict[str, str]
    queued: int = 0
    told: int = 0
    last_seen: float = 0.0  # loop time of its last message
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        """``study.run`` for messages."""
        return f"{self.key[0]}.{self.key[1]}"

    def send(self, message: dict[str, Any]) -> None:
        """Push a message to the run (dropped if it already left)."""
        if not self.writer.is_closing():
            self.writer.write(encode(message))


@dataclass
class Write:
    """One write of a run, waiting for the launcher's next commit."""

    peer: Peer
    message: dict[str, Any]


@dataclass
class ChannelStats:
    """What the channel saw (for benchmarks and tests)."""

    connections: int = 0
    writes: int = 0
    committed: int = 0
    refused: int = 0
    errors: int = 0  # one-line errors told to a connection (unreadable, refused hello)
    peak_queued: int = 0


class RunChannel:
    """The launcher's end of its runs' channel.

    Args:
        owner: The launcher's id (named in messages).
        max_queued: Uncommitted writes of one run before it is slowed down.
        flush_delay: Longest wait between a write and the commit that holds it.
    """

    def __init__(self, owner: str, *, max_queued: int = MAX_QUEUED, flush_delay: float = FLUSH_DELAY):
        self.owner = owner
        self.max_queued = max_queued
        self.flush_delay = flush_delay
        self.path: str | None = None
        self.stats = ChannelStats()
        self._directory: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expected: dict[tuple[str, int], Admission] = {}
        self._peers: dict[tuple[str, int], Peer] = {}
        self._stopping: dict[tuple[str, int], str] = {}
        self._pending: list[Write] = []
        self._refusals: list[tuple[Peer, str]] = []
        self._superseded: dict[tuple[str, int], tuple[Peer, str]] = {}
        self._held: dict[tuple[str, int], float] = {}  # outcome waiting for EOF → since

    # -- life cycle ------------------------------------------------------------

    async def start(self, wake: asyncio.Event) -> None:
        """Serve the channel; ``wake`` is set whenever writes want a commit."""
        self._wake = wake
        sweep_stale_channels(tempfile.gettempdir())
        # 0700, ours alone; named by our pid, so that a later launcher can
        # remove it if we are killed (see sweep_stale_channels).
        self._directory = tempfile.mkdtemp(prefix=f"{CHANNEL_PREFIX}{os.getpid()}-")
        path = os.path.join(self._directory, "runs.sock")
        self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_MESSAGE)
        os.chmod(path, 0o600)
        self.path = path

    async def close(self) -> None:
        """Stop serving; connected runs see the launcher leave."""
        if self._timer is not None:
            self._timer.cancel()
        for peer in list(self._peers.values()):
            peer.writer.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self.path = None

    # -- what the launcher tells the channel ---------------------------------------

    def environment(self, key: tuple[str, int], run_json: dict[str, Any], field_types: dict[str, str]) -> dict[str, str]:
        """Expect the run ``key`` and return what its environment needs to find the channel.

        Returns {} when the channel is not served (runs then use the database).
        """
        if self.path is None:
            return {}
        run = dict(run_json["run"])
        self._expected[key] = Admission(run.get("attempt"), run, dict(run_json["job"]), field_types)
        self._stopping.pop(key, None)
        return {ENV_CHANNEL: self.path}

    def forget(self, key: tuple[str, int]) -> None:
        """The run ``key`` was settled: its channel admission ends."""
        self._expected.pop(key, None)
        self._stopping.pop(key, None)
        self._held.pop(key, None)

    def settleable(self, outcomes: list[Any]) -> int:
        """How many of ``outcomes`` (ended runs), from the first, may be settled now.

        A run whose process ended may still have writes in its socket. Its
        outcome waits until the connection was read to its end (the launcher
        is woken then); a connection silent for :data:`HOLD_LIMIT` seconds
        (held open by a child process) no longer holds it back.
        """
        now = asyncio.get_running_loop().time()
        for index, outcome in enumerate(outcomes):
            peer = self._peers.get(outcome.key)
            if peer is None:
                continue
            idle = now - max(self._held.setdefault(outcome.key, now), peer.last_seen)
            if idle < HOLD_LIMIT or peer.queued >= self.max_queued:
                asyncio.get_running_loop().call_later(max(0.0, HOLD_LIMIT - idle), self._wake_now)
                return index
        return len(outcomes)

    def stop(self, key: tuple[str, int], reason: str = "cancel requested") -> None:
        """Push a stop request to the run (now, or in its welcome if it has not said hello yet)."""
        self._stopping[key] = reason
        peer = self._peers.get(key)
        if peer is not None:
            peer.send({"op": "stop", "reason": reason})

    # -- folding writes into the launcher's transaction ---------------------------------

    def pending(self) -> list[Write]:
        """The writes received and not yet committed, in order (a snapshot)."""
        return list(self._pending)

    def awaited(self) -> bool:
        """Whether a run waits for the launcher's next commit.

        A run that asked for its writes to be committed (``run.commit()``, and
        every run at exit), or one slowed down for writing too much, blocks
        until then: the launcher holding its commit back to settle more
        outcomes at once would hold the run (and its slot) as long.
        """
        return any(write.message["op"] == "flush" or write.peer.queued >= self.max_queued for write in self._pending)

    def apply(self, db: StudyDB, writes: list[Write]) -> None:
        """Apply ``writes`` inside the caller's transaction (safe to call again after a conflict)."""
        self._refusals = []
        self._superseded = {}
        for write in writes:
            peer, message = write.peer, write.message
            if message["op"] == "flush" or peer.key in self._superseded:
                continue
            run = db.study(peer.key[0]).runs.get(peer.key[1])
            if run is None:
                self._refusals.append((peer, f"run {peer.name} no longer exists"))
            elif peer.attempt is not None and run.attempt != peer.attempt:
                self._superseded[peer.key] = (
                    peer,
                    f"run {peer.name} is now attempt {run.attempt}, this process ran attempt "
                    f"{peer.attempt}: its changes are not saved",
                )
            else:
                try:
                    apply_write(run, message, peer.field_types)
                except (MotokoError, ValueError, TypeError, AttributeError) as exc:
                    self._refusals.append((peer, f"run {peer.name}: {_describe(message)} refused: {exc}"))

    def committed(self, writes: list[Write]) -> None:
        """``writes`` are committed: tell runs what was refused, acknowledge flushes, read on."""
        del self._pending[: len(writes)]
        self.stats.committed += sum(1 for write in writes if write.message["op"] != "flush")
        for peer, text in self._refusals:
            self.stats.refused += 1
            self._tell_peer(peer, {"op": "refused", "message": text}, logged=f"launcher {self.owner}: {text}")
        for key, (peer, text) in self._superseded.items():
            self._stopping[key] = "superseded"
            peer.send({"op": "stop", "reason": "superseded", "message": text})
        self._refusals, self._superseded = [], {}
        for write in writes:
            peer = write.peer
            peer.queued -= 1
            if peer.queued < self.max_queued:
                peer.drained.set()
            if write.message["op"] == "flush":
                peer.send({"op": "ack", "id": write.message.get("id")})

    # -- serving runs -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        peer: Peer | None = None
        try:
            try:
                hello = await reader.readline()
            except ValueError:  # past the reader's limit
                raise ChannelError(f"a hello message longer than {MAX_MESSAGE} bytes") from None
            peer = self._admit(hello, writer)
            if peer is not None:
                await self._read(peer, reader)
        except ConnectionError as exc:
            self._tell(writer, f"launcher {self.owner}: {exc}")
        finally:
            if peer is not None and self._peers.get(peer.key) is peer:
                del self._peers[peer.key]
                if peer.key in self._held:
                    self._wake_now()  # its outcome can be settled now
            writer.close()

    def _admit(self, line: bytes, writer: asyncio.StreamWriter) -> Peer | None:
        """Check a ``hello``; answer ``welcome`` (returning the peer) or one line of error."""
        try:
            hello = decode(line)
            if hello["op"] != "hello":
                raise ValueError(f"the first message must be 'hello', not {hello['op']!r}")
            key = (str(hello["study"]), int(hello["run"]))
        except (ValueError, KeyError, TypeError) as exc:
            self._tell(writer, f"launcher {self.owner}: {exc}")
            return None
        name = f"{key[0]}.{key[1]}"
        admission = self._expected.get(key)
        attempt = hello.get("attempt")
        if admission is None or (attempt is not None and admission.attempt != attempt):
            self._tell(writer, f"launcher {self.owner} does not execute run {name} attempt {attempt}")
            return None
        if key in self._peers:
            self._tell(
                writer,
                f"run {name} already has a process speaking for it on launcher {self.owner}'s channel "
                f"(pid {self._peers[key].pid}); pid {hello.get('pid')} was refused",
            )
            return None
        peer = Peer(key, admission.attempt, hello.get("pid"), writer, admission.field_types)
        self._peers[key] = peer
        stop = self._stopping.get(key)
        peer.send({
            "op": "welcome", "run": admission.run, "job": admission.job, "fields": admission.field_types,
            "stop": stop is not None, "reason": stop,
        })
        return peer

    async def _read(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # past the reader's limit: the rest of the line cannot be skipped safely
                raise ChannelError(
                    f"run {peer.name} sent a message longer than {MAX_MESSAGE} bytes; its connection is closed"
                ) from None
            if not line:
                return
            peer.last_seen = asyncio.get_running_loop().time()
            try:
                message = decode(line)
                check_write(message)
            except ValueError as exc:
                self.stats.errors += 1
                self._tell_peer(peer, {"op": "error", "message": f"launcher {self.owner}: run {peer.name}: {exc}"})
                continue
            self._queue(peer, message)
            if peer.writer.transport.get_write_buffer_size():
                # Past 64 KiB of answers (acknowledgements) it has not read, a run
                # is read no further until it reads them: they would pile up here.
                await peer.writer.drain()
            if peer.queued >= self.max_queued:
                peer.drained.clear()
                self._wake_now()
                await peer.drained.wait()

    def _queue(self, peer: Peer, message: dict[str, Any]) -> None:
        if message["op"] == "flush" and not message.get("commit"):
            peer.send({"op": "ack", "id": message.get("id")})  # received is enough: see the module doc
            return
        self._pending.append(Write(peer, message))
        if message["op"] != "flush":  # a commit flush is queued with the writes, but is none
            self.stats.writes += 1
        peer.queued += 1
        self.stats.peak_queued = max(self.stats.peak_queued, peer.queued)
        if message["op"] == "flush":
            self._wake_now()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_delay, self._wake_now)

    def _tell_peer(self, peer: Peer, message: dict[str, Any], logged: str | None = None) -> None:
        """Tell a run (and the log) of an error or a refusal; past :data:`MAX_TOLD`, only count it.

        A run that never reads would otherwise have every answer buffered in
        the launcher's memory, and one sending garbage in a loop would flood
        the launcher's log with a line per message.
        """
        peer.told += 1
        if peer.told <= MAX_TOLD:
            log.warning("%s", logged or message["message"])
            peer.send(message)
        if peer.told == MAX_TOLD:
            log.warning("launcher %s: run %s: further errors and refusals are only counted", self.owner, peer.name)

    def _wake_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._wake is not None:
            self._wake.set()

    def _tell(self, writer: asyncio.StreamWriter, text: str) -> None:
        self.stats.errors += 1
        log.warning("%s", text)
        with contextlib.suppress(ConnectionError, RuntimeError, MotokoError):
            if not writer.is_closing():
                writer.write(encode({"op": "error", "message": text}))


def sweep_stale_channels(root: str) -> int:
    """Remove the channel directories under ``root`` of this user's launchers that are gone.

    Why: a launcher killed with SIGKILL cannot remove its channel directory,
    and they piled up in the temp directory (449 after a day of tests here).
    A directory is removed only when its launcher's pid is not alive *and*
    its socket refuses connections: a reused pid, or a launcher in another
    pid namespace sharing the temp directory, keeps its channel. Directories
    named without a pid (older launchers) are left alone. Returns how many
    were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(CHANNEL_PREFIX):
            continue
        pid_text = entry.name[len(CHANNEL_PREFIX):].split("-", 1)[0]
        try:
            pid = int(pid_text)
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except (ValueError, OSError):
            continue
        if pid == os.getpid() or pid_alive(pid) or _listening(os.path.join(entry.path, "runs.sock")):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


def _listening(path: str) -> bool:
    """Whether a unix socket at ``path`` accepts connections (False when refused or missing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _describe(message: dict[str, Any]) -> str:
    if message["op"] == "set":
        return f"run.{message['name']} = {_short(message.get('value'))}"
    if message["op"] == "state":
        return f"run.state = {message['value']!r}"
    return f"run.{message['method']}({', '.join(_short(a) for a in message.get('args', []))})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def channel_mode(path: str | Path) -> tuple[int, int]:
    """(directory mode, socket mode) of a channel, for checks: both must be the user's alone."""
    socket_path = Path(path)
    return socket_path.parent.stat().st_mode & 0o777, socket_path.stat().st_mode & 0o777

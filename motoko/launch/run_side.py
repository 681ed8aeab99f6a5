"""Inside a run, the run's side of the run channel.

A run started by a launcher on the same host finds, in ``MOTOKO_CHANNEL``, a
unix socket its launcher serves. :func:`connect` says ``hello`` there and
gets back its run and its job; from then on the run never touches the
database: each write (``run.y = ...``, ``push_quantity``, ``set_progress``,
``finish``...) is one small message, which the launcher folds, with the
writes of all its runs, into its own batched commits, fenced by the run's
attempt. This module imports nothing heavy (no ZODB, no pandas): a Python
run pays a few milliseconds for the API instead of a database client.

What a run can rely on:

* Writes are sent in order and applied in order. ``run.commit()`` returns
  once everything written before it is committed (or raises why not).
* A run exits without waiting for its launcher: the launcher reads the run's
  connection to its end before settling it, so the last writes commit with
  (or before) the run's outcome.
* ``should_stop()`` answers from what the launcher pushed (a cancel, or the
  attempt superseded), without a round trip.
* If the launcher goes away, the run keeps working; its writes are kept,
  ``should_stop()`` turns True, and at exit one line on stderr says what was
  not saved.
* A run keeps at most :data:`CONFIRM_EVERY` writes in memory for its
  launcher's confirmation, however long it runs and however often it writes.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import ChannelError, MotokoError, RunSuperseded, RunWriteRefused
from motoko.launch.messages import MAX_MESSAGE, check_progress, decode, encode
from motoko.study.job_fields import JobFields

if TYPE_CHECKING:
    import pandas

#: Seconds a run waits at exit for its launcher to acknowledge its last writes.
EXIT_FLUSH_TIMEOUT = 60.0
#: Writes a run keeps until its launcher confirms they are committed (to save
#: them itself should the launcher go). Past that many it asks for a commit,
#: or, its launcher gone, saves them itself: a run writing its progress every
#: step of a week-long simulation would otherwise keep every write in memory.
CONFIRM_EVERY = 1000


class LauncherLink:
    """The run's connection to its launcher: sends writes, reads what is pushed.

    Attributes:
        name: ``study.run`` (for messages).
        stop_reason: Why the launcher asked the run to stop, or None.
        superseded: The launcher's message when the run's attempt was superseded.
        refused: Writes the launcher could not store (one line each).
        gone: True once the launcher's end closed.
        undelivered: Short descriptions of writes sent after the launcher went.
        save_directly: Saves the kept writes through a database connection of
            the run's own, once the launcher went (None: they cannot be).
    """

    def __init__(self, path: str, study: str, run_id: int, attempt: int | None):
        self.name = f"{study}.{run_id}"
        #: The attempt this process runs (None: whatever the run is at).
        self.attempt = attempt
        self.stop_reason: str | None = None
        self.superseded: str | None = None
        self.refused: list[str] = []
        self.gone = False
        self.undelivered: list[str] = []
        #: Writes sent (or kept) since the launcher last confirmed a commit: what
        #: the run saves itself if its launcher goes before committing them.
        self.unconfirmed: list[dict[str, Any]] = []
        self.save_directly: Callable[[LauncherLink], None] | None = None
        self._confirm_at = CONFIRM_EVERY
        #: A write the database may refuse on commit (a state change) was sent since the last commit.
        self.unchecked = False
        self._buffer = b""
        self._lock = threading.RLock()  # threads of the run share the link
        self._next_flush = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)  # OSError: no launcher there (the caller falls back)
        hello = {"op": "hello", "study": study, "run": run_id, "attempt": attempt, "pid": os.getpid()}
        self._sock.sendall(encode(hello))
        welcome = self._receive(lambda m: m["op"] in ("welcome", "error"), timeout=EXIT_FLUSH_TIMEOUT)
        if welcome is None:
            # The launcher died between accepting and answering (killed with
            # its workflow, say): like no launcher at all, not a refusal, so
            # the caller falls back to the database.
            self._sock.close()
            raise ConnectionError(f"run {self.name}: the launcher at {path} did not answer")
        if welcome["op"] == "error":
            self._sock.close()
            raise ChannelError(
                welcome["message"], hint="one process speaks for a run; open other processes' results as files"
            )
        #: The launcher's first answer: the run and its job as claimed, the run fields' types.
        self.welcome: dict[str, Any] = welcome

    def send(self, message: dict[str, Any], what: str) -> None:
        """Send one write; after the launcher went, keep it as undelivered."""
        line = encode(message, what=f"run {self.name}: {what}")
        kept = message["op"] != "flush"
        with self._lock:
            if kept:
                self.unconfirmed.append(message)
            if message["op"] == "state" or message.get("method") in ("start", "finish", "fail"):
                self.unchecked = True
            if not self.gone:
                try:
                    self._sock.sendall(line)  # blocks while the launcher's buffer for us is full
                except OSError:
                    self._lose()
            if self.gone and kept:
                self.undelivered.append(what)
            if kept and len(self.unconfirmed) >= self._confirm_at:
                self._confirm()

    def _confirm(self) -> None:
        """Have the kept writes committed, or saved directly, so they need keeping no more (see :data:`CONFIRM_EVERY`)."""
        if not self.gone:
            self.flush(commit=True, timeout=EXIT_FLUSH_TIMEOUT)
        if self.gone and self.unconfirmed and self.save_directly is not None and not self.superseded:
            try:
                self.save_directly(self)
            except Exception:  # noqa: BLE001 (kept, and tried again at exit, which says what failed)
                pass
            else:
                self.unconfirmed.clear()
                self.undelivered.clear()
        if self.superseded:  # refused whatever becomes of them: nothing to keep
            self.unconfirmed.clear()
            self.undelivered.clear()
        # Not confirmed (a launcher that could not commit in time): try again a round later.
        self._confirm_at = len(self.unconfirmed) + CONFIRM_EVERY

    def poll(self) -> None:
        """Read, without waiting, whatever the launcher pushed."""
        with self._lock:
            if not self.gone:
                self._receive(lambda m: False, timeout=0.0)

    def flush(self, *, commit: bool, timeout: float | None = None) -> bool:
        """Wait until the launcher has (``commit``: committed) every write sent; False if it cannot."""
        with self._lock:
            self._next_flush += 1
            if commit:
                self.unchecked = False
            number = self._next_flush
            sent = len(self.unconfirmed)
            self.send({"op": "flush", "id": number, "commit": commit}, "flush")
            if self.gone:
                return False
            ack = self._receive(lambda m: m["op"] == "ack" and m.get("id") == number, timeout=timeout)
            if ack is not None and commit:
                del self.unconfirmed[:sent]
            return ack is not None

    def close(self) -> None:
        """Close the socket (the launcher sees the run leave)."""
        self._sock.close()

    def _lose(self) -> None:
        self.gone = True
        self._sock.close()

    def _receive(self, wanted: Any, timeout: float | None) -> dict[str, Any] | None:
        """Process pushed messages until one is ``wanted`` (returned) or ``timeout``."""
        self._sock.settimeout(timeout)
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                message = self._take(decode(line))
                if wanted(message):
                    return message
            try:
                chunk = self._sock.recv(65536) if timeout != 0.0 else self._sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, TimeoutError):
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self._lose()
                return None
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                self._lose()
                return None

    def _take(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message["op"]
        if op == "stop" or (op == "welcome" and message.get("stop")):
            self.stop_reason = message.get("reason") or "stop requested"
            if message.get("reason") == "superseded":
                self.superseded = message.get("message")
        elif op in ("refused", "error"):
            self.refused.append(str(message.get("message")))
        return message

    def exit_report(self) -> str | None:
        """One line for stderr saying what this run's writes became, or None if all were saved."""
        if self.superseded:
            return f"motoko: {self.superseded}"
        parts = []
        if self.undelivered:
            shown = ", ".join(self.undelivered[:5]) + (", …" if len(self.undelivered) > 5 else "")
            parts.append(
                f"run {self.name}: its launcher went away; {len(self.undelivered)} write(s) not saved ({shown})"
            )
        if self.refused:
            parts.append(f"run {self.name}: {len(self.refused)} write(s) refused: {self.refused[0]}")
        return "motoko: " + "; ".join(parts) if parts else None


class ChannelJob(JobFields):
    """The run's job as handed over by the launcher: ``job.x``, ``job['x']``, ``job.id``."""

    def __init__(self, values: dict[str, Any]):
        self.id = values.get("id")
        self.params = {k: v for k, v in values.items() if k != "id"}


class ChannelRun:
    """The run as its own process sees it when its launcher serves a channel.

    Reads answer from the run as handed over at start, updated by this
    process's own writes (dates read as ISO text). Writes go to the launcher
    at once; see the module's docstring for what a run may rely on.
    """

    __slots__ = ("_link", "_fields", "_types", "_read_stored")

    def __init__(
        self, link: LauncherLink, fields: dict[str, Any], types: dict[str, str], read_stored: Callable[[str], Any]
    ):
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_types", types)
        # Reads the stored run ("study.id") through a database connection: the
        # caller's (motoko.launch.runtime), so this module stays light.
        object.__setattr__(self, "_read_stored", read_stored)

    # -- reading -------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name in fields and not name.startswith("_"):
            return fields[name]
        raise AttributeError(f"run {self._link.name} has no attribute {name!r}")

    def __getitem__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """Return a field or free attribute, or ``default`` when it is not set."""
        return self._fields.get(name, default)

    def fields(self) -> dict[str, Any]:
        """Every field and free attribute as this process knows them (a copy)."""
        return dict(self._fields)

    def get_metadata(self) -> dict[str, str]:
        """Return the run's metadata (a copy)."""
        return dict(self._fields.get("metadata") or {})

    @property
    def job(self) -> ChannelJob:
        """The job this run executes."""
        return ChannelJob(self._fields["job"])

    def __repr__(self) -> str:
        return f"<Run {self._link.name} {self._fields.get('state')}>"

    # -- writing -------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state":
            self._link.send({"op": "state", "value": str(value)}, f"state {value}")
            self._fields["state"] = str(value)
            return
        if name.startswith("_") or not name.isidentifier():
            raise RunWriteRefused(f"run attribute name {name!r} is not a public Python name")
        value = self._coerce(name, value)
        self._link.send({"op": "set", "name": name, "value": value}, name)
        self._fields[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        self.__setattr__(name, value)

    def _coerce(self, name: str, value: Any) -> Any:
        type_name = self._types.get(name)
        if type_name is None:
            return value
        from motoko.study.fields import field_type  # light, but only needed for declared fields

        value = field_type(type_name).coerce(value, field=name, where=f"run {self._link.name}")
        return value.isoformat() if isinstance(value, _dt.datetime) else value

    def _call(self, method: str, *args: Any, what: str | None = None) -> None:
        self._link.send({"op": "call", "method": method, "args": list(args)}, what or method)

    def push_quantity(self, values: Any, step: int, name: str) -> None:
        """Store a scalar or vector value of quantity ``name`` at ``step``."""
        self._call("push_quantity", values, int(step), str(name), what=f"push_quantity {name}")

    def pushScalarQuantity(self, value: Any, step: int, name: str, *_: Any) -> None:  # noqa: N802
        """Alias of :meth:`push_quantity` (BlackDynamite)."""
        self.push_quantity(value, step, name)

    pushVectorQuantity = pushScalarQuantity  # noqa: N815
    pushQuantity = pushScalarQuantity  # noqa: N815

    def set_progress(self, fraction: float) -> None:
        """Record how far the run is, between 0.0 and 1.0."""
        value = check_progress(fraction)
        self._call("set_progress", value)
        self._fields["progress"] = value

    def set_status(self, text: str) -> None:
        """Record a short human-readable status line."""
        self._call("set_status", str(text))
        self._fields["status"] = str(text)

    def set_output(self, output: dict[str, Any]) -> None:
        """Record the run's result as a dictionary (merged into earlier output)."""
        self._call("set_output", dict(output))
        self._fields["output"] = {**(self._fields.get("output") or {}), **output}

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        """Attach string key/value metadata, usable in constraints as ``meta.KEY``."""
        plain = {str(k): str(v) for k, v in metadata.items()}
        self._call("set_metadata", plain)
        self._fields["metadata"] = {**(self._fields.get("metadata") or {}), **plain}

    def start(self) -> None:
        """Mark the run RUNNING (the launcher already does it when it starts the run)."""
        self._call("start")
        if self._fields.get("state") == "LAUNCHED":
            self._fields["state"] = "RUNNING"

    def finish(self) -> None:
        """Mark the run FINISHED now (exit status 0 would do it too)."""
        self._call("finish")
        self._fields["state"] = "FINISHED"

    def fail(self, message: str = "failed") -> None:
        """Mark the run FAILED with ``message`` as its error."""
        self._call("fail", str(message))
        self._fields.update(state="FAILED", error=str(message))

    def should_stop(self) -> bool:
        """True once a cancel was requested, the attempt was superseded, or the launcher went."""
        link = self._link
        link.poll()
        return link.stop_reason is not None or link.gone

    def request_stop(self) -> None:
        """Ask for this run to be stopped, as a cancel would (Numerous's ``request_stop``).

        ``should_stop()`` turns True at once; the launcher records the
        request and settles the run CANCELLED when it ends.
        """
        self._link.send({"op": "set", "name": "stop_requested", "value": True}, "request_stop")
        self._fields["stop_requested"] = True
        if self._link.stop_reason is None:
            self._link.stop_reason = "stop requested by the run"

    def store_file(self, name: str, data: bytes | None = None) -> None:
        """Store a file of the run directory in the database (see ``Run.store_file``).

        Files are too large for the channel's messages, so this commits, then
        writes through a database connection of this process (the heavy path).
        """
        content = Path(name).read_bytes() if data is None else bytes(data)  # read once, before any retry
        self._stored().store_file(name, content, commit=True)

    def commit(self) -> None:
        """Return once every write so far is committed.

        Raises:
            RunSuperseded: the run moved on to another attempt; nothing is saved.
            RunWriteRefused: a write was refused (the first one is named).
            ChannelError: the launcher went away before committing.
        """
        link = self._link
        link.flush(commit=True)
        if link.superseded:
            raise RunSuperseded(link.superseded, hint="stop this process")
        if link.refused:
            first, link.refused = link.refused[0], []
            raise RunWriteRefused(first)
        if link.gone:
            raise ChannelError(f"run {link.name}: the launcher went away; {len(link.undelivered)} write(s) not saved")

    # -- quantities (read from the database: rare, and the only heavy path) --

    def _stored(self) -> Any:
        self.commit()
        return self._read_stored(self._link.name)

    def get_quantity(self, name: str) -> pandas.DataFrame:
        """Return a quantity as a DataFrame (commits first, then reads the database)."""
        return self._stored().get_quantity(name)

    def list_quantities(self) -> list[str]:
        """Return the names of the quantities this run pushed (commits first)."""
        return list(self._stored().list_quantities())

    getQuantity = get_quantity  # noqa: N815
    getQuantities = list_quantities  # noqa: N815


def connect(
    path: str, study: str, run_id: int, attempt: int | None, read_stored: Callable[[str], Any],
    save_directly: Callable[[LauncherLink], None] | None = None,
) -> tuple[ChannelRun, ChannelJob]:
    """Say hello to the launcher at ``path``; return the run and its job.

    ``read_stored`` reads the stored run by name, for the rare reads the
    launcher's hand-over cannot answer (quantities). ``save_directly`` saves,
    at exit, the writes a launcher that went away never committed.

    Raises:
        OSError: no launcher listens there, or it went before answering
            (the caller falls back to the database).
        ChannelError: the launcher refused this process (told why in one line).
    """
    link = LauncherLink(path, study, run_id, attempt)
    link.save_directly = save_directly
    welcome = link.welcome
    fields = dict(welcome.get("run") or {})
    fields["job"] = welcome.get("job") or {}
    handle = ChannelRun(link, fields, dict(welcome.get("fields") or {}), read_stored)
    atexit.register(_at_exit, link)
    return handle, handle.job


def _at_exit(link: LauncherLink) -> None:
    """Make sure what the run wrote is saved, or say in one line what was not.

    The run waits (briefly) for its launcher to commit its last writes: a
    launcher killed after reading them but before committing would otherwise
    lose them, and whoever adopts the run would settle it from its exit
    status without its results. If the launcher went away, the run saves
    those writes itself through a direct database connection, fenced by its
    attempt like any run's writes.
    """
    if link.unconfirmed and not link.gone:
        link.flush(commit=True, timeout=EXIT_FLUSH_TIMEOUT)
    else:
        link.poll()  # what the launcher already said (refusals, a stop, that it went)
    if link.gone and link.unconfirmed and link.save_directly is not None and not link.superseded:
        try:
            link.save_directly(link)
            link.unconfirmed.clear()
            link.undelivered.clear()
        except MotokoError as exc:
            link.refused.append(f"{exc} (saving directly, its launcher gone)")
        except Exception as exc:  # noqa: BLE001 (at exit: report, never a traceback)
            link.refused.append(f"could not save directly, its launcher gone: {exc}")
    report = link.exit_report()
    if report:
        print(report, file=sys.stderr)
    link.close()


"""The database server process: ZEO's ``runzeo``, ending itself once idle.

``motoko`` starts a workflow's server on first use, detached, so that a fresh
checkout needs no set-up step. Without an end, every directory tried leaves
one behind. Started with ``--idle-stop SECONDS``, the server watches its own
client connections (workflows, launchers, CLI commands, the dashboard) and
closes once none has been connected for that long: ZEO then stops accepting,
closes, removes its socket and pid file, and the process exits 0. The next
command that needs the database starts it again.

Each transaction's operations wait for its vote in memory
(:class:`MemoryCommitLog`), not pickled into a temporary file made for the
transaction and read back (see :mod:`motoko.study.zeo_buffers`). Clients may
ask for many objects in one message (see :mod:`motoko.study.bulk_loads`).

Run as ``python -m motoko.study.zeo_main [--idle-stop SECONDS] -C zeo.conf``.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import ZEO.StorageServer
from ZEO.runzeo import ZEOOptions, ZEOServer
from ZEO.StorageServer import CommitLog

from motoko.study.bulk_loads import BulkStorageServer
from motoko.study.zeo_buffers import SpillingRecords

log = logging.getLogger(__name__)


def clients(server: Any) -> int:
    """How many clients are connected to a ZEO ``StorageServer`` now."""
    return sum(len(connected) for connected in list(server.zeo_storages_by_storage_id.values()))


class IdleStoppingServer(ZEOServer):  # type: ignore[misc]
    """A ZEO server that closes after ``idle`` seconds without any client.

    Args:
        options: runzeo's options.
        idle: Seconds without a client before closing; 0 or None: never.
    """

    def __init__(self, options: Any, idle: float | None):
        super().__init__(options)
        self.idle = idle or 0.0

    def create_server(self) -> None:
        super().create_server()
        if self.idle > 0:
            threading.Thread(target=self._watch, name="motoko-idle-stop", daemon=True).start()

    def _watch(self) -> None:
        """Close the server once no client has been connected for ``idle`` seconds."""
        check = max(0.05, min(self.idle / 10, 5.0))
        quiet_since = time.monotonic()
        while True:
            time.sleep(check)
            if clients(self.server):
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since >= self.idle:
                log.info("no client for %g s: stopping (idle stop)", self.idle)
                self.server.close()  # the accept loop ends; main() removes socket and pid file
                return


class MemoryCommitLog(CommitLog):  # type: ignore[misc]
    """The server's log of a transaction's operations (ZEO's ``CommitLog``), in memory."""

    def __init__(self) -> None:  # noqa: D107 (no file: see SpillingRecords)
        self.records = SpillingRecords()
        self.file = None  # ZEO's close() looks at it

    @property
    def stores(self) -> int:
        return self.records.count

    def size(self) -> int:
        return self.records.size

    def delete(self, oid: bytes, serial: bytes) -> None:
        self.records.add(("_delete", (oid, serial)), 16)

    def checkread(self, oid: bytes, serial: bytes) -> None:
        self.records.add(("_checkread", (oid, serial)), 16)

    def store(self, oid: bytes, serial: bytes, data: bytes) -> None:
        self.records.add(("_store", (oid, serial, data)), 16 + (len(data) if data else 0))

    def restore(self, oid: bytes, serial: bytes, data: bytes, prev_txn: bytes) -> None:
        self.records.add(("_restore", (oid, serial, data, prev_txn)), 24 + (len(data) if data else 0))

    def undo(self, transaction_id: bytes) -> None:
        self.records.add(("_undo", (transaction_id,)), 8)

    def __iter__(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        return iter(self.records)

    def close(self) -> None:
        self.records.close()


def main(argv: list[str] | None = None) -> None:
    """Parse ``--idle-stop`` and pass the rest to runzeo."""
    parser = argparse.ArgumentParser(prog="python -m motoko.study.zeo_main", add_help=False)
    parser.add_argument("--idle-stop", type=float, default=0.0)
    known, rest = parser.parse_known_args(argv)
    # Each transaction's operations wait for its vote in memory, not in a temporary file (see MemoryCommitLog).
    ZEO.StorageServer.CommitLog = MemoryCommitLog
    # Clients may ask for many objects in one message (see motoko.study.bulk_loads);
    # runzeo builds the server from this name.
    ZEO.StorageServer.StorageServer = BulkStorageServer
    options = ZEOOptions()
    options.realize(rest)
    IdleStoppingServer(options, known.idle_stop).main()


if __name__ == "__main__":
    main()

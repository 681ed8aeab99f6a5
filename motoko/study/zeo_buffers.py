"""ZEO's buffers of a transaction's objects, kept in memory instead of a temporary file.

Both ends of a ZEO commit hold the transaction's objects until its end. The
client keeps them in a ``TransactionBuffer`` (at the end its cache takes the
new states); the server keeps them in a ``CommitLog`` (at the vote it hands
them to the storage). Each pickles every record into a temporary file as it
arrives and reads them all back at the end: a file made and removed per
transaction (an inode, slow where inodes are), a pickling and an unpickling
per object. In a profile of inserting 20,000 runs the client's buffer alone
was 8 % of the time.

:class:`SpillingRecords` keeps records in a list, and only past
:data:`MEMORY_LIMIT` bytes pickles the rest into a temporary file as ZEO
does, so a transaction of gigabytes costs no more memory than before.
:class:`MemoryTransactionBuffer` (here, for clients) and
:class:`~motoko.study.zeo_main.MemoryCommitLog` (the server's) are ZEO's two
buffers on top of it: same records, same order, same answers.

They follow ZEO 6's buffers (``pyproject.toml`` keeps ZEO below 7).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from ZEO.TransactionBuffer import TransactionBuffer
from zodbpickle.pickle import Pickler, Unpickler

#: Bytes of a transaction's records kept in memory; beyond, a temporary file takes the rest.
MEMORY_LIMIT = 64 << 20


class SpillingRecords:
    """Records in arrival order: in memory up to :data:`MEMORY_LIMIT` bytes, then in a temporary file.

    Attributes:
        count: Records added.
        size: Their bytes, as counted by :meth:`add`'s callers.
    """

    def __init__(self) -> None:
        self.memory: list[Any] = []
        self.count = 0
        self.size = 0
        self._file: Any = None
        self._pickler: Any = None

    @property
    def spilled(self) -> bool:
        """Whether records went to the temporary file (the memory limit was reached)."""
        return self._file is not None

    def add(self, record: Any, size: int) -> None:
        """Keep ``record`` (of builtin types: bytes, str, None, tuples), counting ``size`` bytes."""
        if self._file is None and self.size > MEMORY_LIMIT:
            self._file = tempfile.TemporaryFile(suffix=".motoko-txn")  # noqa: SIM115 (closed by close())
            self._pickler = Pickler(self._file, 1)
            self._pickler.fast = 1  # builtin records: no memo needed
        if self._file is None:
            self.memory.append(record)
        else:
            self._pickler.dump(record)
        self.count += 1
        self.size += size

    def __iter__(self) -> Iterator[Any]:
        yield from self.memory
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            unpickler = Unpickler(self._file)
            for _ in range(self.count - len(self.memory)):
                yield unpickler.load()

    def close(self) -> None:
        """Drop the records."""
        self.memory = []
        if self._file is not None:
            self._file.close()
            self._file = None


class MemoryTransactionBuffer(TransactionBuffer):  # type: ignore[misc]
    """The client's buffer of a transaction's stored objects (ZEO's ``TransactionBuffer``), in memory."""

    def __init__(self, connection_generation: Any):  # noqa: D107 (no file: see SpillingRecords)
        self.connection_generation = connection_generation
        self.blobs: list[Any] = []
        self.server_resolved: set[bytes] = set()
        self.client_resolved: dict[bytes, int] = {}
        self.exception: BaseException | None = None
        self.records = SpillingRecords()

    @property
    def count(self) -> int:
        return self.records.count

    @property
    def size(self) -> int:
        return self.records.size

    @property
    def spilled(self) -> bool:
        return self.records.spilled

    def store(self, oid: bytes, data: bytes | None) -> None:
        """Keep one object's new state (``data`` None: deleted, or not to be cached: its cache entry is only invalidated)."""
        self.records.add((oid, data), (len(data) if data else 0) + 31)

    def close(self) -> None:
        self.records.close()

    def __iter__(self) -> Iterator[tuple[bytes, bytes | None, bool]]:
        """``(oid, data, resolved by the server)`` of each object, as ZEO's buffer gives them."""
        seen = set()
        for index, (oid, data) in enumerate(self.records):
            if self.client_resolved.get(oid, index) == index:  # an object resolved again later: only the last
                seen.add(oid)
                yield oid, data, oid in self.server_resolved
        for oid in self.server_resolved - seen:  # resolved by the server, never stored here (undo)
            yield oid, None, True

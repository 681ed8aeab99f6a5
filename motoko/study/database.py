"""The study database connection: :class:`StudyDB`.

One StudyDB is one ZEO client connection with its own transaction manager.
It opens (and checks the version of) the database whose layout
:mod:`motoko.study.container` describes, runs every logical change as one
transaction with bounded conflict retries, waits (bounded) for a server that
went away, and answers selections through :mod:`motoko.study.planner`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import transaction
import ZODB
from BTrees.OOBTree import OOBTree
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

from motoko.errors import (
    DatabaseError,
    FieldTypeChanged,
    RunNotFound,
    ServerError,
    StudyNotFound,
)
from motoko.study.container import (  # noqa: F401 (re-exported: the database's layout)
    SCHEMA_VERSION,
    Counter,
    LauncherRecord,
    Study,
    canonical,
    expand_ids,
    known_states,
    migrate,
)
from motoko.study.feed import ChangeFeed, FeedStorage
from motoko.study.journal import Journal, commit_with_retries
from motoko.study.planner import select_runs
from motoko.study.records import Job, Run
from motoko.study.schema import StudySchema
from motoko.study.server import Address, parse_address, server_wait, with_user_tls
from motoko.study.states import CREATED
from motoko.study.tls import client_context, probe

T = TypeVar("T")
log = logging.getLogger(__name__)


# -- the connection ---------------------------------------------------------------


def _open_db(storage: Any, cache_size: int) -> ZODB.DB:
    """ZODB.DB over ``storage``; several processes may be creating the root at once.

    On a brand-new database, every client tries to create the root object;
    the losers see a conflict and simply look again.
    """
    for attempt in range(20):
        try:
            return ZODB.DB(storage, cache_size=cache_size, large_record_size=1 << 26)
        except ConflictError:  # includes ReadConflictError
            time.sleep(0.01 * (attempt + 1))
    return ZODB.DB(storage, cache_size=cache_size, large_record_size=1 << 26)


_gc_lock = threading.Lock()
_gc_inserts = 0  # inserts under way (threads of one process may insert at once)
_gc_was_enabled = False  # the collector's state before the first of them


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while an insert builds and commits its objects.

    An insert of 10,000 runs allocates a few hundred thousand container
    objects (runs, jobs, their dicts, pickles), and the collector ran its
    full collections over every object of the process meanwhile (the
    connection's cache holds up to 200,000): 12-18 % of inserting 100,000
    runs, and more as the process grows. Garbage made meanwhile is collected
    once the last insert ends; the process's other threads are paused as
    long (one transaction).
    """
    global _gc_inserts, _gc_was_enabled
    with _gc_lock:
        _gc_inserts += 1
        if _gc_inserts == 1:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_inserts -= 1
            if _gc_inserts == 0 and _gc_was_enabled:
                gc.enable()


class StudyDB:
    """A connection to a study database served by ZEO.

    One StudyDB is one ZODB connection with its own transaction manager, for
    one thread (or one asyncio loop). Changes are made inside :meth:`transact`,
    which commits them as one transaction and retries a bounded number of
    times when another process changed the same objects meanwhile.

    Args:
        address: ``zeo://PATH``, ``zeo://HOST:PORT`` or an :class:`Address`.
        wait_timeout: Seconds to wait for an unreachable server before
            :class:`ServerError` (never hangs).
        cache_size: Objects kept in memory by the connection.
        ssl: An ``ssl.SSLContext`` for a TLS server.
        ssl_server_hostname: Host name to check the server certificate against.
    """

    _sibling = False  # True for a connection sharing another's client (see sibling())
    _seen_commits = -1  # a sibling has not begun with the server yet (see catch_up())

    def __init__(
        self,
        address: Address | str,
        *,
        wait_timeout: float = 10.0,
        cache_size: int = 200_000,
        ssl: Any = None,
        ssl_server_hostname: str | None = None,
    ):
        self.address = with_user_tls(address if isinstance(address, Address) else parse_address(address))
        self.reconnect_timeout = server_wait(self.reconnect_timeout)
        # ZEO blocks every storage call this long while disconnected: never longer
        # than MOTOKO_SERVER_WAIT says a process may wait for its server.
        wait_timeout = min(wait_timeout, self.reconnect_timeout)
        self.feed = ChangeFeed()
        if ssl is None and self.address.tls is not None:
            ssl = client_context(self.address.tls)
            ssl_server_hostname = ssl_server_hostname or self.address.host
        try:
            storage = FeedStorage(
                self.address.zeo(),
                feed=self.feed,
                wait_timeout=wait_timeout,
                ssl=ssl,
                ssl_server_hostname=ssl_server_hostname,
                # Every transaction begins with a round trip to the server, so a
                # commit that finished before we begin is always visible to us
                # (invalidations travel asynchronously otherwise).
                server_sync=True,
            )
        except ClientDisconnected:
            raise ServerError(
                f"cannot reach the database server at {self.address} within {wait_timeout:g} s"
                + self._why_refused(ssl, ssl_server_hostname),
                hint="start it with `motoko server start`, check the address, or for TLS set "
                "MOTOKO_TLS_CA, MOTOKO_TLS_CERT and MOTOKO_TLS_KEY to a certificate the server's CA signed",
            ) from None
        self.db = _open_db(storage, cache_size)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(transaction_manager=self.tm)
        #: Run changes made outside transact(), replayed after a conflict.
        self.journal = Journal(self)
        self.conn.motoko_journal = self.journal
        #: The change feed's commit count when this connection last began a transaction.
        self._seen_commits = 0
        self._check_version()

    # -- life cycle -------------------------------------------------------------

    def _why_refused(self, context: Any, hostname: str | None) -> str:
        """ZEO only times out on a refused TLS client; find out why ourselves."""
        if not self.address.is_tcp or self.address.host is None or self.address.port is None:
            return ""
        reason = probe(self.address.host.strip("[]"), self.address.port, context, hostname)
        return f": {reason}" if reason else ""

    def _check_version(self) -> None:
        root = self.conn.root()
        version = root.get("motoko_version")
        if version is None:

            def init() -> None:
                root = self.conn.root()
                if root.get("motoko_version") is None:
                    root["motoko_version"] = SCHEMA_VERSION
                    root["motoko_studies"] = OOBTree()

            self.transact(init, what="initialise the database")
        elif isinstance(version, int) and version < SCHEMA_VERSION:

            def upgrade() -> list[str]:
                return migrate(self.conn.root())

            for line in self.transact(upgrade, what="migrate the database", fresh=True):
                log.warning("migrated %s to schema version %d: %s", self.address, SCHEMA_VERSION, line)
        elif version != SCHEMA_VERSION:
            raise DatabaseError(
                f"the database at {self.address} has schema version {version}; "
                f"this motoko reads version {SCHEMA_VERSION}",
                hint="use the motoko release that created it, or export and re-import the studies",
            )

    def close(self) -> None:
        """Abort anything uncommitted and close the connection."""
        with contextlib.suppress(Exception):
            self.tm.abort()
        with contextlib.suppress(Exception):
            self.conn.close()
        if not getattr(self, "_sibling", False):  # a sibling leaves the shared client open
            self.db.close()

    def sibling(self) -> StudyDB:
        """Another connection through this one's database client, for another thread.

        One ZEO client per process instead of two: the sibling's commits
        reach this connection's readers in-process (no server echo, see
        :mod:`motoko.study.feed`) and the objects they changed are read from
        the shared client cache. An embedded launcher uses one, so that it
        hears of its workflow's runs, and its workflow of their outcomes,
        without waiting for the server. Closing the sibling leaves this
        connection open; close the sibling first.
        """
        other = object.__new__(StudyDB)
        other.address, other.feed, other.db = self.address, self.feed, self.db
        other.reconnect_timeout = self.reconnect_timeout  # MOTOKO_SERVER_WAIT holds for it too
        other.tm = transaction.TransactionManager()
        other.conn = other.db.open(transaction_manager=other.tm)
        other.journal = Journal(other)
        other.conn.motoko_journal = other.journal
        other._sibling = True
        return other

    def __enter__(self) -> StudyDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------

    def transact(
        self,
        change: Callable[[], T],
        *,
        attempts: int = 20,
        what: str = "change",
        fresh: bool = False,
        on_conflict: Callable[[], None] | None = None,
    ) -> T:
        """Run ``change`` and commit it as one transaction, retrying conflicts.

        ``change`` must be safe to run again: after a conflict everything it
        did is rolled back and it is called anew on fresh data. Anything
        uncommitted before the call is committed with it (run changes are
        replayed from the :attr:`journal` after a conflict), unless ``fresh``
        is True: then pending changes are dropped and ``change`` first sees
        every commit this client has been told of (ZODB fixes a connection's
        view when a transaction begins, so a long-lived connection must begin
        anew to see what changed since).

        ``on_conflict`` is called after each conflict, between the abort and
        the next attempt, in a transaction of its own: a launcher heart-beats
        there, so that a streak of conflicts never makes it look dead.

        Raises:
            ConflictRetriesExhausted: after ``attempts`` conflicts in a row.
            ServerError: if the server stays unreachable.
        """
        if fresh:
            self.begin()
        return commit_with_retries(
            self.tm, self.journal, change, attempts=attempts, what=what,
            on_conflict=on_conflict, wait_reconnect=self._wait_reconnect,
        )

    #: Seconds to wait for a lost server to come back before giving up
    #: (``MOTOKO_SERVER_WAIT`` overrides it for every process of a workflow).
    reconnect_timeout = 120.0

    @property
    def connected(self) -> bool:
        """Whether the server is reachable now (False while ZEO tries to reconnect)."""
        return bool(self.db.storage.is_connected())

    def _wait_reconnect(self, attempt: int) -> None:
        """Wait (bounded) for ZEO to reconnect after the server went away."""
        storage = self.db.storage
        timeout = self.reconnect_timeout
        log.warning("lost the database server at %s; waiting up to %g s for it", self.address, timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if storage.is_connected():
                return
            time.sleep(0.05)
        raise ServerError(
            f"lost the database server at {self.address} for more than {timeout:g} s",
            hint="restart it with `motoko server start`",
        )

    def commit(self, attempts: int = 20) -> None:
        """Commit pending changes (made outside :meth:`transact`).

        After a conflict, or once a lost server is back, the journalled run
        changes (states, fields, free attributes, requeues) are made again on
        fresh data and committed.

        Raises:
            ConflictRetriesExhausted: if another process changed the same
                attribute of the same run meanwhile, ``attempts`` times, or
                if changes that are not journalled met a conflict (they are
                dropped and the error names it).
        """
        commit_with_retries(self.tm, self.journal, attempts=attempts, wait_reconnect=self._wait_reconnect)

    def abort(self) -> None:
        """Drop pending changes and see every commit finished before this call."""
        self.begin()

    def begin(self) -> None:
        """Start a new transaction (dropping pending changes) synced with the server.

        ZODB only asks the server for outstanding invalidations when a
        transaction is *begun* explicitly; after a commit or abort the next
        transaction's view may miss a commit that other processes finished
        microseconds earlier. Beginning explicitly closes that window.
        """
        self.journal.clear()
        self._seen_commits = self.feed.commits_seen
        for attempt in range(3):
            try:
                self.tm.begin()
                return
            except ClientDisconnected:
                self._wait_reconnect(attempt)
        self.tm.begin()

    def catch_up(self) -> bool:
        """Begin anew, with a server round trip only if another process committed since the last one.

        For a connection woken by the change feed (a launcher): when only
        this process committed since it last began (an embedded launcher's
        workflow, through the shared client of :meth:`sibling`), those
        commits are already in the client, and beginning without asking the
        server sees them; a commit of another process, or a reconnect,
        still makes it :meth:`begin` with the round trip. A commit of
        another process whose notice is still on its way is not seen: the
        caller is woken again when it arrives, and a conflicting write is
        refused at commit all the same. Pending changes are dropped, as by
        :meth:`begin`. Returns True when it asked the server.
        """
        if not self.catches_up_locally():
            self.begin()
            return True
        self.journal.clear()
        self.tm.abort()  # ZODB starts the next transaction at the client's latest commit
        return False

    def catches_up_locally(self) -> bool:
        """Whether :meth:`catch_up` would begin without a server round trip (no other process committed since)."""
        return self.feed.commits_seen == self._seen_commits

    def refresh(self) -> None:
        """See what other processes committed since the last transaction.

        Pending changes (e.g. a workflow's ``run.y = ...``) are committed
        first, so nothing is silently dropped; changes to different attributes
        of the same run merge with other processes' changes.

        Raises:
            ConflictRetriesExhausted: see :meth:`commit`.
        """
        if not self.connected:
            self._wait_reconnect(0)  # bounded: ServerError once it is gone for good
        self.commit()
        self._seen_commits = self.feed.commits_seen
        self.tm.begin()

    def sync(self) -> bool:
        """Begin anew if the change feed reported a commit since this connection last began.

        What makes a handle's reads live (``rl.run.state``, ``tm.runs[3]``,
        ``run.to_dict()``) without a server round trip per read: when nothing
        was committed, this is two integer reads. It never commits nor drops
        anything: while the connection holds uncommitted changes of its own,
        or runs inside :meth:`transact`, it does nothing (those changes keep
        the snapshot they were made on until the next commit). Returns True
        when it began a new transaction.
        """
        seen = self.feed.commits_seen
        if seen == self._seen_commits or not self.journal.active:
            return False
        if len(self.journal) or getattr(self.conn, "_registered_objects", None):
            return False
        self.begin()
        return True

    def enable_live_reads(self) -> None:
        """Let runs of this connection sync it when read (``run.to_dict()``, ``run.get_quantity()``).

        Opt-in, for connections one thread owns (a Workflow's): a launcher
        or a server thread decides itself when to begin anew.
        """
        self.conn.motoko_sync = self.sync

    # -- launchers ------------------------------------------------------------------

    def launchers(self) -> OOBTree:
        """Launcher id → :class:`LauncherRecord` (created on first use, in a transaction)."""
        root = self.conn.root()
        tree: OOBTree | None = root.get("motoko_launchers")
        if tree is None:
            tree = root["motoko_launchers"] = OOBTree()
        return tree

    # -- studies -------------------------------------------------------------------

    @property
    def _studies(self) -> OOBTree:
        studies: OOBTree = self.conn.root()["motoko_studies"]
        return studies

    def studies(self) -> list[str]:
        """Return the names of the studies in this database."""
        return list(self._studies.keys())

    def study(self, name: str) -> Study:
        """Return the study called ``name``.

        Raises:
            StudyNotFound: suggesting close names.
        """
        study: Study | None = self._studies.get(name)
        if study is None:
            raise StudyNotFound(name, self.studies(), where=str(self.address))
        return study

    def create_study(self, schema: StudySchema, *, drop: bool = False) -> Study:
        """Create the study described by ``schema``; idempotent.

        If it exists, its stored schema is updated and its runs kept, unless
        ``drop`` is True, in which case it is emptied first (every job and run
        is deleted).
        """

        def change() -> Study:
            studies = self._studies
            existing: Study | None = studies.get(schema.name)
            if existing is not None and not drop:
                if existing.schema_data != schema.to_dict():
                    _check_types_kept(existing, schema)
                    existing.set_schema(schema)
                return existing
            study = Study(schema)
            studies[schema.name] = study
            return study

        return self.transact(change, what=f"create study {schema.name!r}")

    def check_schema(self, schema: StudySchema) -> None:
        """Refuse, before anything is written, a schema that :meth:`create_study` would refuse.

        Reads only: a study that does not exist yet accepts any schema.

        Raises:
            FieldTypeChanged: a field changed type in a study holding values of it.
        """
        existing = self._studies.get(schema.name)
        if existing is not None and existing.schema_data != schema.to_dict():
            _check_types_kept(existing, schema)

    def drop_study(self, name: str) -> bool:
        """Delete a study and everything in it; False if it did not exist."""

        def change() -> bool:
            if name in self._studies:
                del self._studies[name]
                return True
            return False

        return self.transact(change, what=f"drop study {name!r}")

    # -- runs -------------------------------------------------------------------------

    def insert(
        self,
        study_name: str,
        points: Sequence[dict[str, Any]],
        run_params: dict[str, Any] | None = None,
        *,
        run_name: str | None = None,
        extra: dict[str, Any] | None = None,
        within: Callable[[Study, list[Run]], None] | None = None,
    ) -> list[tuple[Run, Job]]:
        """Insert one run per parameter point, in one transaction.

        Points and run parameters must already be coerced (see
        :func:`motoko.study.space.expand` and ``StudySchema.coerce_run``).
        Existing jobs and runs are reused (see :meth:`Study.add_run`), so the
        call is idempotent. Cost is O(N log N) in the number of runs.
        ``within`` is called with the study and the runs inside the same
        transaction, again on each retry (an embedded launcher claims there).
        """

        def change() -> list[tuple[Run, Job]]:
            study = self.study(study_name)
            # Runs claimed by ``within`` pass through CREATED: its records are stored only if changed in the end.
            with study.net_changes(CREATED) if within is not None else contextlib.nullcontext():
                out = study.add_runs(points, dict(run_params or {}), run_name, dict(extra or {}))
                if within is not None:
                    within(study, [run for run, _ in out])
            return out

        with _collector_paused():
            return self.transact(change, what=f"insert runs into {study_name!r}")

    def run(self, study_name: str, run_id: int) -> Run:
        """Return one run by id.

        Raises:
            RunNotFound: if the study has no such run.
        """
        run: Run | None = self.study(study_name).runs.get(int(run_id))
        if run is None:
            raise RunNotFound(study_name, [int(run_id)])
        return run

    def pack(self, days: float = 0.0) -> None:
        """Drop old object revisions and unreachable objects (reclaims disk space)."""
        self.db.pack(days=days)

    def select(self, study_name: str, constraints: Any = None) -> list[Run]:
        """Return the runs of a study matching constraints, in id order.

        ``constraints`` is a constraint string, a list of them (AND-ed), or an
        already parsed :class:`~motoko.study.query.Query`. Indexed conditions
        (state, run_name, id, job parameters) narrow the candidates first;
        the rest are checked run by run.
        """
        return select_runs(self.study(study_name), constraints)


def _check_types_kept(study: Study, schema: StudySchema) -> None:
    """Refuse a new schema that changes the type of a field the study holds values of."""
    if not study.jobs:
        return  # nothing stored yet: any type goes
    stored = study.schema_data
    for section, fields in (("job", schema.job_fields), ("run", schema.run_fields)):
        for name, ftype in fields.items():
            old = stored.get(f"{section}_fields", {}).get(name)
            if old is not None and old != ftype.name:
                raise FieldTypeChanged(schema.name, section, name, old, ftype.name, where=schema.source)

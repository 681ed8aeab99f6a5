"""The study database: studies, jobs, runs and their indexes in ZODB.

Layout of the ZODB root::

    root["motoko_version"]   schema version of this database (checked on open)
    root["motoko_studies"]   OOBTree: study name → Study

A :class:`Study` holds its jobs and runs in BTrees and keeps indexes that make
the common questions cheap: "which runs are CREATED" (launchers), "which
runs belong to this run_name" (workflows), "does a job with these parameters
exist" (dedupe), "which jobs have x > 2" (selection). The indexes are updated
in the same transaction as the change they describe, by the methods of
:class:`Study` and nowhere else.

Ids come from counters that deliberately have no conflict resolution: two
processes inserting at once conflict on the counter, one retries, and ids stay
unique.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import persistent
import transaction
import ZODB
from BTrees.IIBTree import IITreeSet
from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOBTree, OOTreeSet
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

from motoko.errors import (
    ConflictRetriesExhausted,
    DatabaseError,
    RunNotFound,
    ServerError,
    StudyNotFound,
    TransitionError,
)
from motoko.study.feed import ChangeFeed, FeedStorage
from motoko.study.records import (
    CREATED,
    FAILURE,
    LAUNCHED,
    RUNNING,
    STATES,
    TERMINAL,
    TRANSITIONS,
    Job,
    Run,
    now,
)
from motoko.study.schema import StudySchema
from motoko.study.server import Address, parse_address

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Version of the layout above; a database of another version is refused.
SCHEMA_VERSION = 1


class Counter(persistent.Persistent):
    """A monotonic id counter; concurrent increments conflict on purpose."""

    def __init__(self) -> None:
        self.value = 0

    def take(self, n: int = 1) -> int:
        """Reserve ``n`` ids and return the first."""
        first = self.value + 1
        self.value += n
        return first


class LauncherRecord(persistent.Persistent):
    """A launcher's liveness, shared by every process (``root["motoko_launchers"]``).

    Each launcher writes only its own record, so heartbeats never conflict.
    Lost-run detection trusts the newest of a run's own heartbeat and its
    launcher's, which keeps a busy launcher's runs from being declared lost
    when one run's heartbeat write lost a conflict.
    """

    def __init__(self, launcher_id: str, machine_name: str, pid: int, executor: str, studies: list[str]):
        self.id = launcher_id
        self.machine_name = machine_name
        self.pid = pid
        self.executor = executor
        self.studies = list(studies)
        self.started = now()
        self.heartbeat = self.started
        self.stopped: Any = None


def canonical(values: Mapping[str, Any]) -> str:
    """Return a stable text key for a parameter mapping (used for dedupe).

    Keys are sorted and floats keep their exact repr, so ``{x: 1.0}`` has
    one key whatever the insertion order.
    """
    return json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))


def _indexable(value: Any) -> bool:
    if value is None or isinstance(value, list | dict):
        return False
    return not (isinstance(value, float) and math.isnan(value))


class Study(persistent.Persistent):
    """A study's jobs, runs and indexes; the one place where run states change."""

    def __init__(self, schema: StudySchema):
        self.name = schema.name
        self.schema_data = schema.to_dict()
        self.jobs: IOBTree = IOBTree()
        self.runs: IOBTree = IOBTree()
        self.job_keys: OOBTree = OOBTree()  # canonical(params) → job id
        self.run_keys: OOBTree = OOBTree()  # job id, run params, run_name → run id
        self.by_state: OOBTree = OOBTree()  # state → IITreeSet(run ids)
        self.by_run_name: OOBTree = OOBTree()  # run_name → IITreeSet(run ids)
        # Indexes keyed per job keep their values inline (tuples in buckets)
        # rather than one persistent set per key: a cold range query then
        # loads a few buckets instead of one object per matching value.
        self.job_runs: IOBTree = IOBTree()  # job id → tuple(run ids)
        self.job_values: OOBTree = OOBTree()  # field → OOTreeSet((value, job id))
        self.job_counter = Counter()
        self.run_counter = Counter()

    # -- schema -------------------------------------------------------------

    @property
    def schema(self) -> StudySchema:
        """The study's schema as stored when it was created."""
        cached: StudySchema | None = getattr(self, "_v_schema", None)
        if cached is None:
            cached = StudySchema.from_dict(self.schema_data)
            self._v_schema = cached
        return cached

    def set_schema(self, schema: StudySchema) -> None:
        """Store a new schema (the study's bd.yaml changed)."""
        self.schema_data = schema.to_dict()
        self._v_schema = schema

    # -- inserting ------------------------------------------------------------

    def add_job(self, params: dict[str, Any]) -> Job:
        """Return the job with these (coerced) parameters, creating it if new."""
        key = canonical(params)
        jid = self.job_keys.get(key)
        if jid is not None:
            job: Job = self.jobs[jid]
            return job
        jid = self.job_counter.take()
        job = Job(jid, params)
        self.jobs[jid] = job
        self.job_keys[key] = jid
        for field, value in params.items():
            if _indexable(value):
                values = self.job_values.get(field)
                if values is None:
                    values = self.job_values[field] = OOTreeSet()
                values.insert((value, jid))
        return job

    def add_run(
        self, job: Job, run_params: dict[str, Any], run_name: str | None, extra: dict[str, Any]
    ) -> tuple[Run, bool]:
        """Return ``(run, created)`` for this job, run parameters and run name.

        An existing run with the same job, run parameters and run name is
        returned unchanged (``created`` False): createTask is idempotent.
        """
        key = f"{job.id}\x00{canonical(run_params)}\x00{run_name or ''}"
        rid = self.run_keys.get(key)
        if rid is not None:
            return self.runs[rid], False
        rid = self.run_counter.take()
        run = Run(self, rid, job.id, {**run_params, "run_name": run_name, **extra})
        run._key = key
        self.runs[rid] = run
        self.run_keys[key] = rid
        _add(self.by_state, CREATED, rid)
        if run_name is not None:
            _add(self.by_run_name, run_name, rid)
        self.job_runs[job.id] = (*self.job_runs.get(job.id, ()), rid)
        return run, True

    # -- state changes ----------------------------------------------------------

    def transition(self, run: Run, new: str, **fields: Any) -> None:
        """Change ``run``'s state, its timestamps and the state index, atomically.

        This is the only function that writes a run's stored state. User states
        (any string that is not a motoko state) may be entered from and left to
        any state. Entering a state in the study's ``retry_on`` list requeues
        the run while attempts remain (the ended attempt goes to ``history``).

        Raises:
            TransitionError: for a transition the life cycle does not allow,
                e.g. FINISHED → RUNNING.
        """
        old = run._state
        new = str(new)
        if not new:
            raise TransitionError("a run state cannot be empty", hint="use e.g. 'FINISHED'")
        if new == old:
            for name, value in fields.items():
                setattr(run, name, value)
            return
        if old in TRANSITIONS and new in TRANSITIONS and new not in TRANSITIONS[old]:
            hint = "use run.requeue() to run it again" if new == CREATED else None
            raise TransitionError(
                f"run {self.name}.{run.id} cannot go from {old} to {new}",
                hint=hint or f"allowed from {old}: {', '.join(sorted(TRANSITIONS[old])) or 'none'}",
            )
        _move(self.by_state, old, new, run.id)
        run._state = new
        stamp = now()
        if new == LAUNCHED:
            run.launched = stamp
        elif new == RUNNING:
            run.started = stamp
        elif new in TERMINAL:
            run.finished = stamp
        for name, value in fields.items():
            setattr(run, name, value)
        if new in FAILURE and new != "CANCELLED" and self._may_retry(run, new):
            self.requeue(run, f"retry after {new}")

    def _may_retry(self, run: Run, state: str) -> bool:
        schema = self.schema
        return state in schema.retry_on and run.attempt <= schema.retries

    def requeue(self, run: Run, reason: str = "requeued") -> None:
        """Put an ended run back to CREATED for another attempt, keeping history."""
        if run._state == CREATED:
            return
        if run._state in (LAUNCHED, RUNNING):
            raise TransitionError(
                f"run {self.name}.{run.id} is {run._state} and cannot be requeued",
                hint="cancel it first (motoko cancel)",
            )
        attempt = {
            "attempt": run.attempt,
            "state": run._state,
            "exit_code": run.exit_code,
            "error": run.error,
            "launched": run.launched,
            "started": run.started,
            "finished": run.finished,
            "machine_name": run.machine_name,
            "reason": reason,
        }
        run.history = (*run.history, attempt)
        run.attempt = run.attempt + 1
        _move(self.by_state, run._state, CREATED, run.id)
        run._state = CREATED
        for name in ("launched", "started", "finished", "exit_code", "error", "launcher"):
            setattr(run, name, None)
        run.stop_requested = False

    def delete(self, run: Run) -> None:
        """Remove a run and its index entries (its job stays, for dedupe)."""
        rid = run.id
        for index, key in ((self.by_state, run._state), (self.by_run_name, run.run_name)):
            ids = index.get(key) if key is not None else None
            if ids is not None and rid in ids:
                ids.remove(rid)
        remaining = tuple(r for r in self.job_runs.get(run.job_id, ()) if r != rid)
        if remaining:
            self.job_runs[run.job_id] = remaining
        elif run.job_id in self.job_runs:
            del self.job_runs[run.job_id]
        key = getattr(run, "_key", None)
        if key is not None and self.run_keys.get(key) == rid:
            del self.run_keys[key]
        del self.runs[rid]

    def cancel(self, run: Run) -> bool:
        """Cancel a run: CREATED ends CANCELLED at once; a launched one is asked to stop.

        Its launcher then terminates the process (TERM, then KILL after a
        grace period) and settles it CANCELLED. Returns False for a run that
        already ended (cancelling it again is harmless).
        """
        if run._state == CREATED:
            self.transition(run, "CANCELLED", error="cancelled before it started")
            return True
        if run._state in (LAUNCHED, RUNNING):
            if not run.stop_requested:
                run.stop_requested = True
            return True
        return False

    # -- reading ---------------------------------------------------------------

    def ids_in_state(self, state: str) -> IITreeSet:
        """Return the ids of the runs in ``state`` (an empty set if none)."""
        return self.by_state.get(state) or IITreeSet()

    def counts(self) -> dict[str, int]:
        """Return the number of runs per state (states with runs only)."""
        return {state: len(ids) for state, ids in self.by_state.items() if len(ids)}

    def runs_of_jobs(self, job_ids: Iterable[int]) -> IITreeSet:
        """Return the ids of every run of the given jobs."""
        job_runs = self.job_runs
        return IITreeSet([rid for j in job_ids for rid in job_runs.get(j, ())])

    def check_indexes(self) -> list[str]:
        """Return inconsistencies between runs and the state index (none expected)."""
        problems: list[str] = []
        seen: dict[int, str] = {}
        for state, ids in self.by_state.items():
            for rid in ids:
                if rid in seen:
                    problems.append(f"run {rid} indexed as {seen[rid]} and {state}")
                seen[rid] = state
        for rid, run in self.runs.items():
            if seen.get(rid) != run._state:
                problems.append(f"run {rid} is {run._state} but indexed as {seen.get(rid)}")
        return problems


def _add(index: Any, key: Any, rid: int) -> None:
    ids = index.get(key)
    if ids is None:
        ids = index[key] = IITreeSet()
    ids.insert(rid)


def _move(index: OOBTree, old: str, new: str, rid: int) -> None:
    ids = index.get(old)
    if ids is not None:
        ids.remove(rid) if rid in ids else None
    _add(index, new, rid)


def known_states(study: Study) -> list[str]:
    """Return motoko's states plus every user state present in ``study``."""
    return sorted(set(STATES) | set(study.by_state.keys()))


def expand_ids(ids: Sequence[int] | IITreeSet) -> list[int]:
    """Return a plain list of ids (BTrees sets iterate lazily)."""
    return list(ids)


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

    def __init__(
        self,
        address: Address | str,
        *,
        wait_timeout: float = 10.0,
        cache_size: int = 200_000,
        ssl: Any = None,
        ssl_server_hostname: str | None = None,
    ):
        self.address = address if isinstance(address, Address) else parse_address(address)
        self.feed = ChangeFeed()
        if ssl is None and self.address.tls is not None:
            from motoko.study.tls import client_context

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
        self._check_version()

    # -- life cycle -------------------------------------------------------------

    def _why_refused(self, context: Any, hostname: str | None) -> str:
        """ZEO only times out on a refused TLS client; find out why ourselves."""
        if not self.address.is_tcp or self.address.host is None or self.address.port is None:
            return ""
        from motoko.study.tls import probe

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
        self.db.close()

    def __enter__(self) -> StudyDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------

    def transact(
        self, change: Callable[[], T], *, attempts: int = 20, what: str = "change", fresh: bool = False
    ) -> T:
        """Run ``change`` and commit it as one transaction, retrying conflicts.

        ``change`` must be safe to run again: after a conflict everything it
        did is rolled back and it is called anew on fresh data. Anything
        uncommitted before the call is committed with it, unless ``fresh`` is
        True: then pending changes are dropped and ``change`` first sees every
        commit this client has been told of (ZODB fixes a connection's view
        when a transaction begins, so a long-lived connection must begin anew
        to see what changed since).

        Raises:
            ConflictRetriesExhausted: after ``attempts`` conflicts in a row.
            ServerError: if the server stays unreachable.
        """
        delay = 0.002
        if fresh:
            self.begin()
        for attempt in range(attempts):
            try:
                result = change()
                self.tm.commit()
                return result
            except ConflictError:
                self.tm.abort()
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
            except ClientDisconnected:
                self.tm.abort()
                self._wait_reconnect(attempt)
            except BaseException:
                self.tm.abort()
                raise
        raise ConflictRetriesExhausted(
            f"could not {what}: other processes kept changing the same records ({attempts} attempts)",
            hint="try again; if it persists, fewer concurrent writers on the same runs help",
        )

    #: Seconds to wait for a lost server to come back before giving up.
    reconnect_timeout = 120.0

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

    def commit(self) -> None:
        """Commit pending changes (made outside :meth:`transact`)."""
        self.tm.commit()

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
        for attempt in range(3):
            try:
                self.tm.begin()
                return
            except ClientDisconnected:
                self._wait_reconnect(attempt)
        self.tm.begin()

    def refresh(self) -> None:
        """See what other processes committed since the last transaction.

        Pending changes (e.g. a workflow's ``run.y = ...``) are committed
        first, so nothing is silently dropped; changes to different attributes
        of the same run merge with other processes' changes.

        Raises:
            ConflictRetriesExhausted: if another process changed the same
                attribute of the same run meanwhile (the pending change is
                dropped and the error names it).
        """
        try:
            self.tm.commit()
            self.tm.begin()
        except ConflictError as exc:
            self.tm.abort()
            raise ConflictRetriesExhausted(
                f"a change could not be saved because another process changed the same value: {exc}",
                hint="change runs in fewer places at once, or inside db.transact() which retries",
            ) from None
        except ClientDisconnected:
            self.tm.abort()
            raise

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
                    existing.set_schema(schema)
                return existing
            study = Study(schema)
            studies[schema.name] = study
            return study

        return self.transact(change, what=f"create study {schema.name!r}")

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
    ) -> list[tuple[Run, Job]]:
        """Insert one run per parameter point, in one transaction.

        Points and run parameters must already be coerced (see
        :func:`motoko.study.space.expand` and ``StudySchema.coerce_run``).
        Existing jobs and runs are reused (see :meth:`Study.add_run`), so the
        call is idempotent. Cost is O(N log N) in the number of runs.
        """

        def change() -> list[tuple[Run, Job]]:
            study = self.study(study_name)
            out = []
            for params in points:
                job = study.add_job(params)
                run, _ = study.add_run(job, dict(run_params or {}), run_name, dict(extra or {}))
                out.append((run, job))
            return out

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
        from motoko.study.planner import select_runs

        return select_runs(self, self.study(study_name), constraints)

"""A study's persistent container: jobs, runs, their indexes, and state changes.

Layout of the ZODB root::

    root["motoko_version"]    schema version of this database (checked on open)
    root["motoko_studies"]    OOBTree: study name → Study
    root["motoko_launchers"]  OOBTree: launcher id → LauncherRecord

A :class:`Study` holds its jobs and runs in BTrees and keeps indexes that make
the common questions cheap: "which runs are CREATED" (launchers), "which
runs belong to this run_name" (workflows), "does a job with these parameters
exist" (dedupe), "which jobs have x > 2" (selection). The indexes are updated
in the same transaction as the change they describe, by the methods of
:class:`Study` and nowhere else; the one exception is the *columns* of run
attributes ("which runs have score > 0", see :mod:`motoko.study.columns`),
which a run writes itself whenever one of its attributes is assigned.

Ids come from counters that deliberately have no conflict resolution: two
processes inserting at once conflict on the counter, one retries, and ids stay
unique.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import persistent
from BTrees.IIBTree import IITreeSet
from BTrees.IOBTree import IOBTree
from BTrees.Length import Length
from BTrees.OOBTree import OOBTree, OOTreeSet
from ZODB.utils import z64

from motoko.errors import TransitionError
from motoko.study.columns import check as check_columns
from motoko.study.columns import forget, record
from motoko.study.outdated_counts import check as check_outdated_counts
from motoko.study.outdated_counts import key_before, new_counts, prepare, recount
from motoko.study.prefetch import prefetch_buckets
from motoko.study.records import MOTOKO_ATTRIBUTES, Job, Run, now
from motoko.study.retry import scaled_options
from motoko.study.run_index import RunIndex
from motoko.study.schema import StudySchema
from motoko.study.states import (
    ACTIVE,
    CANCELLED,
    CREATED,
    FAILURE,
    LAUNCHED,
    RUNNING,
    STATES,
    TERMINAL,
    TRANSITIONS,
    allowed,
)

#: Version of the layout above. Older versions are migrated when opened
#: (see :func:`migrate`); a newer one is refused.
SCHEMA_VERSION = 3


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

    #: What the launcher's executor wants the user to know now (e.g. sbatch
    #: refusing jobs for a while), or None; ``motoko status`` shows it.
    note: str | None = None

    def __init__(self, launcher_id: str, machine_name: str, pid: int, executor: str, studies: list[str]):
        self.id = launcher_id
        self.machine_name = machine_name
        self.pid = pid
        self.executor = executor
        self.studies = list(studies)
        self.started = now()
        self.heartbeat = self.started
        self.stopped: Any = None

    # Class-level defaults: records written before these existed read as such.
    #: Runs this launcher executed (settled).
    executed = 0
    #: Cycles it retried after a conflict with another launcher.
    conflicts = 0
    #: Cycles it ran (woken by runs arriving or ending, a poll...): written with heartbeats and at stop.
    cycles = 0
    #: The SLURM job id when the launcher is a pilot.
    pilot_job: str | None = None
    #: When a pilot's allocation ends (seconds since the epoch).
    walltime_end: float | None = None


def canonical(values: Mapping[str, Any]) -> str:
    """Return a stable text key for a parameter mapping (used for dedupe).

    Keys are sorted and floats keep their exact repr, so ``{x: 1.0}`` has
    one key whatever the insertion order.
    """
    return _CANONICAL.encode(values)


#: One encoder for every key: ``json.dumps`` with options builds a new one per
#: call (~4 of its ~6 µs), twice per inserted run.
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str, separators=(",", ":"))


def run_key(job_id: int, run_params: Mapping[str, Any], run_name: str | None, params_key: str | None = None) -> str:
    """The dedupe key of a run: its job, run parameters (``params_key``: their canonical text) and run name."""
    return f"{job_id}\x00{canonical(run_params) if params_key is None else params_key}\x00{run_name or ''}"


def _indexable(value: Any) -> bool:
    if value is None or isinstance(value, list | dict):
        return False
    return not (isinstance(value, float) and math.isnan(value))


class Study(persistent.Persistent):
    """A study's jobs, runs and indexes; the one place where run states change."""

    #: Runs that became CREATED, ever (inserted or queued again), as other processes
    #: saw them: a run claimed in the transaction that inserted it is not counted.
    #: It only grows from one commit to the next.
    #: A launcher that found nothing to claim wakes only for a commit that
    #: changes it. None in studies created before it existed (every commit wakes).
    arrivals: Length | None = None
    #: (run name, digest, kept for) → Length: see motoko.study.outdated_counts.
    #: None in studies created before it existed (their outdated check reads the runs).
    outdated_counts: OOBTree | None = None

    def __init__(self, schema: StudySchema):
        self.name = schema.name
        self.schema_data = schema.to_dict()
        self.jobs: IOBTree = IOBTree()
        self.runs: IOBTree = IOBTree()
        self.job_keys: OOBTree = OOBTree()  # canonical(params) → job id
        self.run_keys: OOBTree = OOBTree()  # job id, run params, run_name → run id
        # state / run_name → IOBTree(run id → Run). The runs themselves sit in
        # the index (as references), so "the FINISHED runs" loads a few index
        # buckets, not one bucket of ``runs`` per run scattered over the study.
        self.by_state: OOBTree = OOBTree()
        self.by_run_name: OOBTree = OOBTree()
        # state → Length: runs per state without walking the index. Lengths
        # merge concurrent changes (they add up), so counting never conflicts.
        self.state_counts: OOBTree = _state_counts()
        self.arrivals = Length()
        # Indexes keyed per job keep their values inline (tuples in buckets)
        # rather than one persistent set per key: a cold range query then
        # loads a few buckets instead of one object per matching value.
        self.job_runs: IOBTree = IOBTree()  # job id → tuple(run ids)
        self.job_values: OOBTree = OOBTree()  # field → OOTreeSet((value, job id))
        # run attribute → IOBTree(page → ColumnPage): see motoko.study.columns.
        self.columns: OOBTree = OOBTree()
        self.outdated_counts = new_counts()
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
        return self._add_job(params, canonical(params))

    def _add_job(self, params: dict[str, Any], key: str) -> Job:
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
        key = run_key(job.id, run_params, run_name)
        rid = self.run_keys.get(key)
        if rid is not None:
            return self.runs[rid], False
        rid = self.run_counter.take()
        run = Run(self, rid, job.id, {**run_params, "run_name": run_name, **extra})
        run._key = key
        prepare(self, run)
        self.runs[rid] = run
        self.run_keys[key] = rid
        _add(self.by_state, CREATED, run)
        self._count(CREATED, 1)
        if run_name is not None:
            _add(self.by_run_name, run_name, run)
        self.job_runs[job.id] = (*self.job_runs.get(job.id, ()), rid)
        return run, True

    def add_runs(
        self, points: Sequence[dict[str, Any]], run_params: dict[str, Any], run_name: str | None, extra: dict[str, Any]
    ) -> list[tuple[Run, Job]]:
        """:meth:`add_job` and :meth:`add_run` for many points, with the dedupe indexes fetched in batches.

        A job's dedupe key (its canonical parameters) lands anywhere in
        ``job_keys``: in a big study, each new job of an insert reads another
        bucket, one server round trip each once they left the cache. The
        buckets that the keys fall in are requested at once first, then
        those of ``run_keys``. Same ids and results as one point at a time.
        """
        keys = [canonical(params) for params in points]
        prefetch_buckets(self.job_keys, keys=sorted(set(keys)))
        jobs = [self._add_job(params, key) for params, key in zip(points, keys, strict=True)]
        params_key = canonical(run_params)
        prefetch_buckets(self.run_keys, keys=sorted({run_key(job.id, run_params, run_name, params_key) for job in jobs}))
        return [(self.add_run(job, dict(run_params), run_name, dict(extra))[0], job) for job in jobs]

    def existing_run(self, params: dict[str, Any], run_params: dict[str, Any], run_name: str | None) -> Run | None:
        """The run :meth:`add_job` and :meth:`add_run` would return, or None; writes nothing."""
        jid = self.job_keys.get(canonical(params))
        if jid is None:
            return None
        rid = self.run_keys.get(run_key(jid, run_params, run_name))
        return self.runs.get(rid) if rid is not None else None

    # -- state changes ----------------------------------------------------------

    def transition(self, run: Run, new: str, *, through: str | None = None, **fields: Any) -> None:
        """Change ``run``'s state, its timestamps and the state index, atomically.

        This is the only function that writes a run's stored state. User states
        (any string that is not a motoko state) may be entered from and left to
        any state. Entering a state in the study's ``retry_on`` list requeues
        the run while attempts remain (the ended attempt goes to ``history``).

        Args:
            through: A state the run passed through on its way to ``new``
                since the last commit, e.g. RUNNING for a short run whose
                start and end one launcher cycle records. Both moves are
                checked and stamped as if made one after the other, but the
                state index and the counters see only the net move. Why:
                the two moves rewrote the RUNNING index and counter for
                nothing, two more objects in every such commit, which every
                other launcher then loaded again and the server merged with
                their own commits of that moment.

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
        via = old if through is None or through in (old, new) else str(through)
        self._check(run, old, via)
        self._check(run, via, new)
        self._set_state(run, new)
        stamp = now()
        if via != old:
            _stamp(run, via, stamp)
        _stamp(run, new, stamp)
        for name, value in fields.items():
            setattr(run, name, value)
        if new in FAILURE and new != CANCELLED and self._may_retry(run, new):
            rule = self.schema.retry_rules.get(run.failure or "") if new == "FAILED" else None
            if rule is None:
                self.requeue(run, f"retry after {new}")
                return
            # Retry with the resource that ran out scaled (see motoko.study.retry).
            before = list(getattr(run, "slurm_options", None) or ())
            added = scaled_options([*self.schema.slurm_options, *before], rule)
            self.requeue(run, f"retry after {new} ({run.failure})")
            run.slurm_options = [*before, *added]

    def _check(self, run: Run, old: str, new: str) -> None:
        """Raise TransitionError unless the life cycle lets ``run`` go from ``old`` to ``new``."""
        if old == new or allowed(old, new):
            return
        hint = "use run.requeue() to run it again" if new == CREATED else None
        raise TransitionError(
            f"run {self.name}.{run.id} cannot go from {old} to {new}",
            hint=hint or f"allowed from {old}: {', '.join(sorted(TRANSITIONS[old])) or 'none'}",
        )

    def _may_retry(self, run: Run, state: str) -> bool:
        schema = self.schema
        if run.attempt > schema.retries:
            return False
        return state in schema.retry_on or (state == "FAILED" and (run.failure or "") in schema.retry_rules)

    def give_back(self, run: Run) -> None:
        """Return a claimed run that never started to CREATED, as if it had never been claimed.

        Unlike :meth:`requeue`, no attempt is recorded: nothing ran. The
        claim's marks (launcher, machine, run directory, launch time,
        heartbeat) are removed, and the arrivals counter wakes the
        launchers waiting for runs. Why: a launcher alone claims deep
        ahead, and when others join, the runs it queued would wait behind
        its own slots while theirs stay idle (see
        :mod:`motoko.launch.claims`).

        Raises:
            TransitionError: the run is not LAUNCHED (it started, ended, or was never claimed).
        """
        if run._state != LAUNCHED:
            raise TransitionError(
                f"run {self.name}.{run.id} is {run._state}: only a LAUNCHED run that never started can be given back",
                hint="a started run ends, or is cancelled with run.cancel()",
            )
        self._set_state(run, CREATED)
        for name in _CLAIM_MARKS:
            if name in run.__dict__:
                delattr(run, name)

    def requeue(self, run: Run, reason: str = "requeued", *, keep_results: bool = False) -> None:
        """Put an ended run back to CREATED for another attempt, keeping history.

        With ``keep_results`` (a rerun of a finished run), the ended attempt's
        results (free attributes and ``output``) and ``fingerprint`` move to
        its entry in ``run.history``: the new attempt starts without them, and
        :meth:`restore` can bring them back.
        """
        if run._state == CREATED:
            return
        if run._state in ACTIVE:
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
            "failure": run.failure,
            # Each attempt's own options: a retry rule may have changed them.
            "slurm_options": [*self.schema.slurm_options, *(getattr(run, "slurm_options", None) or ())],
        }
        if keep_results:
            results = results_of(run)
            attempt["results"] = results
            attempt["fingerprint"] = run.fingerprint
            # The new attempt starts clean: a stale value must not pass for its result.
            for name in results:
                if name != "output":
                    delattr(run, name)
            run.output = None
        run.history = (*run.history, attempt)
        run.attempt = run.attempt + 1
        self._set_state(run, CREATED)
        for name in ("launched", "started", "finished", "exit_code", "error", "launcher", "failure"):
            setattr(run, name, None)
        run.stop_requested = False

    def restore(self, run: Run) -> None:
        """Undo the last requeue of a run whose new attempt has not started.

        The run gets back the state, attempt, timestamps and (when the
        requeue kept them) results and fingerprint of its previous attempt,
        whose entry leaves ``run.history``.

        Raises:
            TransitionError: the run is not CREATED (its new attempt started)
                or has no previous attempt.
        """
        if run._state != CREATED or not run.history:
            raise TransitionError(
                f"run {self.name}.{run.id} cannot be restored: it is {run._state}"
                + ("" if run.history else " and has no previous attempt"),
                hint="only a requeued run whose new attempt has not started can be restored",
            )
        previous = dict(run.history[-1])
        run.history = tuple(run.history[:-1])
        run.attempt = int(previous["attempt"])
        self._set_state(run, previous["state"])
        for name in ("launched", "started", "finished", "exit_code", "error", "machine_name"):
            setattr(run, name, previous.get(name))
        if "fingerprint" in previous:
            run.fingerprint = previous["fingerprint"]
        for name, value in (previous.get("results") or {}).items():
            setattr(run, name, value)

    def delete(self, run: Run) -> None:
        """Remove a run and its index entries (its job stays, for dedupe)."""
        rid = run.id
        recount(self, _Gone(run), key_before(self, run))
        for index, key in ((self.by_state, run._state), (self.by_run_name, run.run_name)):
            runs = index.get(key) if key is not None else None
            if runs is not None and runs.pop(rid, None) is not None and index is self.by_state:
                self._count(str(key), -1)
        remaining = tuple(r for r in self.job_runs.get(run.job_id, ()) if r != rid)
        if remaining:
            self.job_runs[run.job_id] = remaining
        elif run.job_id in self.job_runs:
            del self.job_runs[run.job_id]
        key = getattr(run, "_key", None)
        if key is not None and self.run_keys.get(key) == rid:
            del self.run_keys[key]
        forget(self.columns, rid, [name for name in run.__dict__ if not name.startswith("_")])
        del self.runs[rid]

    def cancel(self, run: Run) -> bool:
        """Cancel a run: CREATED ends CANCELLED at once; a launched one is asked to stop.

        Its launcher gives it a grace period to stop on its own, then sends
        TERM, then KILL, and settles it CANCELLED. Returns False for a run that
        already ended (cancelling it again is harmless).
        """
        if run._state == CREATED:
            self.transition(run, "CANCELLED", error="cancelled before it started")
            return True
        if run._state in ACTIVE:
            if not run.stop_requested:
                run.stop_requested = True
            return True
        return False

    # -- reading ---------------------------------------------------------------

    def ids_in_state(self, state: str) -> IOBTree:
        """Return the runs in ``state``: a BTree run id → run (empty if none).

        Iterating it, ``len``, ``in`` and ``keys(min=…)`` work on run ids, as
        on a set of ids; ``values()`` gives the runs without touching ``runs``.
        """
        runs: IOBTree | None = self.by_state.get(state)
        return runs if runs is not None else IOBTree()

    def counts(self) -> dict[str, int]:
        """Return the number of runs per state (states with runs only).

        Read from the per-state counters: a handful of small objects, whatever
        the study's size.
        """
        return {state: value for state, length in self.state_counts.items() if (value := length()) > 0}

    def count(self, state: str) -> int:
        """The number of runs in ``state`` (0 for a state without runs)."""
        length = self.state_counts.get(state)
        return int(length()) if length is not None else 0

    def state_records(self) -> list[Any]:
        """The small objects every change of a run's state rewrites: per-state counters and index roots.

        Why: among several launchers each one's commit rewrites these, so
        every other launcher finds them stale at its next cycle and would
        load them one round trip at a time; a cycle asks for them all at
        once first (see :func:`motoko.study.prefetch.prefetch`).
        """
        return [*self.state_counts.values(), *self.by_state.values()]

    def _set_state(self, run: Run, new: str) -> None:
        """Store ``new`` as the run's state, its index entry and the counts with it.

        The one place a stored state is written; callers check the transition.
        """
        old = run._state
        before = key_before(self, run)
        _move(self.by_state, old, new, run)
        self._count(old, -1)
        self._count(new, 1)
        if old == CREATED and run._p_serial == z64 and self.arrivals is not None:
            # Claimed in the very transaction that inserts it (an embedded
            # launcher's insert claim): no other launcher ever saw it CREATED,
            # so none is woken for it.
            self.arrivals.change(-1)
        run._state = new
        recount(self, run, before)

    @contextlib.contextmanager
    def net_changes(self, state: str) -> Iterator[None]:
        """Within the block, ``state``'s index and counter and the arrivals counter are stored only if changed in the end.

        Why: the runs an embedded launcher claims in the transaction that
        inserts them pass through CREATED, whose index and counter, and the
        arrivals counter, were then written back as they were: three of a
        hop's insert commit's sixteen objects, which every other launcher
        loaded again (and the arrivals counter woke them for runs they could
        not take). Only records the transaction had not changed when the
        block starts are watched, and only one changed and back (the same
        state, the same run objects) is left unstored: the server already
        holds exactly that.
        """
        watched: list[tuple[Any, Any]] = []
        for kept in (self.by_state.get(state), self.state_counts.get(state), self.arrivals):
            if kept is None or kept._p_jar is None or kept._p_serial == z64:
                continue  # new in this transaction: stored anyway
            kept._p_activate()
            if kept._p_changed is False:
                watched.append((kept, kept.__getstate__()))
        yield
        for kept, saved in watched:
            if kept._p_changed and kept.__getstate__() == saved:
                kept._p_changed = False

    def _count(self, state: str, delta: int) -> None:
        """Keep the counter of ``state`` exact (only the state-changing methods call it)."""
        length = self.state_counts.get(state)
        if length is None:
            # A user state seen for the first time (motoko's own exist from the start).
            length = self.state_counts[state] = Length()
        length.change(delta)
        if state == CREATED and delta > 0 and self.arrivals is not None:
            self.arrivals.change(delta)

    def runs_of_jobs(self, job_ids: Iterable[int]) -> IITreeSet:
        """Return the ids of every run of the given jobs."""
        job_runs = self.job_runs
        return IITreeSet([rid for j in job_ids for rid in job_runs.get(j, ())])

    def check_indexes(self) -> list[str]:
        """Return inconsistencies between runs and the state and run-name indexes (none expected)."""
        problems: list[str] = []
        for attribute, index in (("_state", self.by_state), ("run_name", self.by_run_name)):
            seen: dict[int, Any] = {}
            label = attribute.strip("_")
            for key, runs in index.items():
                for rid, indexed in runs.items():
                    if indexed is not self.runs.get(rid):
                        problems.append(f"run {rid} in the {label} index under {key} is not the study's run {rid}")
                    if rid in seen:
                        problems.append(f"run {rid} indexed under {label} {seen[rid]} and {key}")
                    seen[rid] = key
            for rid, run in self.runs.items():
                value = getattr(run, attribute)
                if seen.get(rid) != value:
                    problems.append(f"run {rid} has {label} {value} but is indexed under {seen.get(rid)}")
        for state in set(self.by_state.keys()) | set(self.state_counts.keys()):
            indexed = len(self.by_state.get(state, ()))
            if self.count(state) != indexed:
                problems.append(f"state {state} counts {self.count(state)} runs but its index holds {indexed}")
        problems += check_columns(self.columns, self.runs, MOTOKO_ATTRIBUTES)
        problems += check_outdated_counts(self)
        return problems


class _Gone:
    """A deleted run as the outdated counts see it: counted nowhere."""

    _state = CREATED
    run_name = None

    def __init__(self, run: Run):
        self.id = run.id


#: What a launcher's claim writes on a run (see :meth:`Study.give_back`).
_CLAIM_MARKS = ("launcher", "machine_name", "heartbeat", "run_path", "launched", "executor_id")


def _stamp(run: Run, state: str, stamp: Any) -> None:
    """Record when ``run`` entered ``state`` (LAUNCHED, RUNNING or a final state; others have no stamp)."""
    if state == LAUNCHED:
        run.launched = stamp
    elif state == RUNNING:
        run.started = stamp
    elif state in TERMINAL:
        run.finished = stamp


def _add(index: OOBTree, key: Any, run: Run) -> None:
    runs = index.get(key)
    if runs is None:
        runs = index[key] = RunIndex()
    runs[run.id] = run


def _state_counts() -> OOBTree:
    """A counter per motoko state, made up front so that launchers never race to make one."""
    counts = OOBTree()
    for state in STATES:
        counts[state] = Length()
    return counts


def _move(index: OOBTree, old: str, new: str, run: Run) -> None:
    runs = index.get(old)
    if runs is not None:
        runs.pop(run.id, None)
    _add(index, new, run)


def results_of(run: Run) -> dict[str, Any]:
    """A copy of what a run produced: its free attributes and ``output``."""
    run._p_activate()
    found = {name: value for name, value in run.__dict__.items() if not name.startswith("_") and name not in MOTOKO_ATTRIBUTES}
    found["output"] = run.output
    return copy.deepcopy(found)


def known_states(study: Study) -> list[str]:
    """Return motoko's states plus every user state present in ``study``."""
    return sorted(set(STATES) | set(study.by_state.keys()))


def migrate(root: Any) -> list[str]:
    """Bring a database of an older layout to :data:`SCHEMA_VERSION`, in place.

    Must run inside a transaction. Returns what was done, one line per step
    (empty when the database is current). Nothing is dropped: version 1 kept
    the state and run-name indexes as sets of ids; version 2 keeps the runs
    in them, and they are rebuilt from the runs themselves; version 3 keeps
    them in :class:`RunIndex` trees and counts runs per state.
    """
    done: list[str] = []
    version = root.get("motoko_version")
    if version == 1:
        for name, study in root["motoko_studies"].items():
            study.by_state = OOBTree()
            study.by_run_name = OOBTree()
            study.columns = OOBTree()
            for run in study.runs.values():
                _add(study.by_state, run._state, run)
                if run.run_name is not None:
                    _add(study.by_run_name, run.run_name, run)
                for attribute, value in run.__dict__.items():
                    if not attribute.startswith("_") and attribute not in MOTOKO_ATTRIBUTES:
                        record(study.columns, attribute, run.id, value)
            done.append(f"study {name}: state and run-name indexes hold the runs; run attributes have columns")
        root["motoko_version"] = version = 2
    if version == 2:
        for name, study in root["motoko_studies"].items():
            study.state_counts = _state_counts()
            for index in (study.by_state, study.by_run_name):
                for key, runs in list(index.items()):
                    index[key] = RunIndex(runs)
            for state, runs in study.by_state.items():
                study._count(state, len(runs))
            done.append(f"study {name}: runs counted per state; state indexes merge launchers' changes")
        root["motoko_version"] = 3
    return done


def expand_ids(ids: Sequence[int] | IITreeSet) -> list[int]:
    """Return a plain list of ids (BTrees sets iterate lazily)."""
    return list(ids)

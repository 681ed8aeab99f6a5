"""TaskManager: a workflow's handle on one study (createTask, select, runs).

``workflow.mult.createTask(x=[1, 2])`` merges the study's ``job_space`` and
``run_params`` defaults, expands the parameter space, and inserts the runs in
one transaction, recording the workflow's ``run_name``, the step or action
that created them (``event_name``) and the runs they were derived from
(``parents``). It is idempotent: a resumed workflow calling it again gets the
same runs back, already finished or not.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import ParameterError, RunNameMissing, RunNotFound, UnknownNameError
from motoko.flow.compat import RunSelector
from motoko.flow.context import current_event, current_parents
from motoko.flow.handles import RunList, requeue_left_over
from motoko.flow.launcher_watch import watch_for
from motoko.flow.rerun import requeue_pending
from motoko.flow.selection import TaskSelection
from motoko.flow.session import Session
from motoko.study.database import known_states
from motoko.study.display import runs_html
from motoko.study.fingerprint import study_fingerprint
from motoko.study.query import Where
from motoko.study.records import Job, Run
from motoko.study.schema import StudySchema
from motoko.study.space import expand
from motoko.study.sweeps import Together

if TYPE_CHECKING:
    from motoko.study.database import Study, StudyDB

class RunsById(Mapping[int, Run]):
    """Runs of a study by id (``workflow.mult.runs[3]``, as in motoko 0.1.4), and a finder.

    Calling it, ``workflow.mult.runs(last=5, state="FAILED")``, returns the
    newest runs first as a :class:`RunList`.
    """

    def __init__(self, manager: TaskManager):
        self._manager = manager

    def __call__(
        self,
        last: int | None = None,
        state: str | Iterable[str] | None = None,
        run_name: str | None = None,
    ) -> RunList:
        """Return the study's runs, newest first, as a RunList that observes them.

        Args:
            last: At most this many runs (the newest); None or 0 means all.
            state: Only runs in this state (or any of these states).
            run_name: Only runs of this run name; None (default) means every
                run name, "" the workflow's current one.

        Raises:
            UnknownNameError: for a state no run of the study has ever been
                in and motoko does not know, suggesting close names.
            ParameterError: for a negative ``last``.
        """
        manager = self._manager
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 0):
            raise ParameterError(f"last must be a whole number >= 0, got {last!r}", field="last", value=last,
                                 hint="e.g. tm.runs(last=10)")
        manager.workflow.refresh()
        study = manager.db.study(manager.name)
        ids = _newest_first(study, _states(study, state), manager.workflow.run_name if run_name == "" else run_name, last)
        return RunList(manager.workflow, manager.name, ids[:last] if last else ids, resume=False)

    def __getitem__(self, run_id: int) -> Run:
        db = self._manager.db
        db.sync()  # live: as of this read (see StudyDB.sync)
        return db.run(self._manager.name, int(run_id))

    def __iter__(self) -> Iterator[int]:
        db = self._manager.db
        db.sync()
        return iter(list(db.study(self._manager.name).runs.keys()))

    def __len__(self) -> int:
        db = self._manager.db
        db.sync()
        return len(db.study(self._manager.name).runs)


class TaskManager:
    """Creates and selects the runs of one study within a workflow.

    Attributes:
        name: The study's name.
        workflow: The owning workflow.
        schema: The study's schema, read from its bd.yaml.
    """

    def __init__(self, workflow: Session, name: str, schema: StudySchema):
        self.workflow = workflow
        self.name = name
        self.schema = schema

    @property
    def db(self) -> StudyDB:
        """The database connection holding this study."""
        return self.workflow.db_for(self.name)

    @property
    def study(self) -> str:
        """The study's name (motoko 0.1.4 spelling)."""
        return self.name

    @property
    def runs(self) -> RunsById:
        """Every run of the study by id (not scoped to the run name): ``tm.runs[3]``.

        Also callable: ``tm.runs(last=5, state="FAILED", run_name=...)``
        returns the newest runs first as a RunList.
        """
        return RunsById(self)

    @property
    def jobs(self) -> Mapping[int, Job]:
        """Every job of the study by id."""
        return self.db.study(self.name).jobs  # type: ignore[no-any-return]

    # motoko 0.1.4: tm.base.runs[3] and tm.connect().runs[3]
    @property
    def base(self) -> TaskManager:
        """Compatibility: ``tm.base.runs[3]`` as in motoko 0.1.4."""
        return self

    def connect(self) -> TaskManager:
        """Compatibility: ``tm.connect().runs[3]`` as in motoko 0.1.4."""
        return self

    @property
    def config(self) -> dict[str, Any]:
        """motoko 0.1.4: this study's entry of motoko.yaml's ``task_managers`` (``path``, ``host``)."""
        ref = self.workflow.config.studies[self.name]
        return {"path": str(ref.folder), **({"host": str(ref.host)} if ref.host is not None else {})}

    @property
    def selector(self) -> RunSelector:
        """motoko 0.1.4: ``tm.selector.selectRuns(constraints)`` → ``(run, job)`` pairs."""
        return RunSelector(self.workflow, self.name)

    @property
    def bd_config(self) -> dict[str, Any]:
        """motoko 0.1.4: the study's bd.yaml as a dictionary (validated, with its defaults)."""
        return self.schema.to_bd_yaml()

    @property
    def study_dir(self) -> str:
        """motoko 0.1.4: the study's folder (holds bd.yaml)."""
        return str(self.workflow.config.studies[self.name].folder)

    @property
    def bd_dir(self) -> str:
        """motoko 0.1.4: the study's run tree, where run directories go (``BD-STUDY-runs``)."""
        base = self.workflow.config.runs_dir or self.workflow.config.studies[self.name].folder
        return str(Path(base) / f"BD-{self.name}-runs")

    # -- creating ------------------------------------------------------------

    def createTask(  # noqa: N802 (the 0.1.4 name users know)
        self,
        run_params: Mapping[str, Any] | None = None,
        *groups: Together,
        parents: Any = None,
        commit: bool = False,
        **params: Any,
    ) -> RunList:
        """Create one run per point of the parameter space; return a RunList.

        Args:
            run_params: Run parameters, merged over the study's ``run_params``.
            *groups: :func:`motoko.together` groups of fields varying together.
            parents: Runs (or ``(study, id)`` pairs) these runs derive from;
                defaults to the run an action was fired for.
            commit: Accepted for motoko 0.1.4 (its runs were written on
                commit); motoko always commits the runs in one transaction.
            **params: Job parameters, merged over the study's ``job_space``; a
                list for a scalar field is a sweep.

        Idempotent: the same parameters in the same ``run_name`` return the
        existing runs; those that an earlier execution left CANCELLED, LOST
        or FAILED are requeued, so a resumed workflow executes them again,
        and so are those marked ``rerun_pending`` (see motoko.flow.rerun).
        New runs record the study's fingerprint (motoko.study.fingerprint).
        Validation happens before anything is written.

        Raises:
            ParameterError, UnknownNameError: for wrong or unknown parameters.
            RunNameMissing: (a ``RuntimeError``, as in motoko 0.1.4) when the
                workflow's ``run_name`` was set to None.
        """
        if self.workflow.run_name is None:
            raise RunNameMissing(self.name)
        where = f"{self.name}.createTask"
        points = expand(self.schema, params, groups, where=where, max_jobs=self.workflow.config.max_jobs)
        merged = {**self.schema.run_params, **dict(run_params or {})}
        coerced_run = self.schema.coerce_run(merged, where=where)
        extra = {
            "event_name": current_event.get() or _caller_name(),
            "parents": _parent_keys(parents) if parents is not None else current_parents.get(),
            "workflow": str(self.workflow.config.path),
            # What the runs are made from (hashed once per call, cached by mtime).
            "fingerprint": study_fingerprint(self.schema),
        }
        pairs = self._insert(points, coerced_run, extra)
        # A resumed workflow executes again what an earlier execution left
        # CANCELLED, LOST or FAILED (see requeue_left_over), and the runs
        # marked to be run again (outdated, or below a rerun run).
        requeue_left_over(self.workflow, self.name, [run for run, _ in pairs])
        requeue_pending(self.workflow, self.name, [run for run, _ in pairs])
        return RunList(self.workflow, self.name, [run.id for run, _ in pairs])

    create_task = createTask

    def _insert(self, points: list[dict[str, Any]], run: dict[str, Any], extra: dict[str, Any]) -> list[tuple[Run, Job]]:
        """Insert the runs; an embedded launcher claims those it can start in the same commit.

        See :mod:`motoko.launch.insert_claims`: a hop then costs one commit less.
        """
        db = self.db
        embedded = watch_for(self.workflow).embedded
        claim = None
        if embedded is not None:
            # Imported only here: with an embedded launcher it is loaded already,
            # and reading commands (select, status) start faster without it.
            from motoko.launch.insert_claims import insert_claim

            claim = insert_claim(embedded.launchers, db, self.name)
        try:
            pairs = db.insert(self.name, points, run, run_name=self.workflow.run_name, extra=extra, within=claim)
        except BaseException:
            if claim is not None:
                claim.drop()
            raise
        if claim is not None:
            claim.finish()
        return pairs

    # -- selecting -------------------------------------------------------------

    def select(self, constraints: Any = None, *, run_name: str | None = "") -> TaskSelection:
        """Return a lazy selection of this study's runs.

        Args:
            constraints: A constraint string (``"state = FINISHED, x > 2"``) or
                a list of them; None selects everything.
            run_name: Scope: "" (default) is the workflow's current run name,
                None selects across every run name.
        """
        items: list[Any] = []
        if isinstance(constraints, str | bytes):
            items.append(constraints)
        elif constraints is not None:
            items.extend(constraints)
        scope = self.workflow.run_name if run_name == "" else run_name
        if scope is not None:
            items.append(Where("run_name", "=", scope))
        return TaskSelection(self.workflow, self.name, items)

    def __repr__(self) -> str:
        return f"<TaskManager {self.name}>"

    def _repr_html_(self) -> str:
        """Notebook display: the table of this study's runs of the current run name."""
        selection = self.select()
        self.workflow.refresh()
        return runs_html(f"study {self.name} (run name {self.workflow.run_name!r})", selection._display_runs())


def runs_across(
    managers: Iterable[TaskManager], last: int | None, state: str | Iterable[str] | None, run_name: str | None
) -> list[Run]:
    """The runs of every study of ``managers`` matching ``state`` and ``run_name``, newest (created last) first, at most ``last``."""
    found: list[Run] = []
    for manager in managers:
        found += manager.runs(last=last, state=state, run_name=run_name).runs()
    found.sort(key=lambda r: (r.created is not None, r.created, r.study, r.id), reverse=True)
    return found[:last] if last else found


def _states(study: Study, state: str | Iterable[str] | None) -> list[str] | None:
    """The states asked for, each checked against the states the study knows."""
    if state is None:
        return None
    wanted = [state] if isinstance(state, str) else [str(s) for s in state]
    possible = known_states(study)
    for name in wanted:
        if name not in possible:
            raise UnknownNameError("state", name, possible, where=f"study {study.name}")
    return wanted


def _newest_first(study: Study, states: list[str] | None, run_name: str | None, last: int | None = None) -> list[int]:
    """Run ids of ``study`` in the given states and run name, highest (newest) first.

    Ids grow with creation, so the newest runs have the highest ids; the
    state and run-name indexes keep this cheap on large studies. With
    ``last`` and one kind of filter (or none), only the ``last`` highest ids
    of each index are read (a few buckets, not the whole index: ``motoko runs
    list -n 20`` of a million runs).
    """
    if last and (states is None or run_name is None):
        if states is not None:
            trees = [study.ids_in_state(name) for name in states]
        else:
            tree = study.runs if run_name is None else study.by_run_name.get(run_name)
            trees = [tree] if tree is not None else []
        return sorted({rid for tree in trees for rid in newest_ids(tree, last)}, reverse=True)[:last]
    candidates: set[int] | None = None
    if states is not None:
        candidates = {rid for name in states for rid in study.ids_in_state(name)}
    if run_name is not None:
        named = set(study.by_run_name.get(run_name) or ())
        candidates = named if candidates is None else candidates & named
    if candidates is None:
        return list(reversed(list(study.runs.keys())))
    return sorted(candidates, reverse=True)


def newest_ids(tree: Any, n: int) -> list[int]:
    """The ``n`` highest keys of a BTree of run ids (the newest runs), highest first, read from its end."""
    found: list[int] = []
    key = None
    while len(found) < n:
        try:
            key = tree.maxKey() if key is None else tree.maxKey(key - 1)
        except ValueError:  # nothing below
            break
        found.append(int(key))
    return found


def _caller_name() -> str | None:
    """The function that called createTask (motoko 0.1.4 recorded it so)."""
    frame = inspect.currentframe()
    try:
        # Two hops: this function → createTask → the function that called it.
        for _ in range(2):
            if frame is None:
                return None
            frame = frame.f_back
        return frame.f_code.co_name if frame is not None else None
    finally:
        del frame


def _parent_keys(parents: Any) -> tuple[tuple[str, int], ...]:
    """Normalise runs, (run, job) pairs or (study, id) pairs to (study, id)."""
    if isinstance(parents, Run):
        parents = [parents]
    keys = []
    for item in parents:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Run):
            item = item[0]
        if isinstance(item, Run) or hasattr(item, "study") and hasattr(item, "id"):
            keys.append((str(item.study), int(item.id)))
        elif isinstance(item, tuple | list) and len(item) == 2:
            keys.append((str(item[0]), int(item[1])))
        else:
            raise ParameterError(
                f"cannot use {item!r} as a parent run",
                field="parents",
                value=item,
                hint="pass runs, (run, job) pairs or (study, id) pairs",
            )
    return tuple(keys)


__all__ = ["TaskManager", "RunNotFound", "current_event", "current_parents", "runs_across"]

"""Workflow: motoko.yaml, its task managers, its database, its run name.

``Workflow(path)`` opens (starting it if needed) the workflow's database
server, makes sure every study of motoko.yaml exists in it, and exposes one
:class:`~motoko.flow.task_manager.TaskManager` per study as an attribute
(``workflow.mult``, or an alias). ``run_name`` scopes every created run and
every selection to one execution of the workflow; by default it is derived
from the workflow file, so running the same file again resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from BTrees.OOBTree import OOBTree

from motoko.config import WorkflowConfig, database_address, load_config
from motoko.errors import AddressError, UnknownAttributeError, UnknownNameError
from motoko.flow.events import EventsMixin
from motoko.flow.launcher_watch import watch_for
from motoko.flow.task_manager import TaskManager, runs_across
from motoko.study.database import StudyDB
from motoko.study.feed import AsyncWaiter
from motoko.study.records import Run, now
from motoko.study.schema import load_schema
from motoko.study.server import Address, ensure_server

log = logging.getLogger(__name__)


class WorkflowVars:
    """A persistent namespace: ``workflow.vars.best = 3`` survives restarts.

    Values live in the workflow's database (one namespace per workflow
    directory) and are committed when assigned.
    """

    def __init__(self, workflow: Workflow):
        object.__setattr__(self, "_workflow", workflow)

    def _tree(self) -> OOBTree:
        db = self._workflow.main_db
        root = db.conn.root()
        if "motoko_vars" not in root:
            db.transact(lambda: root.__setitem__("motoko_vars", OOBTree()), what="create workflow vars")
        tree: OOBTree = db.conn.root()["motoko_vars"]
        return tree

    def __getattr__(self, name: str) -> Any:
        tree = self._tree()
        if name in tree:
            return tree[name]
        raise UnknownAttributeError(f"workflow.vars has no {name!r}", name, hint=f"set it first: workflow.vars.{name} = ...")

    def __setattr__(self, name: str, value: Any) -> None:
        db = self._workflow.main_db
        db.transact(lambda: self._tree().__setitem__(name, value), what=f"set workflow.vars.{name}")

    def __delattr__(self, name: str) -> None:
        db = self._workflow.main_db

        def change() -> None:
            tree = self._tree()
            if name in tree:
                del tree[name]

        db.transact(change, what=f"delete workflow.vars.{name}")

    def __contains__(self, name: str) -> bool:
        return name in self._tree()

    def to_dict(self) -> dict[str, Any]:
        """Return every variable."""
        return dict(self._tree().items())


class Workflow(EventsMixin):
    """A workflow over the studies listed in a motoko.yaml.

    Args:
        path: motoko.yaml, or a directory to search upward from (default: cwd).
        run_name: Scope of created runs and selections (default: "default").
        start_server: Start the workflow's own database server if needed.
        create: Create missing studies in the database (idempotent).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        run_name: str | None = None,
        start_server: bool = True,
        create: bool = True,
    ):
        super().__init__()
        self.config: WorkflowConfig = load_config(path)
        self.run_name: str | None = run_name or "default"
        self.finished = False
        #: When this execution began: runs ended or launched before it and
        #: left CANCELLED/LOST/FAILED are executed again on resume.
        self.opened_at = now()
        self._last_lost_check = time.monotonic()
        self._start_server = start_server
        self._dbs: dict[str, StudyDB] = {}
        self._study_dbs: dict[str, StudyDB] = {}
        self._thread = threading.get_ident()
        self.task_managers: dict[str, TaskManager] = {
            name: TaskManager(self, name, load_schema(ref.folder)) for name, ref in self.config.studies.items()
        }
        self.vars = WorkflowVars(self)
        if create:
            self.create()

    # -- paths and names -----------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The workflow directory."""
        return self.config.directory

    @property
    def config_path(self) -> str:
        """motoko.yaml's absolute path (what runs see as ``run.workflow``)."""
        return str(self.config.path)

    def __getattr__(self, name: str) -> TaskManager:
        if name.startswith("_"):
            raise AttributeError(name)
        managers = self.__dict__.get("task_managers", {})
        config = self.__dict__.get("config")
        if name in managers:
            return managers[name]  # type: ignore[no-any-return]
        if config is not None and name in config.aliases:
            return managers[config.aliases[name]]  # type: ignore[no-any-return]
        raise UnknownAttributeError(
            f"workflow has no study or attribute {name!r}",
            name,
            hint=UnknownNameError("study", name, [*managers, *config.aliases]).hint if config else None,
        )

    def __getitem__(self, name: str) -> TaskManager:
        return self.task_managers[self.config.resolve(name)]

    # -- databases ---------------------------------------------------------------------

    def address_of(self, study: str) -> Address:
        """The database address holding ``study`` (the workflow's own server by default)."""
        explicit = database_address(self.config, study)
        if explicit is not None:
            return explicit
        if not self._start_server:
            from motoko.study.server import default_address

            return default_address(self.directory)
        return ensure_server(self.directory, idle_stop=self.config.server_idle_stop)

    def db_for(self, study: str) -> StudyDB:
        """The connection (opened on first use) to the database holding ``study``."""
        db = self._study_dbs.get(study)
        if db is not None:
            return db
        name = self.config.resolve(study)
        address = self.address_of(name)
        key = str(address)
        db = self._dbs.get(key)
        if db is None:
            db = self._dbs[key] = StudyDB(address)
            db.enable_live_reads()  # a run read through this workflow sees the latest commits
            db.conn.motoko_workflow = weakref.ref(self)  # RunList(pairs) finds its workflow
        self._study_dbs[study] = self._study_dbs[name] = db
        return db

    @property
    def main_db(self) -> StudyDB:
        """The database of the first study (holds ``workflow.vars``)."""
        return self.db_for(next(iter(self.config.studies)))

    @property
    def databases(self) -> list[StudyDB]:
        """Every open database connection."""
        for name in self.config.studies:
            self.db_for(name)
        return list(self._dbs.values())

    def create(self, validated: bool | None = None, *, drop: bool = False) -> None:
        """Create (or update) every study in its database; idempotent.

        ``drop=True`` empties the studies first (every run is deleted).
        ``validated`` is accepted for motoko 0.1.4 compatibility.
        """
        for name, manager in self.task_managers.items():
            self.db_for(name).create_study(manager.schema, drop=drop)

    def check(self) -> None:
        """Refuse, before anything is written, study files :meth:`create` would refuse (reads only)."""
        for name, manager in self.task_managers.items():
            self.db_for(name).check_schema(manager.schema)

    def refresh(self) -> None:
        """Commit this workflow's pending changes and see everybody else's.

        Every ``lost_after / 4`` seconds it also declares LOST the runs whose
        local launcher stopped heart-beating, so an awaiting workflow is never
        stuck even when every launcher died. Runs of cluster launchers (SLURM,
        Dask) wait for a launcher to adopt them: their jobs may still run; and
        while a live launcher serves the study, it alone judges silent runs.
        """
        for db in self.databases:
            db.refresh()
        if time.monotonic() - self._last_lost_check >= max(0.2, self.config.lost_after / 4):
            self._last_lost_check = time.monotonic()
            self._detect_lost()

    def _detect_lost(self) -> None:
        from motoko.launch.processes import stop_orphans
        from motoko.study.liveness import OrphanProcess, declare_lost, served
        from motoko.study.states import ACTIVE

        # ``motoko run``'s own launcher serves every study even before it wrote
        # its record: deciding before it does would stop runs it can adopt.
        embedded = watch_for(self).embedded
        embedded_serves = embedded is not None and embedded.alive
        for name, manager in self.task_managers.items():
            db = self.db_for(name)
            study = db.study(name)
            if not any(study.ids_in_state(state) for state in ACTIVE):
                continue
            lost_after = manager.schema.lost_after or self.config.lost_after
            if embedded_serves or served(db, name, lost_after):
                continue  # a live launcher adopts what can be, and declares the rest
            orphans: list[OrphanProcess] = []

            def change(
                db: StudyDB = db, name: str = name, lost_after: float = lost_after, orphans: list[OrphanProcess] = orphans
            ) -> int:
                orphans.clear()  # a retried transaction finds them again
                # Cluster jobs may outlive their launcher: only a launcher can look for them.
                return declare_lost(
                    db, db.study(name), lost_after, observer=f"workflow {self.run_name}", orphans=orphans,
                    executors=("local",),
                )

            db.transact(change, what="declare lost runs")
            stop_orphans(orphans)

    def change_waiter(self) -> AsyncWaiter:
        """An awaitable that fires on the next commit to any workflow database."""
        return AsyncWaiter([db.feed for db in self.databases], asyncio.get_running_loop())

    def close(self) -> None:
        """Commit pending changes and close every connection."""
        for db in self._dbs.values():
            with contextlib.suppress(Exception):
                db.refresh()
            db.close()
        self._dbs.clear()
        self._study_dbs.clear()

    def __enter__(self) -> Workflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs by name ----------------------------------------------------------------------

    def get_runs(self, uris: Iterable[str]) -> dict[str, list[Run]]:
        """Return runs named ``"study.id"`` grouped by study (motoko 0.1.4 API).

        Raises:
            AddressError: for a name that is not ``study.id``.
        """
        out: dict[str, list[Run]] = {}
        for uri in uris:
            study, _, rid = str(uri).rpartition(".")
            if not study or not rid.isdigit():
                raise AddressError(f"malformed run name {uri!r}", hint="write STUDY.ID, e.g. 'add.1'")
            out.setdefault(study, []).append(self[study].runs[int(rid)])
        return out

    def runs(
        self, last: int | None = None, state: str | Iterable[str] | None = None, run_name: str | None = None
    ) -> list[Run]:
        """The runs of every study, newest first (``motoko runs list`` in Python).

        Arguments as ``wf.STUDY.runs(...)``: ``last`` (None or 0: all),
        ``state`` (checked, with close names suggested), ``run_name`` (None:
        every run name, "": this workflow's).
        """
        return runs_across(self, last, state, run_name)

    def is_empty(self) -> bool:
        """True when no study has a run of the current run name."""
        return all(len(tm.select()) == 0 for tm in self.task_managers.values())

    def __repr__(self) -> str:
        return f"<Workflow {self.config.path} run_name={self.run_name!r}>"

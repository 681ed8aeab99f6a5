"""Session: the database side of a workflow (config, run name, connections).

A :class:`~motoko.flow.workflow.Workflow` *is* a Session with task managers,
persistent variables and actions on top. Everything below the workflow
(handles on runs, waits, outdated runs, reruns, the launcher watch) needs
only this side: which studies there are and their schemas, the run name,
the connection holding each study, and how to commit and see the others'
commits. Depending on the Session instead of the Workflow is what lets those
modules sit below ``workflow.py`` without an import circle; a handle
reattached from a file (``RunList.open``) opens a Session of its own.

Reading through a Session never writes anything but the session's own
pending changes: declaring silent runs LOST is an explicit step that waits
take (:mod:`motoko.flow.lost_runs`), never a side effect of :meth:`refresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from pathlib import Path
from typing import TypeVar

from motoko.config import WorkflowConfig, database_address, load_config
from motoko.study.database import StudyDB
from motoko.study.feed import AsyncWaiter
from motoko.study.records import now
from motoko.study.schema import StudySchema, load_schema
from motoko.study.server import Address, default_address, ensure_server

S = TypeVar("S", bound="Session")


class Session:
    """The databases of the studies listed in a motoko.yaml, scoped to one run name.

    Args:
        path: motoko.yaml, or a directory to search upward from (default: cwd).
        run_name: Scope of created runs and selections (default: "default").
        start_server: Start the workflow's own database server if needed.
        create: Create missing studies in the database (idempotent).

    Attributes:
        config: The validated motoko.yaml.
        run_name: The run name (None refuses createTask, as in motoko 0.1.4).
        opened_at: When this execution began: runs ended or launched before
            it and left CANCELLED/LOST/FAILED are executed again on resume.
        schemas: Each study's schema (its bd.yaml), by study name, in
            motoko.yaml's order.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        run_name: str | None = None,
        start_server: bool = True,
        create: bool = True,
    ):
        self.config: WorkflowConfig = load_config(path)
        self.run_name: str | None = run_name or "default"
        self.opened_at = now()
        self._start_server = start_server
        self._dbs: dict[str, StudyDB] = {}
        self._study_dbs: dict[str, StudyDB] = {}
        self._thread = threading.get_ident()
        self.schemas: dict[str, StudySchema] = {
            name: load_schema(ref.folder) for name, ref in self.config.studies.items()
        }
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

    # -- databases ---------------------------------------------------------------------

    def address_of(self, study: str) -> Address:
        """The database address holding ``study`` (the workflow's own server by default)."""
        explicit = database_address(self.config, study)
        if explicit is not None:
            return explicit
        if not self._start_server:
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
        for name, schema in self.schemas.items():
            self.db_for(name).create_study(schema, drop=drop)

    def check(self) -> None:
        """Refuse, before anything is written, study files :meth:`create` would refuse (reads only)."""
        for name, schema in self.schemas.items():
            self.db_for(name).check_schema(schema)

    def refresh(self) -> None:
        """Commit this session's pending changes and see everybody else's.

        Nothing else is written: runs whose launcher went silent are declared
        LOST by the waits (:func:`motoko.flow.lost_runs.declare_lost_while_waiting`),
        not by reading.
        """
        for db in self.databases:
            db.refresh()

    def catch_up(self) -> None:
        """Commit this session's pending changes and see what the change feed told of.

        As :meth:`refresh`, but a server round trip only when another
        process committed since (see ``StudyDB.catch_up``): a step's end,
        once its waits have seen what they waited for, needs none for the
        commits of this process (its embedded launcher's).
        """
        for db in self.databases:
            db.commit()
            db.catch_up()

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

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.config.path} run_name={self.run_name!r}>"


__all__ = ["Session"]

"""Workflow: motoko.yaml, its task managers, its database, its run name.

``Workflow(path)`` opens (starting it if needed) the workflow's database
server, makes sure every study of motoko.yaml exists in it, and exposes one
:class:`~motoko.flow.task_manager.TaskManager` per study as an attribute
(``workflow.mult``, or an alias). ``run_name`` scopes every created run and
every selection to one execution of the workflow; by default it is derived
from the workflow file, so running the same file again resumes it.

The database side lives in :class:`~motoko.flow.session.Session`, which
the handles on runs depend on; the actions of a motoko 0.1.4 orchestrator
live in the :class:`~motoko.flow.events.ActionLoop` a Workflow holds, and
its verbs (``add_action``, ``finished``, ``execute``...) delegate to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from BTrees.OOBTree import OOBTree

from motoko.errors import AddressError, UnknownAttributeError, UnknownNameError
from motoko.flow.events import ALL, Action, ActionLoop
from motoko.flow.session import Session
from motoko.flow.task_manager import TaskManager, runs_across
from motoko.study.records import Run

log = logging.getLogger(__name__)


class WorkflowVars:
    """A persistent namespace: ``workflow.vars.best = 3`` survives restarts.

    Values live in the workflow's database (one namespace per workflow
    directory) and are committed when assigned.
    """

    def __init__(self, workflow: Session):
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


class Workflow(Session):
    """A workflow over the studies listed in a motoko.yaml.

    The database side (config, run name, connections, :meth:`refresh`) is
    the :class:`~motoko.flow.session.Session` it extends; on top of it come
    one :class:`~motoko.flow.task_manager.TaskManager` per study
    (``workflow.mult``), persistent ``workflow.vars``, and the actions of a
    motoko 0.1.4 orchestrator, held by its :class:`~motoko.flow.events.ActionLoop`.

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
        super().__init__(path, run_name=run_name, start_server=start_server, create=False)
        self.task_managers: dict[str, TaskManager] = {
            name: TaskManager(self, name, schema) for name, schema in self.schemas.items()
        }
        self.vars = WorkflowVars(self)
        self.action_loop = ActionLoop(self, self.task_managers)
        if create:
            self.create()

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

    # -- actions (motoko 0.1.4 orchestrators), held by the action loop ---------------------

    @property
    def actions(self) -> dict[str, Action]:
        """The registered actions, by name."""
        return self.action_loop.actions

    @property
    def params(self) -> dict[str, Any]:
        """Extra keyword arguments for every action (the orchestrator's parameters)."""
        return self.action_loop.params

    @params.setter
    def params(self, value: dict[str, Any]) -> None:
        self.action_loop.params = value

    @property
    def finished(self) -> bool:
        """Set it (``workflow.finished = True``) to end the actions and the orchestrator."""
        return self.action_loop.finished

    @finished.setter
    def finished(self, value: bool) -> None:
        self.action_loop.finished = value

    def add_action(
        self,
        event_name: str,
        task: str = ALL,
        event: Any = None,
        get_params: Callable[[], Any] | None = None,
        f: Callable[..., Any] | None = None,
    ) -> None:
        """Register ``f`` to be fired whenever ``event`` holds for ``task`` (see :meth:`ActionLoop.add_action`)."""
        self.action_loop.add_action(event_name, task, event, get_params, f)

    def add_error_handler(self, event: Any = "state = FAILED", f: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        """Register a handler for failed runs: ``f`` is called, then the workflow ends with an error."""
        self.action_loop.add_error_handler(event, f, **kwargs)

    async def check_events(self) -> list[Any]:
        """Evaluate every action once; start a task for each that fires."""
        return await self.action_loop.check_events()

    async def run_events(self) -> None:
        """Fire actions on every change until ``workflow.finished`` is set."""
        await self.action_loop.run_events()

    def execute(self, **params: Any) -> None:
        """Run the orchestrator's ``main`` and the actions (motoko 0.1.4 API)."""
        # Imported here, like the launcher below: reading commands (select,
        # status, info) open a Workflow too, and start faster without them.
        from motoko.flow.orchestrator import run_orchestrator

        run_orchestrator(self.action_loop, params)

    def start_launcher_daemons(self, args: Any = None) -> None:
        """Start a detached launcher daemon for the workflow (motoko 0.1.4 API).

        Idempotent: does nothing while a daemon is already running.
        """
        from motoko.launch.service import daemon_status, start_daemon

        if not daemon_status(self.config):
            start_daemon(self.config, [], study=None, executor=self.config.launcher.executor)

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
        return runs_across(self.task_managers.values(), last, state, run_name)

    def is_empty(self) -> bool:
        """True when no study has a run of the current run name."""
        return all(len(tm.select()) == 0 for tm in self.task_managers.values())

    def __repr__(self) -> str:
        return f"<Workflow {self.config.path} run_name={self.run_name!r}>"

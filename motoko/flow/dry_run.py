"""``motoko run FILE --dry-run``: what a run of the workflow would do, changing nothing.

The steps are executed one after the other with a stand-in workflow whose
``createTask`` looks the runs up instead of inserting them
(:meth:`Study.existing_run <motoko.study.container.Study.existing_run>`) and
says, per study, how many would be *created*, *reused*, *rerun* (and why) or
*waited for*. Awaiting such a task returns the existing runs when every one
of them is finished and would be reused; otherwise the step cannot go on
without executing runs, so it stops there ("would wait for 2 runs of mult")
and the steps depending on it are reported as waiting for it.

Nothing is written: the studies are not created, no launcher starts, and
whatever a step changes on a run is dropped, never committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from motoko.config import find_config
from motoko.errors import WorkflowError
from motoko.flow.context import current_event
from motoko.flow.dag import _arguments, build_graph, check_params
from motoko.flow.outdated import OutdatedReport, current_run_names, find_outdated, is_done
from motoko.flow.workflow import Workflow
from motoko.flow.workflow_file import load_workflow_file
from motoko.study.records import ACTIVE, CREATED, FAILURE, Job, Run
from motoko.study.space import expand

if TYPE_CHECKING:
    from motoko.flow.task_manager import TaskManager


class WouldWait(Exception):
    """A step awaited runs that a real run would have to execute first."""

    def __init__(self, study: str, count: int):
        super().__init__(f"would wait for {count} run(s) of {study}")
        self.study = study
        self.count = count


class PlannedRuns(list[tuple[Run, Job]]):
    """What ``createTask`` returns in a dry run: the existing (run, job) pairs, awaitable."""

    def __init__(self, pairs: list[tuple[Run, Job]], study: str, waiting: int):
        super().__init__(pairs)
        self.study = study
        self.waiting = waiting

    # asyncio.gather keys its arguments by hash: each plan is its own awaitable.
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other

    def __await__(self) -> Generator[Any, None, PlannedRuns]:
        if self.waiting:
            raise WouldWait(self.study, self.waiting)
        return self
        yield  # a generator, as __await__ must be


@dataclass
class DryRun:
    """The plan being written: one entry per step, in the order steps ran.

    Attributes:
        policy: What happens to outdated runs: "rerun", "keep" or "ask".
        outdated: The outdated runs of the run name.
        steps: Step → its lines.
    """

    policy: str
    outdated: OutdatedReport
    steps: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)

    def count(self, step: str, study: str, what: str) -> None:
        """Add one run of ``study`` to what ``step`` would do with it."""
        per_step = self.counts.setdefault(step, {})
        per_step[(study, what)] = per_step.get((study, what), 0) + 1

    def lines(self) -> list[str]:
        """The plan, step by step."""
        out = []
        for step, notes in self.steps.items():
            done = [f"{study}: {n} run(s) {what}" for (study, what), n in self.counts.get(step, {}).items()]
            out.append(f"step {step}: " + "; ".join([*done, *notes] or ["creates no run"]))
        return out


class DryTaskManager:
    """A task manager whose ``createTask`` only looks up what would happen."""

    def __init__(self, manager: TaskManager, plan: DryRun):
        self._manager = manager
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._manager, name)

    def createTask(self, run_params: Mapping[str, Any] | None = None, *groups: Any, parents: Any = None, **params: Any) -> PlannedRuns:  # noqa: N802
        """Classify each run of the space as created, reused, rerun or waited for; write nothing."""
        manager = self._manager
        where = f"{manager.name}.createTask"
        points = expand(manager.schema, params, groups, where=where)
        coerced_run = manager.schema.coerce_run({**manager.schema.run_params, **dict(run_params or {})}, where=where)
        db = manager.db
        study = db.study(manager.name) if manager.name in db.studies() else None
        step = current_event.get() or "?"
        pairs: list[tuple[Run, Job]] = []
        waiting = 0
        for point in points:
            run = study.existing_run(point, coerced_run, manager.workflow.run_name) if study is not None else None
            what = self._fate(run)
            self._plan.count(step, manager.name, what)
            if run is not None and what.startswith("reused"):
                pairs.append((run, run.job))
            else:
                waiting += 1
        return PlannedRuns(pairs, manager.name, waiting)

    create_task = createTask

    def _fate(self, run: Run | None) -> str:
        """What a real run would do with this (existing or missing) run, in words."""
        if run is None:
            return "would be created"
        reason = self._plan.outdated.reasons.get((self._manager.name, run.id))
        if run.rerun_pending is not None or run.superseded is not None:
            return f"would be rerun ({run.rerun_pending or run.superseded})"
        if reason is not None:
            if self._plan.policy == "rerun":
                return f"would be rerun ({reason})"
            if self._plan.policy == "keep":
                direct = run.id in self._plan.outdated.direct.get(self._manager.name, ())
                return f"reused although outdated ({reason})" if direct else "reused"
            return f"outdated ({reason}): `motoko run` would ask, or stop when not on a terminal"
        if is_done(run):
            return "reused"
        if run.state in FAILURE:
            return f"would be rerun (left {run.state})"
        if run.state == CREATED or run.state in ACTIVE:
            return f"waited for ({run.state})"
        return f"waited for ({run.state})"


class DryVars:
    """``workflow.vars`` in a dry run: read from the database, written to memory only."""

    def __init__(self, workflow: Workflow):
        object.__setattr__(self, "_workflow", workflow)
        object.__setattr__(self, "_written", {})

    def __getattr__(self, name: str) -> Any:
        written = object.__getattribute__(self, "_written")
        if name in written and written[name] is not _DELETED:
            return written[name]
        if name in written:
            raise AttributeError(f"workflow.vars has no {name!r}")
        return getattr(object.__getattribute__(self, "_workflow").vars, name)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__getattribute__(self, "_written")[name] = value

    def __delattr__(self, name: str) -> None:
        object.__getattribute__(self, "_written")[name] = _DELETED

    def __contains__(self, name: str) -> bool:
        return name in self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Every variable, as the dry run sees it."""
        merged = {**object.__getattribute__(self, "_workflow").vars.to_dict(), **object.__getattribute__(self, "_written")}
        return {k: v for k, v in merged.items() if v is not _DELETED}


_DELETED = object()


class DryWorkflow:
    """The workflow as steps see it in a dry run: study attributes are dry task managers."""

    def __init__(self, workflow: Workflow, plan: DryRun):
        self._workflow = workflow
        self._managers = {name: DryTaskManager(tm, plan) for name, tm in workflow.task_managers.items()}
        self.vars = DryVars(workflow)

    def __getattr__(self, name: str) -> Any:
        if name in self._managers:
            return self._managers[name]
        aliases = self._workflow.config.aliases
        if name in aliases:
            return self._managers[aliases[name]]
        return getattr(self._workflow, name)

    def __getitem__(self, name: str) -> DryTaskManager:
        return self._managers[self._workflow.config.resolve(name)]

    def refresh(self) -> None:
        """Nothing to commit and nothing to wait for."""


async def plan_steps(workflow: Workflow, steps: Mapping[str, Any], params: Mapping[str, Any], policy: str) -> DryRun:
    """Run the steps in a dry run, one after the other; return the plan."""
    plan = DryRun(policy, find_outdated(workflow))
    graph = build_graph(steps)
    dry = DryWorkflow(workflow, plan)
    results: dict[str, Any] = {}
    blocked: dict[str, str] = {}
    for name in nx.topological_sort(graph):
        plan.steps[name] = []
        waits_for = [d for d in graph.predecessors(name) if d in blocked]
        if waits_for:
            blocked[name] = f"would wait for step {', '.join(waits_for)}"
            plan.steps[name].append(blocked[name])
            continue
        kwargs = _arguments(graph.nodes[name]["step"], graph, dry, params, results)
        token = current_event.set(name)
        try:
            results[name] = await graph.nodes[name]["step"].func(**kwargs)
        except WouldWait:
            # Say what the step would wait for: every run it asked for that
            # is not there to reuse (a gather stops at the first one).
            waiting: dict[str, int] = {}
            for (study, what), n in plan.counts.get(name, {}).items():
                if not what.startswith("reused"):
                    waiting[study] = waiting.get(study, 0) + n
            blocked[name] = "would wait for " + ", ".join(f"{n} run(s) of {study}" for study, n in waiting.items())
            plan.steps[name].append(blocked[name])
        finally:
            current_event.reset(token)
    return plan


def discard_changes(workflow: Workflow) -> None:
    """Drop anything a step changed on a run: a dry run commits nothing."""
    for db in workflow.databases:
        with contextlib.suppress(Exception):
            db.abort()



def current_run_name(workflow_dir: Path, file: Path, run_name: str | None, fresh: bool) -> str:
    """The run name ``motoko run`` would use (see ``resolve_run_name``), without recording it."""
    if run_name:
        return run_name
    if fresh:
        return f"{file.stem}-(new)"
    return current_run_names(workflow_dir).get(str(file), file.stem)


def dry_run_file(
    path: Path | str,
    params: Mapping[str, Any] | None = None,
    *,
    run_name: str | None = None,
    fresh: bool = False,
    outdated: str | None = None,
) -> tuple[str, list[str]]:
    """What ``motoko run`` would do with a workflow file: ``(run name, lines)``; writes nothing.

    Raises:
        WorkflowError: for a file without ``@step`` functions (an orchestrator
            has no steps to plan), and for bad input, as ``motoko run`` does.
    """
    wf_file = load_workflow_file(path)
    if not wf_file.steps:
        raise WorkflowError(
            "--dry-run needs a workflow of @step functions", where=str(wf_file.path),
            hint="an orchestrator's main() cannot be planned without executing it",
        )
    params = dict(params or {})
    check_params(wf_file.steps, params, str(wf_file.path))
    config_path = find_config(wf_file.path.parent)
    name = current_run_name(config_path.parent, wf_file.path, run_name, fresh)
    workflow = Workflow(config_path, run_name=name, create=False)
    try:
        policy = outdated or workflow.config.resume_outdated
        plan = asyncio.run(plan_steps(workflow, wf_file.steps, params, policy))
    finally:
        discard_changes(workflow)
        workflow.close()
    head = [f"dry run of {path} (run name {name}); nothing was changed"]
    if plan.outdated:
        head.append(plan.outdated.summary())
    return name, [*head, *plan.lines()]


__all__ = ["DryRun", "DryWorkflow", "PlannedRuns", "WouldWait", "discard_changes", "dry_run_file", "plan_steps"]

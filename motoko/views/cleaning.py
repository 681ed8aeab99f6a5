"""What ``motoko clean`` may delete: the runs and *only* this project's run directories.

A run's ``run_path`` is whatever its record says. After ``motoko import`` of
another project's export it points into *that* project's folders, and a
record can name any path at all; trusting the folder's name (``run-14``
under ``BD-...``) once deleted another project's results. So a directory is
deleted only when, resolved, it is exactly ``<run tree>/run-<id>`` of this
workflow (the run tree being ``runs_dir`` or the study's folder, then
``BD-<study>-runs``) and is not itself a symlink. Anything else is refused,
by name, before a single record is deleted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import CleanRefused, DatabaseError
from motoko.launch.attempts import FENCE_FILE, prune_exit_logs
from motoko.launch.links import prune_sources
from motoko.launch.run_dirs import EXEC_SOURCE
from motoko.launch.spares import prune_spares
from motoko.study.records import ACTIVE

if TYPE_CHECKING:
    from motoko.flow.workflow import Workflow


@dataclass
class StudyClean:
    """The runs of one study a clean deletes.

    Attributes:
        study: The study's name.
        ids: The run ids to delete.
        directories: The run directories to delete with them (inside the run tree).
        outside: ``(run id, path, why)`` of existing directories that are not
            this project's to delete.
    """

    study: str
    tree: Path
    ids: list[int] = field(default_factory=list)
    directories: list[Path] = field(default_factory=list)
    outside: list[tuple[int, Path, str]] = field(default_factory=list)


def run_tree(workflow: Workflow, study: str) -> Path:
    """This project's run tree of ``study``: where its launchers stage run directories."""
    schema = workflow[study].schema
    base = workflow.config.runs_dir or schema.folder or workflow.directory
    return Path(base) / f"BD-{schema.name}-runs"


def classify(run: Any, tree: Path) -> tuple[Path | None, str | None]:
    """``(directory to delete, None)``, ``(None, why it is refused)``, or ``(None, None)`` (none exists)."""
    if not run.run_path:
        return None, None
    path = Path(run.run_path)
    if path.is_symlink():
        return None, f"it is a symlink to {path.resolve()}"
    if not path.exists():
        return None, None
    expected = tree.resolve() / f"run-{run.id}"
    if path.resolve() != expected:
        return None, f"it is outside this project's run directory {tree}"
    return (path if path.is_dir() else None), None


def plan_clean(workflow: Workflow, studies: list[str], constraints: list[str] | None) -> list[StudyClean]:
    """Select the runs to delete and sort their directories into ours and not ours.

    Raises:
        DatabaseError: a matching run is still executing (cancel it first).
    """
    plan = []
    for name in studies:
        runs = workflow.db_for(name).select(name, constraints or None)
        active = [r for r in runs if r.state in ACTIVE]
        if active:
            raise DatabaseError(
                f"{len(active)} matching run(s) of {name} are executing (e.g. {name}.{active[0].id})",
                hint="cancel them first with `motoko cancel`, or narrow the constraints",
            )
        entry = StudyClean(name, run_tree(workflow, name), [r.id for r in runs])
        for run in runs:
            directory, why = classify(run, entry.tree)
            if directory is not None:
                entry.directories.append(directory)
            elif why is not None:
                entry.outside.append((run.id, Path(str(run.run_path)), why))
        plan.append(entry)
    return plan


def refuse_outside(plan: list[StudyClean]) -> None:
    """Refuse a clean that would reach outside the project, naming the first such directory.

    Raises:
        CleanRefused: listing how many directories are concerned.
    """
    outside = [(entry.study, *item) for entry in plan for item in entry.outside]
    if outside:
        study, rid, path, why = outside[0]
        raise CleanRefused(study, rid, path, why, len(outside))


def _launchers_needed(db: Any, name: str) -> set[str]:
    """Launchers whose exit logs may still settle a run: the live ones, and those active runs name."""
    db.abort()
    needed = {key for key, record in db.launchers().items() if record.stopped is None}
    study = db.study(name)
    for state in ACTIVE:
        needed |= {str(run.launcher) for run in study.ids_in_state(state).values() if run.launcher}
    return needed


def delete_runs(workflow: Workflow, plan: list[StudyClean]) -> int:
    """Delete the planned runs (one transaction per study), then their directories; return the count.

    Directories listed as ``outside`` are never touched.
    """
    total = 0
    for entry in plan:
        db = workflow.db_for(entry.study)

        def change(db: Any = db, name: str = entry.study, ids: list[int] = entry.ids) -> None:
            study = db.study(name)
            for rid in ids:
                if rid in study.runs:
                    study.delete(study.runs[rid])

        db.transact(change, what=f"delete runs of {entry.study}")
        for path in entry.directories:
            shutil.rmtree(path, ignore_errors=True)
        # The exec files and fences the deleted runs shared (hard links; see
        # motoko.launch.links) go with the last run linking them; the exit
        # logs of launchers that no live launcher or active run needs, and
        # the spare directories of launchers not live (see motoko.launch.spares), too.
        keep = _launchers_needed(db, entry.study)
        for tree in {path.parent for path in entry.directories}:
            prune_sources(tree, (EXEC_SOURCE, FENCE_FILE + "."))
            prune_exit_logs(tree, keep)
            prune_spares(tree, keep)
        total += len(entry.ids)
    return total

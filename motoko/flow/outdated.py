"""Outdated runs: the one rule saying which finished runs may not be silently reused.

A run is *outdated* when it is done (FINISHED, or a user state such as
FORWARDED) and its study's files changed since it was made: its recorded
fingerprint (:mod:`motoko.study.fingerprint`) differs from the study's
current one. Every done run descending from an outdated run (through
``parents``, transitively, within the run name) is outdated too: its inputs
came from a stale result.

Two marks on a run settle it:

- ``outdated_kept``: the user chose to reuse it (``--keep-outdated``) for the
  study files whose digest it holds; it is not outdated again until the files
  change once more.
- ``rerun_pending``: it is to be executed again when the workflow next asks
  for it (``--rerun-outdated`` or ``motoko rerun --with-descendants``); see
  :mod:`motoko.flow.rerun`.
- ``superseded``: it was to be executed again, but the next execution did
  not ask for it (it created new runs instead); it is executed again if a
  later execution asks for it, never reused.

:func:`find_outdated` reads only; :func:`keep` and :func:`mark_pending` write
those marks, one transaction per database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motoko.errors import OutdatedRunsError
from motoko.flow.session import Session
from motoko.study.fingerprint import changed_files, study_fingerprint
from motoko.study.outdated_counts import counts_of, holds_result
from motoko.study.records import Run

if TYPE_CHECKING:
    import networkx as nx

#: The choices for outdated runs (motoko.yaml ``resume: {outdated: ...}``).
POLICIES = ("ask", "rerun", "keep")

Key = tuple[str, int]


def is_done(run: Run) -> bool:
    """True for a run holding a result: FINISHED or a user state (FORWARDED...)."""
    return holds_result(run.state)


@dataclass
class OutdatedReport:
    """The outdated runs of one run name.

    Attributes:
        run_name: The run name examined.
        changed: Study → the names of its files that changed (relative to its folder).
        folders: Study → its folder, to name changed files as the user sees them.
        direct: Study → ids of runs whose own study files changed.
        descendants: Study → ids of the other outdated runs (descending from those).
        reasons: Run → why it is outdated, in one phrase.
        kept: Study → ids of runs reused although outdated (``--keep-outdated``), not counted in ``total``.
    """

    run_name: str
    changed: dict[str, list[str]] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    direct: dict[str, list[int]] = field(default_factory=dict)
    descendants: dict[str, list[int]] = field(default_factory=dict)
    reasons: dict[Key, str] = field(default_factory=dict)
    kept: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many runs are outdated."""
        return sum(len(v) for v in self.direct.values()) + sum(len(v) for v in self.descendants.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def runs(self) -> Iterator[Key]:
        """Every outdated run as ``(study, id)``."""
        for group in (self.direct, self.descendants):
            for study, ids in group.items():
                for rid in ids:
                    yield study, rid

    def files(self) -> list[str]:
        """The changed files, as ``studies/mult/doIt.py`` (relative to the workflow when possible)."""
        return [f"{self.folders.get(study, study)}/{name}" for study, names in self.changed.items() for name in names]

    def summary(self) -> str:
        """One line: which files changed and how many runs are outdated."""
        direct = sum(len(v) for v in self.direct.values())
        below = self.total - direct
        where = ", ".join(f"{len(ids)} of {study}" for study, ids in self.direct.items())
        text = f"{self.total} finished run(s) of {self.run_name} are outdated: {', '.join(self.files())} changed ({where}"
        if below:
            text += f"; {below} descending from them: " + ", ".join(
                f"{len(ids)} of {study}" for study, ids in self.descendants.items()
            )
        return text + ")"

    def kept_counts(self) -> dict[str, int]:
        """Study → how many of its runs were reused although outdated."""
        return {study: len(ids) for study, ids in self.kept.items()}

    def kept_runs(self) -> Iterator[Key]:
        """Every run reused although outdated, as ``(study, id)``."""
        for study, ids in self.kept.items():
            for rid in ids:
                yield study, rid

    def lines(self) -> list[str]:
        """Several lines for a terminal: files, then each study's outdated runs."""
        out = [f"{name} changed" for name in self.files()]
        for title, group in (("outdated", self.direct), ("descending from them", self.descendants)):
            for study, ids in group.items():
                out.append(f"  {study}: {len(ids)} run(s) {title}: {_ids(ids)}")
        return out


@dataclass
class OutdatedCount:
    """How many runs of one run name are outdated, from the studies' counters: no run is read.

    What ``motoko status`` shows for a run name too big to read
    (:mod:`motoko.study.outdated_counts`). It counts the runs whose own
    study files changed; the runs descending from them are not counted
    (that needs every run's parents: ``motoko run FILE --dry-run``).

    Attributes:
        run_name: The run name counted.
        direct: Study → how many of its runs are outdated.
        kept: Study → how many were reused although outdated (``--keep-outdated``).
        folders: Study → its folder, as the user sees it.
    """

    run_name: str
    direct: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many runs are outdated (not counting their descendants)."""
        return sum(self.direct.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def runs(self) -> Iterator[Key]:
        """No run is known by id: the counts do not say which."""
        return iter(())

    def files(self) -> list[str]:
        """The folders of the studies whose files changed (which files, the runs would tell)."""
        return [self.folders.get(study, study) for study in self.direct]

    def kept_counts(self) -> dict[str, int]:
        """Study → how many of its runs were reused although outdated."""
        return dict(self.kept)

    def kept_runs(self) -> Iterator[Key]:
        """No run is known by id: the counts do not say which."""
        return iter(())

    def summary(self) -> str:
        """One line: how many runs are outdated, per study."""
        where = ", ".join(f"{n} of {study}" for study, n in self.direct.items())
        return (
            f"{self.total} finished run(s) of {self.run_name} are outdated: files of {', '.join(self.files())} "
            f"changed ({where}; runs descending from them not counted: `motoko run FILE --dry-run` lists them)"
        )


def count_outdated(workflow: Session, run_name: str) -> OutdatedCount | None:
    """Count ``run_name``'s outdated runs from its studies' counters; reads no run.

    Returns None when a study of the workflow keeps no counters (created by
    an older motoko) or holds a fingerprint without a digest: then only
    reading the runs (:func:`find_outdated`) can tell.
    """
    found = OutdatedCount(run_name)
    for name, schema in workflow.schemas.items():
        db = workflow.db_for(name)
        if name not in db.studies():
            continue
        study = db.study(name)
        if study.outdated_counts is None:
            return None
        current = (study_fingerprint(schema) or {}).get("digest")
        for digest, kept_for, runs in counts_of(study, run_name):
            if not digest:
                return None
            if current is None or digest == current:
                continue
            group = found.kept if kept_for == current else found.direct
            group[name] = group.get(name, 0) + runs
    found.folders = {name: relative_folder(workflow, name) for name in found.direct}
    return found


def _ids(ids: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... (+{len(ids) - limit})" if len(ids) > limit else "")


def current_run_names(directory: Path) -> dict[str, str]:
    """Workflow file → the run name ``motoko run`` resumes for it (recorded in .motoko/run-names.json)."""
    try:
        data = json.loads((directory / ".motoko" / "run-names.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def relative_folder(workflow: Session, name: str) -> str:
    """A study's folder, relative to the workflow directory when it is inside it."""
    folder = workflow.schemas[name].folder
    if folder is None:
        return name
    try:
        return str(folder.relative_to(workflow.directory))
    except ValueError:
        return str(folder)


def runs_of(workflow: Session, run_name: str | None) -> Iterator[tuple[str, Run]]:
    """Every run of the workflow's studies in ``run_name`` (all runs for None); reads only."""
    for name in workflow.schemas:
        db = workflow.db_for(name)
        if name not in db.studies():
            continue
        study = db.study(name)
        tree = study.runs if run_name is None else study.by_run_name.get(run_name)
        for run in tree.values() if tree is not None else ():
            yield name, run


def run_name_size(workflow: Session, run_name: str, limit: int) -> int:
    """How many runs ``run_name`` holds over the workflow's studies, counted up to ``limit + 1``.

    Counting stops past ``limit``: the keys of the run-name index are walked
    bucket by bucket, never the runs, so asking costs ``limit`` ids at most.
    """
    total = 0
    for name in workflow.schemas:
        db = workflow.db_for(name)
        if name not in db.studies():
            continue
        tree = db.study(name).by_run_name.get(run_name)
        if tree is not None:
            total += sum(1 for _ in islice(tree.keys(), limit + 1 - total))
        if total > limit:
            break
    return total


def provenance(runs: Iterable[tuple[str, Run]]) -> tuple[nx.DiGraph, dict[Key, Run]]:
    """The parent → child graph of ``runs`` (edges only between the given runs)."""
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    graph = nx.DiGraph()
    found: dict[Key, Run] = {}
    for name, run in runs:
        key = (name, run.id)
        found[key] = run
        graph.add_node(key)
        for parent in run.parents:
            graph.add_edge((str(parent[0]), int(parent[1])), key)
    return graph, found


def find_outdated(workflow: Session, run_name: str | None = None) -> OutdatedReport:
    """The outdated runs of ``run_name`` (default: the workflow's), not yet settled.

    Runs marked ``outdated_kept`` for the current files, or already
    ``rerun_pending``, are not listed. Reads only.
    """
    scope = run_name if run_name is not None else str(workflow.run_name)
    report = OutdatedReport(scope)
    current = {name: study_fingerprint(schema) for name, schema in workflow.schemas.items()}
    graph, runs = provenance(runs_of(workflow, scope))
    direct: list[Key] = []
    for key, run in runs.items():
        fingerprint = current[key[0]]
        if not is_done(run) or run.rerun_pending is not None or run.superseded is not None:
            continue
        changed = changed_files(run.fingerprint, fingerprint)
        if changed and fingerprint is not None and run.outdated_kept == fingerprint["digest"]:
            report.kept.setdefault(key[0], []).append(key[1])
        elif changed and fingerprint is not None:
            direct.append(key)
            report.changed.setdefault(key[0], [])
            report.changed[key[0]] = sorted(set(report.changed[key[0]]) | set(changed))
            folder = relative_folder(workflow, key[0])
            report.reasons[key] = f"{', '.join(f'{folder}/{name}' for name in changed)} changed"
    for key in sorted(direct):
        report.direct.setdefault(key[0], []).append(key[1])
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    below: set[Key] = set()
    for key in direct:
        for child in nx.descendants(graph, key):
            below_run = runs.get(child)
            if below_run is None or child in report.reasons or not is_done(below_run):
                continue
            if below_run.rerun_pending is None and below_run.superseded is None:
                below.add(child)
                report.reasons[child] = f"descends from an outdated run of {key[0]}"
    for key in sorted(below):
        report.descendants.setdefault(key[0], []).append(key[1])
    report.folders = {name: relative_folder(workflow, name) for name in report.changed}
    return report


def _by_database(workflow: Session, keys: Iterable[Key]) -> dict[Any, dict[str, list[int]]]:
    grouped: dict[Any, dict[str, list[int]]] = {}
    for study, rid in keys:
        grouped.setdefault(workflow.db_for(study), {}).setdefault(study, []).append(rid)
    return grouped


def keep(workflow: Session, report: OutdatedReport) -> int:
    """Record on the directly outdated runs that they are reused as they are.

    Their descendants are not outdated any more once their parents are kept.
    Returns how many runs were marked.
    """
    digests = {name: (study_fingerprint(schema) or {}).get("digest") for name, schema in workflow.schemas.items()}
    keys = [(study, rid) for study, ids in report.direct.items() for rid in ids]
    for db, studies in _by_database(workflow, keys).items():

        def change(db: Any = db, studies: dict[str, list[int]] = studies) -> None:
            for study, ids in studies.items():
                records = db.study(study)
                for rid in ids:
                    records.runs[rid].outdated_kept = digests[study]

        db.transact(change, what="record outdated runs as kept")
    return len(keys)


def mark_pending(workflow: Session, reasons: dict[Key, str]) -> int:
    """Mark runs to be executed again when the workflow next asks for them.

    Returns how many runs were marked.
    """
    for db, studies in _by_database(workflow, reasons).items():

        def change(db: Any = db, studies: dict[str, list[int]] = studies) -> None:
            for study, ids in studies.items():
                records = db.study(study)
                for rid in ids:
                    records.runs[rid].rerun_pending = reasons[(study, rid)]

        db.transact(change, what="mark runs to be run again")
    return len(reasons)


def settle_outdated(workflow: Session, policy: str | None, ask: Callable[[OutdatedReport], str] | None) -> OutdatedReport:
    """Decide, before a resumed workflow creates anything, what happens to its outdated runs.

    Args:
        workflow: The workflow about to run (its studies need not exist yet).
        policy: "rerun" or "keep" from the command line; None uses motoko.yaml's
            ``resume: {outdated: ...}`` (default "ask").
        ask: Asks the user and returns "rerun" or "keep" (on a terminal), or
            None when nobody can be asked.

    Raises:
        OutdatedRunsError: the policy is to ask and nobody can be asked; nothing
            was written.
    """
    report = find_outdated(workflow)
    if not report:
        return report
    choice = policy or workflow.config.resume_outdated
    if choice == "ask":
        if ask is None:
            raise OutdatedRunsError(report.summary(), report.files(), report.total)
        choice = ask(report)
    if choice == "rerun":
        mark_pending(workflow, report.reasons)
    elif choice == "keep":
        keep(workflow, report)
    return report


__all__ = ["POLICIES", "OutdatedCount", "OutdatedReport", "count_outdated", "current_run_names", "find_outdated", "is_done", "keep", "mark_pending", "provenance", "runs_of", "settle_outdated"]

"""Writing an exported dump back into a study database (``motoko import``).

Restoring is the one place that writes a study's internals from outside the
normal life cycle: ids are taken from the dump (counters pointed at them and
put back), and each run reaches its recorded state through
:meth:`Study.transition <motoko.study.container.Study.transition>` like any
other run, so the indexes and columns stay exact. It lives in the study
package, beside the container it writes; the views only read the file
(:func:`motoko.views.export.load_dump`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from motoko.errors import ImportConflict, UnknownNameError
from motoko.study.schema import StudySchema

# Paths through the life cycle from CREATED to each motoko state, so that an
# imported run reaches its state through Study.transition like any other.
_PATHS = {
    "CREATED": (),
    "LAUNCHED": ("LAUNCHED",),
    "RUNNING": ("LAUNCHED", "RUNNING"),
    "FINISHED": ("LAUNCHED", "FINISHED"),
    "FAILED": ("FAILED",),
    "CANCELLED": ("CANCELLED",),
    "LOST": ("LAUNCHED", "LOST"),
}


def import_dump(db: Any, data: Mapping[str, Any], studies: Iterable[str] | None = None) -> dict[str, int]:
    """Write the studies of a dump into ``db`` (a StudyDB); return runs imported per study.

    Ids, states, timestamps, attempts, history, attributes, metadata,
    quantities and parents are kept. Idempotent: importing the same dump
    again changes nothing (runs that exist with the same job are skipped).
    Each study is written in one transaction, after checking every id.

    Raises:
        ImportConflict: when a job or run id exists with different data.
        UnknownNameError: for a study name not in the dump.
    """
    by_name = {s["name"]: s for s in data["studies"]}
    wanted = list(studies) if studies else list(by_name)
    for name in wanted:
        if name not in by_name:
            raise UnknownNameError("study", name, by_name, where="the export file")
    imported = {}
    for name in wanted:
        entry = by_name[name]
        db.create_study(StudySchema.from_dict(entry["schema"]))
        imported[name] = db.transact(lambda entry=entry: _import_study(db, entry), what=f"import study {entry['name']!r}")
    return imported


def _import_study(db: Any, entry: Mapping[str, Any]) -> int:
    study = db.study(entry["name"])
    jobs = {}
    clashes = []
    for job in entry["jobs"]:
        existing = study.jobs.get(job["id"])
        if existing is not None and existing.params != job["params"]:
            clashes.append(job["id"])
        jobs[job["id"]] = job["params"]
    if clashes:
        raise ImportConflict(
            f"study {entry['name']!r} already has jobs {clashes[:10]} with other parameters",
            study=entry["name"], ids=clashes, hint="import into an empty study (`motoko create -y` empties them)",
        )
    new_runs = []
    for record in entry["runs"]:
        existing = study.runs.get(record["id"])
        if existing is None:
            new_runs.append(record)
        elif existing.job_id != record["job_id"]:
            clashes.append(record["id"])
    if clashes:
        raise ImportConflict(
            f"study {entry['name']!r} already has runs {clashes[:10]} of other jobs",
            study=entry["name"], ids=clashes, hint="import into an empty study (`motoko create -y` empties them)",
        )
    for jid in sorted(jobs):
        _restore_job(study, jid, jobs[jid])
    for record in new_runs:
        _restore_run(study, record)
    return len(new_runs)


def _restore_job(study: Any, jid: int, params: dict[str, Any]) -> None:
    if jid in study.jobs:
        return
    counter = study.job_counter
    top = counter.value
    # add_job takes the next id from the counter: point it at the exported id,
    # then put it back past every id in use.
    counter.value = jid - 1
    job = study.add_job(params)
    counter.value = max(top, jid)
    if job.id != jid:
        raise ImportConflict(
            f"study {study.name!r} has these parameters as job {job.id}, the export as job {jid}",
            study=study.name, ids=[jid], hint="import into an empty study (`motoko create -y` empties them)",
        )


def _restore_run(study: Any, record: Mapping[str, Any]) -> None:
    attributes = dict(record["attributes"])
    run_fields = study.schema.run_fields
    run_params = {k: attributes.pop(k) for k in list(attributes) if k in run_fields}
    run_name = attributes.pop("run_name", None)
    counter = study.run_counter
    top = counter.value
    counter.value = record["id"] - 1
    run, _ = study.add_run(study.jobs[record["job_id"]], run_params, run_name, {})
    counter.value = max(top, record["id"])
    attempt = attributes.pop("attempt", 1)
    history = tuple(attributes.pop("history", ()))
    parents = tuple(tuple(p) for p in attributes.pop("parents", ()))
    # The attempt is set after the state: reaching FAILED or LOST with
    # attempts left would requeue the run (the study's retry policy).
    run.attempt = 1 << 30
    state = record["state"]
    for step in _PATHS.get(state, (state,)):
        study.transition(run, step)
    run.attempt = attempt
    run.history = history
    run.parents = parents
    for name, value in attributes.items():
        setattr(run, name, value)
    if record.get("metadata"):
        run.set_metadata(record["metadata"])
    for name, steps in record.get("quantities", {}).items():
        for step, value in steps:
            run.push_quantity(value, int(step), name)

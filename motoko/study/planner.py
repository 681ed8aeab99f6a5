"""Answer a parsed query with a study's indexes, then filter what remains.

A query tree is walked once: every condition the indexes can answer exactly
(state, run_name, run id, job id, and comparisons on scalar job parameters)
becomes a set of run ids; AND intersects, OR unites. What cannot be answered
(free attributes, metadata, negations, regexes on run fields) leaves the
candidate set as it is and marks the plan inexact, so that the remaining
candidates are loaded (prefetched in one round of requests) and checked with
the query's own predicate. An indexed select therefore never loads a run it
does not return.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from BTrees.IIBTree import IITreeSet, intersection, multiunion

from motoko.study.query import And, Compare, Not, Or, Query, TrueNode, parse_query

if TYPE_CHECKING:
    from motoko.study.database import Study, StudyDB
    from motoko.study.records import Run

# Operators answered from a sorted index of values.
_RANGE_OPS = {"=", "<", ">", "<=", ">=", "in"}
_REGEX_OPS = {"~", "~*"}


@dataclass
class Plan:
    """Candidate run ids (None: every run) and whether they are the exact answer."""

    ids: Any  # IITreeSet | None
    exact: bool


def compile_for(study: Study, constraints: Any) -> Query:
    """Parse ``constraints`` against ``study``'s fields (a Query passes through)."""
    if isinstance(constraints, Query):
        return constraints
    schema = study.schema
    return parse_query(constraints, schema.all_job_fields(), schema.all_run_fields())


def select_runs(db: StudyDB, study: Study, constraints: Any) -> list[Run]:
    """Return the runs of ``study`` matching ``constraints``, in id order."""
    query = compile_for(study, constraints)
    plan = plan_query(study, query.root)
    runs_tree = study.runs
    if plan.ids is None:
        candidates: Iterable[int] = runs_tree.keys()
    else:
        candidates = plan.ids
    found = [runs_tree.get(rid) for rid in candidates]
    runs = [r for r in found if r is not None]
    if plan.exact:
        return runs
    needs_jobs = any(f.table == "jobs" for f in query.fields())
    _prefetch(db, runs)
    if needs_jobs:
        jobs_tree = study.jobs
        jobs = {r.job_id: jobs_tree.get(r.job_id) for r in runs}
        _prefetch(db, [j for j in jobs.values() if j is not None])
        return [r for r in runs if query.matches(r, jobs.get(r.job_id))]
    return [r for r in runs if query.matches(r, None)]


def _prefetch(db: StudyDB, objects: list[Any]) -> None:
    """Ask ZEO for every ghost at once instead of one round trip per object."""
    ghosts = [o._p_oid for o in objects if o._p_changed is None and o._p_oid is not None]
    if len(ghosts) > 8:
        db.conn.prefetch(ghosts)


def plan_query(study: Study, node: Any) -> Plan:
    """Return the candidate run ids for a query node."""
    if isinstance(node, TrueNode):
        return Plan(None, True)
    if isinstance(node, Compare):
        ids = _index_lookup(study, node)
        return Plan(None, False) if ids is None else Plan(ids, True)
    if isinstance(node, And):
        return _plan_and(study, node)
    if isinstance(node, Or):
        plans = [plan_query(study, item) for item in node.items]
        if any(p.ids is None for p in plans):
            return Plan(None, False)
        return Plan(multiunion([p.ids for p in plans]), all(p.exact for p in plans))
    if isinstance(node, Not):
        return Plan(None, False)
    return Plan(None, False)


def _plan_and(study: Study, node: And) -> Plan:
    ids = None
    exact = True
    items, merged = _merge_ranges(study, node.items)
    for job_ids in merged:
        runs = study.runs_of_jobs(job_ids)
        ids = runs if ids is None else intersection(ids, runs)
    for item in items:
        plan = plan_query(study, item)
        exact = exact and plan.exact
        if plan.ids is not None:
            ids = plan.ids if ids is None else intersection(ids, plan.ids)
    return Plan(ids, exact)


def _merge_ranges(study: Study, items: tuple[Any, ...]) -> tuple[list[Any], list[Any]]:
    """Answer ``x > a, x < b`` on a job field with one index scan, not two.

    Returns the items left to plan and the job-id sets of merged ranges.
    """
    by_field: dict[str, list[Compare]] = {}
    rest: list[Any] = []
    for item in items:
        if (
            isinstance(item, Compare)
            and item.field.table == "jobs"
            and item.field.name != "id"
            and item.op in (">", ">=", "<", "<=")
            and item.field.name in study.job_values
        ):
            by_field.setdefault(item.field.name, []).append(item)
        else:
            rest.append(item)
    merged = []
    for name, nodes in by_field.items():
        if len(nodes) == 1:
            rest.append(nodes[0])
            continue
        bounds: dict[str, Any] = {}
        for node in nodes:
            for key, value in (_pair_bounds(node.op, node.value) or {}).items():
                if key == "min" and "min" in bounds:
                    value = max(value, bounds["min"])
                elif key == "max" and "max" in bounds:
                    value = min(value, bounds["max"])
                bounds[key] = value
        try:
            merged.append(IITreeSet(j for _, j in study.job_values[name].keys(**bounds)))
        except TypeError:
            rest.extend(nodes)
    return rest, merged


def _index_lookup(study: Study, node: Compare) -> Any:
    """Run ids answering one comparison exactly, or None if no index can."""
    field = node.field
    if field.table == "runs":
        if field.name == "state":
            return _from_mapping(study.by_state, node)
        if field.name == "run_name":
            return _from_mapping(study.by_run_name, node)
        if field.name == "id":
            return _from_keys(study.runs, node)
        if field.name == "job_id":
            jobs = _from_keys(study.job_runs, node)
            return None if jobs is None else study.runs_of_jobs(jobs)
        return None
    if field.table == "jobs":
        if field.name == "id":
            jobs = _from_keys(study.jobs, node)
        else:
            pairs = study.job_values.get(field.name)
            if pairs is None or field.type is None or not field.type.scalar:
                return None
            jobs = _from_pairs(pairs, node)
        return None if jobs is None else study.runs_of_jobs(jobs)
    return None


def _from_mapping(index: Any, node: Compare) -> Any:
    """state / run_name: an OOBTree value → IITreeSet(run ids)."""
    op, value = node.op, node.value
    try:
        if op == "=":
            return IITreeSet(index.get(value) or ())
        if op == "in":
            return multiunion([index[v] for v in value if v in index])
        bounds = _bounds(op, value)
        if bounds is not None:
            return multiunion(list(index.values(**bounds)))
    except TypeError:  # incomparable key types: let the filter decide
        return None
    if op in _REGEX_OPS:
        pattern = _pattern(op, value)
        return multiunion([ids for key, ids in index.items() if pattern.search(str(key))])
    return None


def _from_keys(tree: Any, node: Compare) -> Any:
    """Ids compared directly against a BTree's keys."""
    op, value = node.op, node.value
    if op == "=":
        return IITreeSet([value] if value in tree else [])
    if op == "in":
        return IITreeSet([v for v in value if v in tree])
    bounds = _bounds(op, value)
    if bounds is None:
        return None
    return IITreeSet(tree.keys(**bounds))


# Sentinels around every job id, so (value, id) pairs can bound a value range.
_LOW, _HIGH = -1, 2**31


def _from_pairs(pairs: Any, node: Compare) -> Any:
    """Job ids from an OOTreeSet of (value, job id), for any comparison but negations."""
    op, value = node.op, node.value
    try:
        if op == "=":
            return IITreeSet(j for _, j in pairs.keys(min=(value, _LOW), max=(value, _HIGH)))
        if op == "in":
            return IITreeSet(j for v in value for _, j in pairs.keys(min=(v, _LOW), max=(v, _HIGH)))
        bounds = _pair_bounds(op, value)
        if bounds is not None:
            return IITreeSet(j for _, j in pairs.keys(**bounds))
    except TypeError:
        return None
    if op in _REGEX_OPS:
        pattern = _pattern(op, value)
        seen: dict[Any, bool] = {}
        out = []
        for key, j in pairs:
            hit = seen.get(key)
            if hit is None:
                hit = seen[key] = bool(pattern.search(str(key)))
            if hit:
                out.append(j)
        return IITreeSet(out)
    return None


def _pair_bounds(op: str, value: Any) -> dict[str, Any] | None:
    # The sentinels make the bounds exclusive or inclusive by themselves: no
    # job id is _LOW or _HIGH, so (v, _HIGH) as a minimum skips every (v, id).
    if op == ">":
        return {"min": (value, _HIGH)}
    if op == ">=":
        return {"min": (value, _LOW)}
    if op == "<":
        return {"max": (value, _LOW)}
    if op == "<=":
        return {"max": (value, _HIGH)}
    return None


def _pattern(op: str, value: Any) -> re.Pattern[str]:
    return re.compile(str(value), re.IGNORECASE if op == "~*" else 0)


def _bounds(op: str, value: Any) -> dict[str, Any] | None:
    if op == ">":
        return {"min": value, "excludemin": True}
    if op == ">=":
        return {"min": value}
    if op == "<":
        return {"max": value, "excludemax": True}
    if op == "<=":
        return {"max": value}
    return None

"""Answer a parsed query with a study's indexes, then filter what remains.

A query tree is walked once: every condition the indexes can answer exactly
(state, run_name, run id, job id, and comparisons on scalar job parameters)
becomes a set of run ids; AND intersects, OR unites. What cannot be answered
(free attributes, metadata, negations, regexes on run fields) leaves the
candidate set as it is and marks the plan inexact, so that the remaining
candidates are loaded (prefetched in one round of requests) and checked with
the query's own predicate. An indexed select therefore never loads a run it
does not return.

The state and run-name indexes hold the runs themselves, so a plan answered
by them also knows where to find its runs (``Plan.sources``) without looking
each one up in the study's ``runs`` tree, whose buckets a scattered set of
ids would load one by one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from BTrees.IIBTree import IITreeSet, difference, intersection, multiunion, union
from BTrees.IOBTree import IOBTree

from motoko.study.columns import scan
from motoko.study.constraints import compile_pattern, predicate
from motoko.study.container import Study
from motoko.study.prefetch import prefetch, prefetch_buckets
from motoko.study.query import And, Compare, Not, Or, Query, TrueNode, parse_query
from motoko.study.records import MOTOKO_ATTRIBUTES, Run

# Operators answered from a sorted index of values.
_RANGE_OPS = {"=", "<", ">", "<=", ">=", "in"}
_REGEX_OPS = {"~", "~*"}


@dataclass
class Plan:
    """Candidate run ids (None: every run) and whether they are the exact answer.

    ``sources``, when known, are index trees (run id → run) that together
    hold every candidate.
    """

    ids: Any  # IITreeSet | None
    exact: bool
    sources: list[IOBTree] | None = None


def compile_for(study: Study, constraints: Any) -> Query:
    """Parse ``constraints`` against ``study``'s fields (a Query passes through)."""
    if isinstance(constraints, Query):
        return constraints
    schema = study.schema
    return parse_query(constraints, schema.all_job_fields(), schema.all_run_fields())


def select_runs(study: Study, constraints: Any) -> list[Run]:
    """Return the runs of ``study`` matching ``constraints``, in id order."""
    query = compile_for(study, constraints)
    plan = plan_query(study, query.root)
    if plan.ids is None:
        prefetch_buckets(study.runs)
        runs = list(study.runs.values())
    else:
        if not plan.sources:
            prefetch_buckets(study.runs, keys=list(plan.ids))
        runs = _materialize(plan.ids, plan.sources or [], study.runs)
    # Whoever selected runs reads them next: ask for all of them at once now
    # (ZEO answers in the background) rather than one round trip per run.
    prefetch(runs)
    if plan.exact:
        return runs
    needs_jobs = any(f.table == "jobs" for f in query.fields())
    if needs_jobs:
        jobs_tree = study.jobs
        prefetch_buckets(jobs_tree, keys=sorted({r.job_id for r in runs}))
        jobs = {r.job_id: jobs_tree.get(r.job_id) for r in runs}
        prefetch([j for j in jobs.values() if j is not None])
        return [r for r in runs if query.matches(r, jobs.get(r.job_id))]
    return [r for r in runs if query.matches(r, None)]


def _materialize(ids: Iterable[int], sources: list[IOBTree], runs_tree: IOBTree) -> list[Run]:
    """The runs with these ids, in id order, taken from ``sources`` first."""
    out = []
    for rid in ids:
        run = None
        for source in sources:
            run = source.get(rid)
            if run is not None:
                break
        if run is None:
            run = runs_tree.get(rid)
        if run is not None:
            out.append(run)
    return out


def plan_query(study: Study, node: Any) -> Plan:
    """Return the candidate run ids for a query node."""
    if isinstance(node, TrueNode):
        return Plan(None, True)
    if isinstance(node, Compare):
        sources = _index_sources(study, node)
        if sources is not None:
            return Plan(_ids_of(sources), True, sources)
        column_plan = _column_plan(study, node)
        if column_plan is not None:
            return column_plan
        ids = _index_lookup(study, node)
        return Plan(None, False) if ids is None else Plan(ids, True)
    if isinstance(node, And):
        return _plan_and(study, node)
    if isinstance(node, Or):
        plans = [plan_query(study, item) for item in node.items]
        if any(p.ids is None for p in plans):
            return Plan(None, False)
        sources = None
        if all(p.sources is not None for p in plans):
            sources = [tree for p in plans for tree in p.sources or ()]
        return Plan(multiunion([p.ids for p in plans]), all(p.exact for p in plans), sources)
    if isinstance(node, Not):
        inner = plan_query(study, node.item)
        if inner.exact and inner.ids is not None:
            return Plan(difference(_all_ids(study), inner.ids), True)
        return Plan(None, False)
    return Plan(None, False)


def _all_ids(study: Study) -> IITreeSet:
    prefetch_buckets(study.runs)
    return IITreeSet(study.runs.keys())


def _column_plan(study: Study, node: Compare) -> Plan | None:
    """Answer a comparison on a ``run:`` field or free attribute from its column.

    Exact, unless some runs hold a value the column does not copy (a list, a
    date...): those become candidates, checked run by run.
    """
    field = node.field
    if not (field.table == "free" or (field.table == "runs" and field.name not in MOTOKO_ATTRIBUTES)):
        return None
    columns = getattr(study, "columns", None)
    if columns is None:
        return None
    check, if_missing = predicate(node.op, node.value)
    matching, unsure, present = scan(columns.get(field.name), check)
    ids = union(matching, unsure)
    if if_missing:  # runs without the attribute match too ("runs.x != 3")
        ids = union(ids, difference(_all_ids(study), present))
    return Plan(ids, not len(unsure))


def _plan_and(study: Study, node: And) -> Plan:
    ids = None
    exact = True
    sources: list[IOBTree] | None = None
    items, merged = _merge_ranges(study, node.items)
    for job_ids in merged:
        runs = _runs_of_jobs(study, job_ids)
        ids = runs if ids is None else intersection(ids, runs)
    for item in items:
        plan = plan_query(study, item)
        exact = exact and plan.exact
        if plan.ids is not None:
            ids = plan.ids if ids is None else intersection(ids, plan.ids)
        # Any conjunct's sources hold the intersection; fewer trees is better.
        if plan.sources is not None and (sources is None or len(plan.sources) < len(sources)):
            sources = plan.sources
    return Plan(ids, exact, sources)


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
            pairs = study.job_values[name]
            prefetch_buckets(pairs, low=bounds.get("min"), high=bounds.get("max"))
            merged.append(IITreeSet(j for _, j in pairs.keys(**bounds)))
        except TypeError:
            rest.extend(nodes)
    return rest, merged


def _runs_of_jobs(study: Study, jobs: Any) -> IITreeSet:
    """The ids of the runs of these jobs (their ``job_runs`` buckets fetched at once)."""
    wanted = sorted(jobs)
    prefetch_buckets(study.job_runs, keys=wanted)
    return study.runs_of_jobs(wanted)


def _index_sources(study: Study, node: Compare) -> list[IOBTree] | None:
    """The state / run-name index trees answering one comparison, or None."""
    field = node.field
    if field.table != "runs" or field.name not in ("state", "run_name"):
        return None
    return _from_mapping(study.by_state if field.name == "state" else study.by_run_name, node)


def _ids_of(trees: list[IOBTree]) -> IITreeSet:
    for tree in trees:
        prefetch_buckets(tree)
    if len(trees) == 1:
        return IITreeSet(trees[0].keys())
    return multiunion([IITreeSet(tree.keys()) for tree in trees])


def _index_lookup(study: Study, node: Compare) -> Any:
    """Run ids answering one comparison exactly, or None if no index can."""
    field = node.field
    if field.table == "runs":
        if field.name == "id":
            return _from_keys(study.runs, node)
        if field.name == "job_id":
            jobs = _from_keys(study.job_runs, node)
            return None if jobs is None else _runs_of_jobs(study, jobs)
        return None
    if field.table == "jobs":
        if field.name == "id":
            jobs = _from_keys(study.jobs, node)
        else:
            pairs = study.job_values.get(field.name)
            if pairs is None or field.type is None or not field.type.scalar:
                return None
            jobs = _from_pairs(pairs, node)
        return None if jobs is None else _runs_of_jobs(study, jobs)
    return None


def _from_mapping(index: Any, node: Compare) -> list[IOBTree] | None:
    """state / run_name: the trees (run id → run) of the matching index keys."""
    op, value = node.op, node.value
    try:
        if op == "=":
            tree = index.get(value)
            return [tree] if tree is not None else []
        if op == "in":
            return [index[v] for v in value if v in index]
        bounds = _bounds(op, value)
        if bounds is not None:
            return list(index.values(**bounds))
    except TypeError:  # incomparable key types: let the filter decide
        return None
    if op in _REGEX_OPS:
        pattern = _pattern(op, value)
        return [runs for key, runs in index.items() if pattern.search(str(key))]
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
            prefetch_buckets(pairs, low=(value, _LOW), high=(value, _HIGH))
            return IITreeSet(j for _, j in pairs.keys(min=(value, _LOW), max=(value, _HIGH)))
        if op == "in":
            return IITreeSet(j for v in value for _, j in pairs.keys(min=(v, _LOW), max=(v, _HIGH)))
        bounds = _pair_bounds(op, value)
        if bounds is not None:
            prefetch_buckets(pairs, low=bounds.get("min"), high=bounds.get("max"))
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


def _pattern(op: str, value: Any) -> Any:
    return compile_pattern(str(value), op.endswith("*"))


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

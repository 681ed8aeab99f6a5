"""What the dashboard's JSON endpoints return, read from an open Workflow.

Every function takes the :class:`~motoko.flow.workflow.Workflow` and plain
arguments and returns JSON-ready data; the HTTP server serialises access to
the workflow's connections and begins a fresh transaction before each call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motoko.errors import MotokoError, UnknownNameError
from motoko.flow.task_manager import newest_ids
from motoko.study.prefetch import jobs_by_id, prefetch
from motoko.study.query import Where
from motoko.study.records import Run
from motoko.study.run_files import inside, last_lines
from motoko.study.values import jsonable
from motoko.views.provenance import run_graph, step_states
from motoko.views.provenance import to_json as graph_json
from motoko.views.status import collect_status, error_line
from motoko.views.status import to_json as status_json

log = logging.getLogger(__name__)

#: Bytes of a run's stdout/stderr sent to the page.
TAIL_LINES = 120
#: Points per quantity sent to the page (evenly thinned beyond).
MAX_POINTS = 2000
#: Runs drawn in the provenance graph.
MAX_GRAPH_RUNS = 120


def overview(workflow: Any) -> dict[str, Any]:
    """The studies with their counts, the running runs and the latest failures."""
    data = status_json(collect_status(workflow, running=50, failures=10))
    data["workflow"] = str(workflow.config.path)
    data["fields"] = {name: list(tm.schema.job_fields) for name, tm in workflow.task_managers.items()}
    return data


def _study(workflow: Any, name: str) -> str:
    try:
        return str(workflow.config.resolve(name))
    except (UnknownNameError, KeyError):
        raise UnknownNameError("study", name, workflow.task_managers) from None


def runs_table(workflow: Any, study: str, constraints: str = "", *, limit: int = 200, offset: int = 0) -> dict[str, Any]:
    """One page of a study's runs matching ``constraints`` (newest first).

    Raises:
        QueryError: for a malformed constraint (the page shows its message).
    """
    name = _study(workflow, study)
    db = workflow.db_for(name)
    if constraints.strip():
        runs = db.select(name, constraints.strip())
        total = len(runs)
        page = list(reversed(runs))[offset: offset + limit]
    else:
        # Every run: the page is read from the end of the runs tree and the
        # total from the per-state counters, not the whole study (1M runs).
        records = db.study(name)
        total = sum(records.counts().values())
        page = [records.runs[rid] for rid in newest_ids(records.runs, offset + limit)[offset:]]
        prefetch(page)
    jobs = jobs_by_id(db.study(name).jobs, (run.job_id for run in page))
    job_fields = list(workflow.task_managers[name].schema.job_fields)
    columns = ["id", "state", *job_fields, "progress", "machine_name", "run_name", "started", "finished", "error"]
    rows = []
    for run in page:
        job = jobs.get(run.job_id)
        params = job.params if job is not None else {}
        row = [run.id, run.state, *(params.get(f) for f in job_fields), run.progress, run.machine_name,
               run.run_name, run.started or run.launched, run.finished, error_line(run.error)]
        rows.append(jsonable(row))
    return {"study": name, "columns": columns, "job_fields": job_fields, "rows": rows, "total": total,
            "offset": offset, "limit": limit}


def _tail(directory: Path, name: str) -> str | None:
    """The end of a log for the run details panel (None when there is no file inside the run directory)."""
    path = inside(directory, name)
    if path is None:
        return None
    try:
        found, end = last_lines(path, TAIL_LINES)
    except OSError:
        return None
    text = "\n".join(found)
    if end > len(text.encode()) + len(found):  # more came before what is shown
        text = "…\n" + text
    return text


def _series(run: Run, name: str) -> dict[str, Any]:
    quantity = run._quantities[name] if run._quantities is not None else None
    items = list(quantity.steps.items()) if quantity is not None else []
    vector = any(isinstance(v, list) and len(v) > 1 for _, v in items)
    if vector and len(items) == 1:
        values = items[-1][1]
        return {"name": name, "kind": "vector", "x": list(range(len(values))), "y": jsonable(values), "steps": 1}
    if len(items) > MAX_POINTS:
        stride = len(items) / MAX_POINTS
        items = [items[int(i * stride)] for i in range(MAX_POINTS)] + [items[-1]]
    xs, ys = [], []
    for step, value in items:
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            xs.append(step)
            ys.append(value)
    return {"name": name, "kind": "steps", "x": xs, "y": jsonable(ys), "steps": len(items)}


def run_details(workflow: Any, study: str, run_id: int) -> dict[str, Any]:
    """A run's fields, job, parents, quantities (as series) and log tails.

    Raises:
        RunNotFound, UnknownNameError: for a run that does not exist.
    """
    name = _study(workflow, study)
    run = workflow.db_for(name).run(name, run_id)
    fields = run.fields()
    history = fields.pop("history", ())
    logs = {}
    if run.run_path:
        for stream in ("stdout", "stderr"):
            logs[stream] = _tail(Path(run.run_path), stream)
    return {
        "study": name,
        "id": run.id,
        "state": run.state,
        "job": jsonable(run.job.to_dict()),
        "fields": jsonable({k: v for k, v in fields.items() if k not in ("study", "id")}),
        "history": jsonable(list(history)),
        "parents": [f"{s}.{i}" for s, i in run.parents],
        "quantities": [_series(run, q) for q in run.list_quantities()],
        "logs": logs,
    }


def recorded_run_names(directory: Path) -> dict[str, str]:
    """Workflow file → its current run name, as ``motoko run`` recorded them."""
    try:
        data = json.loads((directory / ".motoko" / "run-names.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class StepGraphs:
    """Step graphs of the workflow files ``motoko run`` ran here, loaded once per file version."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Any]] = {}

    def graph(self, file: str) -> Any:
        """The file's step graph (None for an orchestrator without steps).

        Raises:
            MotokoError: when the file cannot be loaded.
        """
        from motoko.flow.dag import build_graph
        from motoko.flow.runner import load_workflow_file

        mtime = Path(file).stat().st_mtime
        cached = self._cache.get(file)
        if cached is None or cached[0] != mtime:
            wf = load_workflow_file(file)
            cached = (mtime, build_graph(wf.steps, file) if wf.steps else None)
            self._cache[file] = cached
        return cached[1].copy() if cached[1] is not None else None

    def describe(self, workflow: Any) -> list[dict[str, Any]]:
        """Every recorded workflow file with its steps coloured by state."""
        out = []
        for file, run_name in sorted(recorded_run_names(workflow.directory).items()):
            entry: dict[str, Any] = {"file": _relative(file, workflow.directory), "run_name": run_name}
            try:
                graph = self.graph(file)
            except (OSError, MotokoError) as exc:
                entry["error"] = str(exc)
                out.append(entry)
                continue
            if graph is None:
                entry["error"] = "an orchestrator: no static step graph"
            else:
                entry.update(graph_json(step_states(workflow, graph, run_name)))
            out.append(entry)
        return out


def _relative(file: str, directory: Path) -> str:
    try:
        return str(Path(file).relative_to(directory))
    except ValueError:
        return file


def dag(workflow: Any, steps: StepGraphs, run_name: str | None = None) -> dict[str, Any]:
    """The step graphs of the recorded workflow files, and the runs' provenance graph.

    The provenance graph shows the runs of ``run_name`` (default: the run
    name of the most recently recorded workflow file, else every run), at
    most :data:`MAX_GRAPH_RUNS` per study.
    """
    workflows = steps.describe(workflow)
    if run_name is None and workflows:
        run_name = workflows[-1]["run_name"]
    constraints = [Where("run_name", "=", run_name)] if run_name else None
    try:
        graph = run_graph(workflow, constraints=constraints, limit=MAX_GRAPH_RUNS)
    except MotokoError as exc:
        log.debug("no provenance graph: %s", exc)
        graph = None
    runs = graph_json(graph) if graph is not None else {"nodes": [], "edges": []}
    runs["run_name"] = run_name
    return {"workflows": workflows, "runs": runs}


def parse_query(query: Mapping[str, list[str]], name: str, default: str = "") -> str:
    """The first value of a query-string parameter."""
    values = query.get(name)
    return values[0] if values else default

"""Graphs with states: the runs' provenance and the steps of a workflow.

The *provenance graph* has one node per run (``"study.id"``) and an edge
``parent → child`` for every parent a run was created from (``parents=`` in
``createTask``), across studies. The *step graph* is the workflow file's DAG
(:func:`motoko.flow.dag.build_graph`) with each step given the state of the
runs it created (runs record the step as their ``event_name``).

Both are networkx DiGraphs whose nodes carry ``state`` and ``label``;
:func:`describe` renders either as text, Mermaid or DOT and
:func:`render_png` draws it (graphviz's ``dot`` when installed, else
matplotlib).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click
import networkx as nx

from motoko.errors import (
    GraphRenderError,  # noqa: F401 (defined there, importable from here)
    MotokoError,
)
from motoko.study.states import ACTIVE, CREATED, FINISHED, STATES

#: Fill colours (light) and border colours (dark) per state, shared by DOT,
#: Mermaid, matplotlib and the dashboard. PENDING: a step that created no run yet.
FILL = {
    "PENDING": "#f1f3f5",
    "CREATED": "#dbe8ff",
    "LAUNCHED": "#d3f3f7",
    "RUNNING": "#fff1c2",
    "FINISHED": "#d3f5dc",
    "FAILED": "#ffd6d6",
    "LOST": "#f5d6f2",
    "CANCELLED": "#e4e6e9",
}
BORDER = {
    "PENDING": "#adb5bd",
    "CREATED": "#3b6fd8",
    "LAUNCHED": "#1c9aa8",
    "RUNNING": "#c98a00",
    "FINISHED": "#2b9348",
    "FAILED": "#d62828",
    "LOST": "#a626a4",
    "CANCELLED": "#6c757d",
}
USER_FILL, USER_BORDER = "#ede3ff", "#7048c8"

#: Terminal colours for text output.
_TERMINAL = {"CREATED": "blue", "LAUNCHED": "cyan", "RUNNING": "yellow", "FINISHED": "green",
             "FAILED": "red", "LOST": "magenta", "CANCELLED": "bright_black"}


def colours(state: str | None) -> tuple[str, str]:
    """``(fill, border)`` colours of a state; user states share one violet."""
    if state is None:
        return FILL["PENDING"], BORDER["PENDING"]
    return FILL.get(state, USER_FILL), BORDER.get(state, USER_BORDER)


# -- building -----------------------------------------------------------------------------


def run_graph(
    workflow: Any,
    studies: Iterable[str] | None = None,
    constraints: Any = None,
    *,
    ancestors: bool = True,
    limit: int | None = None,
) -> nx.DiGraph:
    """The provenance graph of the runs matching ``constraints``.

    Args:
        workflow: An open Workflow.
        studies: Study names (default: every study of motoko.yaml).
        constraints: A constraint string or list, applied in each study.
        ancestors: Also include the runs the selected ones derive from,
            transitively, so that a selected run's lineage is complete.
        limit: At most this many selected runs (the lowest ids per study).

    Nodes are ``"study.id"`` with attributes ``study``, ``id``, ``state``,
    ``label`` and ``params`` (the job's parameters).
    """
    names = [workflow.config.resolve(s) for s in studies] if studies else list(workflow.task_managers)
    graph = nx.DiGraph()
    todo: list[tuple[str, int]] = []
    for name in names:
        runs = workflow.db_for(name).select(name, constraints or None)
        for run in runs[:limit] if limit else runs:
            _add_run(graph, run)
            todo.extend(run.parents)
    seen: set[tuple[str, int]] = set()
    while todo and ancestors:
        key = todo.pop()
        if key in seen or f"{key[0]}.{key[1]}" in graph:
            continue
        seen.add(key)
        run = _find(workflow, *key)
        if run is not None:
            _add_run(graph, run)
            todo.extend(run.parents)
    for node, data in list(graph.nodes(data=True)):
        for parent in data.get("parents", ()):
            pid = f"{parent[0]}.{parent[1]}"
            if pid in graph:
                graph.add_edge(pid, node)
    return graph


def _add_run(graph: nx.DiGraph, run: Any) -> None:
    node = f"{run.study}.{run.id}"
    graph.add_node(
        node,
        study=run.study,
        id=run.id,
        state=run.state,
        label=node,
        params=dict(run.job.params),
        parents=tuple(tuple(p) for p in run.parents),
        progress=run.progress,
        event_name=run.event_name,
    )


def _find(workflow: Any, study: str, rid: int) -> Any:
    if study not in workflow.config.studies:
        return None
    try:
        runs = workflow.db_for(study).study(study).runs
    except MotokoError:
        return None
    return runs.get(int(rid))


def summarise(states: Mapping[str, int]) -> str:
    """One state for a group of runs, the one a person looks for first.

    FAILED or LOST if any run is; else RUNNING while any executes; else
    CREATED while any waits; else FINISHED; a group of runs all in one user
    state takes that state; PENDING for no run at all.
    """
    present = {s for s, n in states.items() if n}
    if not present:
        return "PENDING"
    for state in ("FAILED", "LOST"):
        if state in present:
            return state
    if present & ACTIVE:
        return "RUNNING"
    if CREATED in present:
        return CREATED
    if present == {"CANCELLED"}:
        return "CANCELLED"
    users = present - set(STATES)
    if len(users) == 1 and present == users:
        return next(iter(users))
    return FINISHED


def step_states(workflow: Any, graph: nx.DiGraph, run_name: str | None) -> nx.DiGraph:
    """Annotate a step graph in place with each step's runs and state.

    A step's runs are those of ``run_name`` whose ``event_name`` is the step.
    Each node gets ``counts`` (state → number), ``state`` (see
    :func:`summarise`) and ``label``. Returns the graph.
    """
    counts: dict[str, dict[str, int]] = {name: {} for name in graph}
    for name in workflow.task_managers:
        study = workflow.db_for(name).study(name)
        named = study.by_run_name.get(run_name) if run_name is not None else None
        if named is None:
            continue
        for run in named.values():
            if run.event_name in counts:
                step_counts = counts[run.event_name]
                step_counts[run.state] = step_counts.get(run.state, 0) + 1
    for name, data in graph.nodes(data=True):
        data["counts"] = counts[name]
        data["state"] = summarise(counts[name])
        total = sum(counts[name].values())
        data["label"] = f"{name} ({total} runs)" if total else name
    return graph


def layered_positions(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Left-to-right layout: x is the topological generation, y spreads each layer."""
    positions: dict[str, tuple[float, float]] = {}
    for x, layer in enumerate(nx.topological_generations(graph)):
        ordered = sorted(layer, key=_natural)
        height = len(ordered)
        for y, node in enumerate(ordered):
            positions[node] = (float(x), (height - 1) / 2.0 - y)
    return positions


def _natural(node: Any) -> str:
    """Sort key: ``add.2`` before ``add.10``; step names alphabetically."""
    study, _, rid = str(node).rpartition(".")
    return f"{study}\x00{int(rid):012d}" if study and rid.isdigit() else str(node)


# -- rendering -------------------------------------------------------------------------------


def _state_of(data: Mapping[str, Any]) -> str | None:
    state = data.get("state")
    return str(state) if state is not None else None


def describe(graph: nx.DiGraph, fmt: str = "text", *, name: str = "runs") -> str:
    """Render a graph with states as ``text``, ``mermaid`` or ``dot``.

    Text output is styled with click (colours appear on a terminal only).
    """
    order = [n for layer in nx.topological_generations(graph) for n in sorted(layer, key=_natural)]
    if fmt == "mermaid":
        return _mermaid(graph, order)
    if fmt == "dot":
        return _dot(graph, order, name)
    lines = []
    width = max((len(str(data.get("label", n))) for n, data in graph.nodes(data=True)), default=0)
    for node in order:
        data = graph.nodes[node]
        state = _state_of(data) or ""
        label = str(data.get("label", node)).ljust(width)
        colour = _TERMINAL.get(state)
        shown = (click.style(state, fg=colour) if colour else state) + " " * (9 - len(state))
        parents = sorted(graph.predecessors(node), key=_natural)
        arrow = f"  ← {', '.join(parents)}" if parents else ""
        lines.append(f"{label}  {shown}{arrow}".rstrip())
    return "\n".join(lines)


def _mermaid_id(node: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in str(node))


def _mermaid(graph: nx.DiGraph, order: list[str]) -> str:
    lines = ["graph LR"]
    used: set[str] = set()
    for node in order:
        data = graph.nodes[node]
        state = _state_of(data)
        text = str(data.get("label", node)) + (f"<br/>{state}" if state else "")
        klass = f":::{state.lower()}" if state and state.isidentifier() else ""
        lines.append(f'    {_mermaid_id(node)}["{text}"]{klass}')
        if state and state.isidentifier():
            used.add(state)
    lines += [f"    {_mermaid_id(u)} --> {_mermaid_id(v)}" for u, v in graph.edges]
    for state in sorted(used):
        fill, border = colours(state)
        lines.append(f"    classDef {state.lower()} fill:{fill},stroke:{border},color:#1d2330")
    return "\n".join(lines)


def _dot(graph: nx.DiGraph, order: list[str], name: str) -> str:
    lines = [
        f'digraph "{name}" {{',
        "    rankdir=LR;",
        '    graph [fontname="Helvetica", nodesep=0.25, ranksep=0.6];',
        '    node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.4];',
        '    edge [color="#8a94a6", arrowsize=0.7];',
    ]
    for node in order:
        data = graph.nodes[node]
        state = _state_of(data)
        fill, border = colours(state)
        label = str(data.get("label", node)) + (f"\\n{state}" if state else "")
        lines.append(f'    "{node}" [label="{_dot_escape(label)}", fillcolor="{fill}", color="{border}"];')
    lines += [f'    "{u}" -> "{v}";' for u, v in graph.edges]
    return "\n".join([*lines, "}"])


def _dot_escape(text: str) -> str:
    return text.replace('"', '\\"')


def render_png(graph: nx.DiGraph, path: Path | str, *, engine: str = "auto", title: str | None = None) -> str:
    """Draw ``graph`` to a PNG file; return the engine used.

    Args:
        engine: ``graphviz`` (the ``dot`` program), ``matplotlib``, or
            ``auto``: graphviz when ``dot`` is on PATH, else matplotlib.

    Raises:
        GraphRenderError: for an empty graph or a failing graphviz.
    """
    if graph.number_of_nodes() == 0:
        raise GraphRenderError("there is nothing to draw: the graph has no node", hint="check the constraints")
    dot = shutil.which("dot")
    if engine == "graphviz" or (engine == "auto" and dot):
        if not dot:
            raise GraphRenderError("graphviz's `dot` program is not installed", hint="apt-get install graphviz, or use engine matplotlib")
        text = _dot(graph, list(nx.topological_sort(graph)), title or "graph")
        done = subprocess.run([dot, "-Tpng", "-Gdpi=110", "-o", str(path)], input=text, text=True, capture_output=True, check=False)
        if done.returncode != 0:
            raise GraphRenderError(f"graphviz failed: {done.stderr.strip()[:300]}", hint="use engine matplotlib")
        return "graphviz"
    _matplotlib_png(graph, Path(path), title)
    return "matplotlib"


def _matplotlib_png(graph: nx.DiGraph, path: Path, title: str | None) -> None:
    try:
        import matplotlib
    except ImportError:
        raise GraphRenderError(
            "png needs graphviz's `dot` program or matplotlib, and neither is installed",
            hint="apt-get install graphviz, or pip install matplotlib",
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = layered_positions(graph)
    layers = max((x for x, _ in positions.values()), default=0) + 1
    tallest = max((sum(1 for p in positions.values() if p[0] == x) for x in range(int(layers))), default=1)
    figure, axes = plt.subplots(figsize=(max(4.0, 2.4 * layers), max(2.0, 0.7 * tallest + 1)), dpi=110)
    for u, v in graph.edges:
        (x0, y0), (x1, y1) = positions[u], positions[v]
        axes.annotate("", xy=(x1 - 0.2, y1), xytext=(x0 + 0.2, y0),
                      arrowprops={"arrowstyle": "-|>", "color": "#8a94a6", "lw": 1.1, "shrinkA": 0, "shrinkB": 0})
    for node, (x, y) in positions.items():
        data = graph.nodes[node]
        state = _state_of(data)
        fill, border = colours(state)
        label = str(data.get("label", node)) + (f"\n{state}" if state else "")
        axes.text(x, y, label, ha="center", va="center", fontsize=9, color="#1d2330",
                  bbox={"boxstyle": "round,pad=0.45", "facecolor": fill, "edgecolor": border, "linewidth": 1.4})
    axes.set_xlim(-0.6, layers - 0.4)
    ys = [y for _, y in positions.values()]
    axes.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    axes.axis("off")
    if title:
        axes.set_title(title, fontsize=11, loc="left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def to_json(graph: nx.DiGraph) -> dict[str, Any]:
    """Nodes (with layout positions and colours) and edges, for the dashboard."""
    positions = layered_positions(graph)
    nodes = []
    for node, data in graph.nodes(data=True):
        state = _state_of(data)
        fill, border = colours(state)
        x, y = positions[node]
        nodes.append({
            "id": str(node), "label": str(data.get("label", node)), "state": state, "x": x, "y": y,
            "fill": fill, "border": border, "counts": dict(data.get("counts", {})),
            "study": data.get("study"), "run": data.get("id"), "progress": data.get("progress"),
        })
    return {"nodes": nodes, "edges": [[str(u), str(v)] for u, v in graph.edges]}

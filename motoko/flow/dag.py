"""Steps and their graph: ``@step`` functions → a networkx DiGraph.

A workflow file declares async steps::

    @step
    async def mult(workflow, coefficients=(0.342, -2.31)):
        return await workflow.mult.createTask(x=list(coefficients))

    @step
    async def add(workflow, mult):          # depends on the step `mult`
        ...

A step depends on the steps named by its parameters (their results are passed
in) and on those given with ``after=``. ``workflow`` receives the Workflow;
other parameters come from the command line (``-p name=value``) or their
defaults. The graph is checked when the file is loaded: unknown dependencies
and cycles are refused, naming them, before anything runs. Independent steps
run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ZEO.Exceptions import ClientDisconnected

from motoko.errors import MotokoError, WorkflowError, did_you_mean
from motoko.flow.context import current_event
from motoko.study.blocking import motoko_loop

if TYPE_CHECKING:
    import networkx as nx

_MARK = "__motoko_step__"
_RESERVED = ("workflow",)


@dataclass
class Step:
    """One step: its function, name, and the steps it must wait for."""

    name: str
    func: Callable[..., Any]
    after: tuple[str, ...] = ()
    params: tuple[str, ...] = field(default=())

    def dependencies(self, steps: Iterable[str]) -> list[str]:
        """Steps named by parameters, plus ``after``."""
        known = set(steps)
        return [p for p in self.params if p in known and p != self.name] + [a for a in self.after if a not in self.params]


def step(func: Callable[..., Any] | None = None, *, after: Iterable[str] | str = (), name: str | None = None) -> Any:
    """Declare an async function as a workflow step.

    Args:
        func: The step function (``@step`` without parentheses).
        after: Steps that must finish first although their results are not used.
        name: The step's name (default: the function's name).
    """
    after_names = (after,) if isinstance(after, str) else tuple(after)

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(f):
            raise WorkflowError(f"step {f.__name__!r} must be an async function", hint="write `async def`")
        params = tuple(inspect.signature(f).parameters)
        setattr(f, _MARK, Step(name or f.__name__, f, after_names, params))
        return f

    return mark(func) if func is not None else mark


def steps_of(namespace: Mapping[str, Any]) -> dict[str, Step]:
    """Collect the steps declared in a module namespace, in definition order."""
    out: dict[str, Step] = {}
    for value in namespace.values():
        spec = getattr(value, _MARK, None)
        if isinstance(spec, Step):
            out[spec.name] = spec
    return out


def build_graph(steps: Mapping[str, Step], source: str = "workflow") -> nx.DiGraph:
    """Return the step DAG (edge u → v: v waits for u).

    Raises:
        WorkflowError: for an unknown dependency (with a suggestion) or a cycle
            (naming the steps in it).
    """
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    graph = nx.DiGraph()
    for s in steps.values():
        graph.add_node(s.name, step=s)
    for s in steps.values():
        for dep in s.after:
            if dep not in steps:
                raise WorkflowError(
                    f"step {s.name!r} runs after unknown step {dep!r}",
                    where=source,
                    hint=did_you_mean(dep, steps),
                )
        for dep in s.dependencies(steps):
            graph.add_edge(dep, s.name)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    names = " → ".join([u for u, _ in cycle] + [cycle[0][0]])
    raise WorkflowError(f"the steps form a cycle: {names}", where=source, hint="remove one of these dependencies")


def check_params(steps: Mapping[str, Step], params: Mapping[str, Any], source: str = "workflow") -> None:
    """Refuse, before running, parameters nobody takes and parameters nobody gives.

    Raises:
        WorkflowError: naming the step and the parameter.
    """
    accepted = set()
    for s in steps.values():
        signature = inspect.signature(s.func)
        for pname, p in signature.parameters.items():
            if pname in steps or pname in _RESERVED or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            accepted.add(pname)
            if pname not in params and p.default is p.empty:
                raise WorkflowError(
                    f"step {s.name!r} needs parameter {pname!r}",
                    where=source,
                    hint=f"give it with -p {pname}=VALUE",
                )
    takes_all = any(
        p.kind == p.VAR_KEYWORD for s in steps.values() for p in inspect.signature(s.func).parameters.values()
    )
    for pname in params:
        if pname not in accepted and not takes_all:
            raise WorkflowError(f"no step takes parameter {pname!r}", where=source, hint=did_you_mean(pname, accepted))


async def run_steps(
    graph: nx.DiGraph, workflow: Any, params: Mapping[str, Any], on_step: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """Run every step as soon as its dependencies are done; return results by name.

    The first step to raise cancels the others and its exception propagates.
    """
    results: dict[str, Any] = {}
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def run_one(name: str) -> Any:
        s: Step = graph.nodes[name]["step"]
        await asyncio.gather(*(tasks[d] for d in graph.predecessors(name)))
        kwargs = _arguments(s, graph, workflow, params, results)
        token = current_event.set(name)
        if on_step:
            on_step(name, "started")
        try:
            result = await s.func(**kwargs)
        except BaseException:
            current_event.reset(token)
            # Save what the step changed, but never hide why it failed (e.g.
            # behind a second error of a server that is gone).
            if all(db.connected for db in workflow.databases):
                with contextlib.suppress(MotokoError, ClientDisconnected):
                    workflow.refresh()
            raise
        current_event.reset(token)
        workflow.catch_up()  # commits the step's changes; no round trip for this process's own commits
        results[name] = result
        if on_step:
            on_step(name, "done")
        return result

    # The steps share this loop: a synchronous wait in one would stall them all.
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    with motoko_loop():
        for name in nx.topological_sort(graph):
            tasks[name] = asyncio.ensure_future(run_one(name))
        try:
            await asyncio.gather(*tasks.values())
        except BaseException:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            raise
    return results


def _arguments(s: Step, graph: nx.DiGraph, workflow: Any, params: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    signature = inspect.signature(s.func)
    for pname, p in signature.parameters.items():
        if pname == "workflow":
            kwargs[pname] = workflow
        elif pname in results and pname in graph:
            kwargs[pname] = results[pname]
        elif pname in params:
            kwargs[pname] = params[pname]
        elif p.kind == p.VAR_KEYWORD:
            kwargs.update({k: v for k, v in params.items() if k not in kwargs})
    return kwargs


def describe(graph: nx.DiGraph, fmt: str = "text") -> str:
    """Render the step graph as text, Mermaid or DOT."""
    import networkx as nx  # ~70 ms: imported where a graph is built, not by every CLI command
    order = list(nx.topological_sort(graph))
    if fmt == "mermaid":
        lines = ["graph TD"]
        lines += [f"    {n}[{n}]" for n in order]
        lines += [f"    {u} --> {v}" for u, v in graph.edges]
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph workflow {", "    rankdir=LR;"]
        lines += [f'    "{n}";' for n in order]
        lines += [f'    "{u}" -> "{v}";' for u, v in graph.edges]
        return "\n".join([*lines, "}"])
    out = []
    for n in order:
        deps = sorted(graph.predecessors(n))
        out.append(f"{n}" + (f"  ← {', '.join(deps)}" if deps else ""))
    return "\n".join(out)

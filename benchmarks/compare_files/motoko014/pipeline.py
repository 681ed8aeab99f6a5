"""The example pipeline (mult → add → norm → mult) as a motoko 0.1.4 orchestrator.

Written for the comparison benchmark in the async-routine style of motoko
0.1.4's README: each stage creates one run per upstream run and awaits them
all (0.1.4's ``RunList`` polls every 2 s). Run by ``benchmarks/compare.py``
inside a workflow directory with ``motoko orchestrator start --run_name NAME``.
Writes ``result.json`` (final values, wall-clock marks) next to motoko.yaml.
"""

import json
import os
import time

from motoko.task_manager import RunList


async def forward(task_manager, upstream, **fixed):
    """One run of task_manager per upstream run, fed with its y; wait for all."""
    created = []
    for run, _job in upstream:
        created += task_manager.createTask(x=list(run.y), **fixed).runs
    return await RunList(created)


async def main(workflow, **params):
    start = time.time()
    mult = await workflow.mult.createTask(a=[0.342, -2.31])
    add = await forward(workflow.add, mult)
    norm = await forward(workflow.norm, add)
    remult = await forward(workflow.mult, norm, a=2.0)
    result = {"start": start, "end": time.time(), "result": [list(run.y) for run, job in remult]}
    with open(os.path.join(workflow.directory, "result.json"), "w") as out:
        json.dump(result, out)
    workflow.finished = True  # ends 0.1.4's event loop (after its next 2 s tick)


def populate_arg_parser(parser):
    pass

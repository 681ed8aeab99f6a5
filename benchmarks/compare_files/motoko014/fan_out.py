"""Fan-out: N trivial runs created at once and awaited (a motoko 0.1.4 orchestrator).

Writes ``result.json`` with the time from createTask to all FINISHED.
"""

import json
import os
import time


async def main(workflow, nruns=100, **params):
    start = time.time()
    created = workflow.trivial.createTask(i=list(range(int(nruns))))
    inserted = time.time()
    await created
    end = time.time()
    result = {"start": start, "inserted": inserted, "end": end, "runs": len(created.runs)}
    with open(os.path.join(workflow.directory, "result.json"), "w") as out:
        json.dump(result, out)
    workflow.finished = True


def populate_arg_parser(parser):
    parser.add_argument("--nruns", type=int, default=100)

"""Hop latency: a chain of dependent single-run steps (a motoko 0.1.4 orchestrator).

Each hop creates one trivial run and awaits it before the next hop starts.
Writes ``result.json`` with, per hop, the time createTask was called and the
time the await returned.
"""

import json
import os
import time


async def main(workflow, hops=10, **params):
    times = []
    for i in range(int(hops)):
        begin = time.time()
        await workflow.trivial.createTask(i=i)
        times.append((begin, time.time()))
    with open(os.path.join(workflow.directory, "result.json"), "w") as out:
        json.dump({"times": times}, out)
    workflow.finished = True


def populate_arg_parser(parser):
    parser.add_argument("--hops", type=int, default=10)

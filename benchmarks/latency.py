"""Hop latency: a chain of steps, each awaiting one trivial run.

    python -m benchmarks.latency [--hops 20] [--pipeline-repeat 3]

Per-hop overhead = time from a step's createTask to its await resolving,
minus the run's own process time (started → finished as the launcher saw
it), for each of ``--hops`` dependent steps; median and p90. A run that ends
within 50 ms of its start is marked RUNNING in its settle's commit, so its
process time reads ~0 and the overhead is the whole hop. Also the wall
time of ``motoko run workflows/pipeline.py`` on a fresh copy of the example
(server start included), and the floor: one ZEO commit reaching another
client (commit + invalidation), measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit, summary, workflow

REPO = Path(__file__).resolve().parents[1]


def chain_file(hops: int) -> str:
    lines = ["import time", "from motoko import step", "TIMES = []", ""]
    for i in range(hops):
        dep = f", hop{i - 1}" if i else ""
        lines += [
            "@step",
            f"async def hop{i}(workflow{dep}):",
            "    start = time.perf_counter()",
            f"    rl = await workflow.hop.createTask(i={i})",
            "    TIMES.append((start, time.perf_counter(), rl.ids[0]))",
            f"    return {i}",
            "",
        ]
    return "\n".join(lines)


def hop_overheads(hops: int) -> dict[str, Any]:
    from motoko.flow.runner import run_file

    with workflow({"hop": ("{i: int}", "#!/bin/bash\nexit 0\n", "")}, "poll: {initial: 1, factor: 2, maximum: 5}\n") as root:
        path = root / "chain.py"
        path.write_text(chain_file(hops))
        start = time.perf_counter()
        outcome = run_file(path)
        wall = time.perf_counter() - start
        times = sys.modules["motoko_workflow_chain"].TIMES  # the module run_file loaded
        from motoko.flow.workflow import Workflow

        wf = Workflow(root, run_name=outcome.run_name)
        own = {}
        for run, _ in wf.hop.select():
            assert run.started is not None and run.finished is not None  # every hop ran
            own[run.id] = (run.finished - run.started).total_seconds()
        wf.close()
    overheads = [(end - begin) - own[rid] for begin, end, rid in times]
    return {"hops": hops, "wall_s": wall, "overhead_s": summary(overheads), "run_process_s": summary(list(own.values()))}


def pipeline_wall(repeat: int) -> dict[str, Any]:
    walls = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            shutil.copy(REPO / "motoko.yaml", root)
            shutil.copytree(REPO / "studies", root / "studies")
            shutil.copytree(REPO / "workflows", root / "workflows")
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "motoko.cli.main", "run", "workflows/pipeline.py"], cwd=root, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            subprocess.run([sys.executable, "-m", "motoko.cli.main", "server", "stop"], cwd=root, capture_output=True)
    return summary(walls)


def commit_floor(repeat: int = 50) -> dict[str, Any]:
    """Time for one small commit in client A to wake client B (the hop floor).

    Also ``cpu_ms_per_commit``: this process's CPU per commit (client A's
    commit and client B's invalidation, both network threads included), the
    part of the floor that is Python on our side rather than the server's.
    """
    from motoko.study.database import StudyDB
    from motoko.study.server import ensure_server

    with workflow({"floor": ("{i: int}", "#!/bin/bash\nexit 0\n", "")}) as root:
        address = ensure_server(root)
        a, b = StudyDB(address), StudyDB(address)
        woke = threading.Event()
        b.feed.subscribe(lambda oids: woke.set())
        samples = []
        used = time.process_time()
        for i in range(repeat):
            woke.clear()
            start = time.perf_counter()
            a.transact(functools.partial(a.conn.root().__setitem__, "floor", i))
            woke.wait(5)
            samples.append(time.perf_counter() - start)
        used = time.process_time() - used
        a.close()
        b.close()
    return {**summary(samples), "cpu_ms_per_commit": round(1000 * used / repeat, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hops", type=int, default=20)
    parser.add_argument("--pipeline-repeat", type=int, default=3)
    args = parser.parse_args()
    chain = hop_overheads(args.hops)
    emit({
        "benchmark": "latency",
        "chain": chain,
        "pipeline_wall_s": pipeline_wall(args.pipeline_repeat),
        "commit_to_other_client_s": commit_floor(),
        "targets": {"per_hop_overhead_median_s": 0.050, "pipeline_wall_s": 5.0},
    })


if __name__ == "__main__":
    main()

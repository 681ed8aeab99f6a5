"""Launcher throughput: N trivial runs from creation to all FINISHED.

    python -m benchmarks.throughput [--runs 1000] [--parallel 2] [--repeat 3]

Compares, in the same run, motoko's local launcher with ``xargs -P`` running
the same number of the same ``launch.sh`` scripts (the physical floor).
Python runs that use the run-side API, and its import cost, are measured by
:mod:`benchmarks.channel` (against bare Python runs under the same launcher).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from typing import Any

from benchmarks.common import emit, scratch, summary, timed, workflow

TRIVIAL = "#!/bin/bash\nexit 0\n"


def motoko_runs(n: int, parallel: int, launch: str, doit: str = "") -> dict[str, Any]:
    """Create n runs and execute them with one local launcher; wall time and runs/s."""
    from motoko.config import load_config
    from motoko.flow.workflow import Workflow
    from motoko.launch.service import build_launcher

    with workflow({"bench": ("{x: int}", launch, doit)}) as root:
        wf = Workflow(root)
        start = time.perf_counter()
        wf.bench.createTask(x=list(range(n)))
        launcher = build_launcher(load_config(root), once=True, max_parallel=parallel)
        report = launcher.serve()
        wall = time.perf_counter() - start
        launcher.db.close()
        wf.refresh()
        finished = wf.bench.select("state = FINISHED")
        count = len(finished)
        wf.close()
    return {"runs": n, "finished": count, "wall_s": wall, "runs_per_s": n / wall, "executed": report.executed}


def xargs_runs(n: int, parallel: int, direct: bool = True) -> dict[str, Any]:
    """The same n scripts run by ``xargs -P`` (no bookkeeping at all).

    ``direct``: one ``bash launch.sh`` process per run, as the issue's target
    is stated; otherwise each runs in its own directory through an
    ``sh -c 'cd ... && exec'`` wrapper (the reference of earlier figures).
    """
    with scratch("xargs-") as tmp:
        paths = []
        for i in range(n):
            folder = tmp / f"run-{i}"
            folder.mkdir()
            script = folder / "launch.sh"
            script.write_text(TRIVIAL)
            script.chmod(0o755)
            paths.append(str(script))
        listing = "\n".join(paths) + "\n"
        wrapper = ["bash"] if direct else ["sh", "-c", 'cd "$(dirname "$0")" && exec "$0"']
        wall, _ = timed(lambda: subprocess.run(["xargs", f"-P{parallel}", "-n1", *wrapper], input=listing, text=True, check=True))
    return {"runs": n, "wall_s": wall, "runs_per_s": n / wall, "direct": direct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trivial, reference = [], []
    for _ in range(args.repeat):
        trivial.append(motoko_runs(args.runs, args.parallel, TRIVIAL))
        reference.append(xargs_runs(args.runs, args.parallel))
    motoko_rate = summary([r["runs_per_s"] for r in trivial])
    xargs_rate = summary([r["runs_per_s"] for r in reference])
    emit({
        "benchmark": "throughput",
        "parallel": args.parallel,
        "trivial_runs": {"motoko": motoko_rate, "xargs": xargs_rate, "samples": trivial},
        "ratio_motoko_to_xargs": motoko_rate["median"] / xargs_rate["median"],
        "targets": {"runs_per_s": 100, "ratio_to_xargs": 0.3},
    })


if __name__ == "__main__":
    main()

"""Study database scale: inserts and selects at N = 10k and 100k runs (1M opt-in).

    python -m benchmarks.db_scale [--sizes 10000 100000] [--chunk 10000] [--million]

For each N, in a fresh database: insert N runs in chunks of ``--chunk`` (one
transaction each; per-chunk times must stay flat, showing O(N log N)), mark
1 % of them FINISHED, then time from a *fresh connection* (cold cache) and
again warm (``warm_s``, the best of three):

* ``state = FINISHED`` (indexed, 1 % matching),
* ``x > A, x < B`` on a job parameter (answered by the job-value index),
* a full filter on a free run attribute (every run loaded and checked).

``cold_s`` is the select itself: it returns the matching runs, whose data is
already on its way (requested in one batch). ``cold_read_s`` adds reading a
field of every returned run, what a table of the results costs. Memory is the
benchmark process's peak RSS; ``server_rss_mb`` the ZEO server's.

``cli`` times the real command line in fresh processes (best of three):
``motoko select`` printing 1,000 runs, ``motoko status``, ``motoko info``,
and ``motoko --version`` (the floor: Python and the CLI's imports).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cache_bytecode, emit, workflow


def _select_times(address: str, query: str, repeat: int = 3) -> dict[str, Any]:
    import motoko.study.planner  # noqa: F401 (imported once, not timed in the first select)
    from motoko.study.database import StudyDB

    db = StudyDB(address)
    start = time.perf_counter()
    runs = db.select("scale", query)
    cold = time.perf_counter() - start
    for run in runs:
        run.exit_code  # noqa: B018 (reading is what is timed)
    cold_read = time.perf_counter() - start
    count = len(runs)
    warm = []
    for _ in range(repeat):
        start = time.perf_counter()
        db.select("scale", query)
        warm.append(time.perf_counter() - start)
    db.close()
    return {"query": query, "matches": count, "cold_s": cold, "cold_read_s": cold_read, "warm_s": min(warm)}


def measure(n: int, chunk: int) -> dict[str, Any]:
    from motoko.flow.workflow import Workflow
    from motoko.study.records import FINISHED, LAUNCHED

    with workflow({"scale": ("{x: float, name: str}", "#!/bin/bash\nexit 0\n", "")}) as root:
        wf = Workflow(root)
        db = wf.db_for("scale")
        chunks = []
        start_all = time.perf_counter()
        for first in range(0, n, chunk):
            points = [{"x": float(i), "name": f"n{i % 100}"} for i in range(first, min(n, first + chunk))]
            start = time.perf_counter()
            db.insert("scale", points, {}, run_name="bench")
            chunks.append(time.perf_counter() - start)
        insert_s = time.perf_counter() - start_all

        def finish_some() -> None:
            study = db.study("scale")
            for rid in range(1, n + 1, 100):
                run = study.runs[rid]
                study.transition(run, LAUNCHED)
                study.transition(run, FINISHED)
                run.score = rid

        start = time.perf_counter()
        db.transact(finish_some)
        transition_s = time.perf_counter() - start
        address = str(db.address)
        result = {
            "n": n,
            "insert_s": insert_s,
            "insert_runs_per_s": n / insert_s,
            "chunk_s": chunks,
            "chunk_ratio_last_to_first": chunks[-1] / chunks[0],
            "transition_1pct_s": transition_s,
            "select_state": _select_times(address, "state = FINISHED"),
            "select_job_range": _select_times(address, f"x > {n * 0.2}, x < {n * 0.21}"),
            "select_full_filter": _select_times(address, "runs.score > 0"),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cli": _cli_times(root, n),
            "server_rss_mb": _server_rss_mb(root),
        }
        wf.close()
    return result


def _cli_times(root: Path, n: int, repeat: int = 3) -> dict[str, Any]:
    """Wall time of the real CLI (a fresh process each), best of ``repeat``.

    ``version_s`` is the floor: starting Python and importing the CLI,
    from bytecode as an installed package has it (:func:`cache_bytecode`;
    ``bytecode`` says so in the output).
    """
    cache_bytecode(root / ".pycache")  # removed with the benchmark's project
    commands = {
        "select_1000_s": ["select", f"x < {min(n, 1000)}", "--study", "scale"],
        "status_s": ["status"],
        "info_s": ["info"],
        "version_s": ["--version"],
    }
    out: dict[str, Any] = {}
    for label, args in commands.items():
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "motoko.cli.main", *args], cwd=root, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                out[label + "_error"] = proc.stderr.strip()[-300:]
        out[label] = min(times)
    return out


def _server_rss_mb(root: Path) -> float | None:
    """Resident memory of the study's ZEO server (from its pid file)."""
    try:
        pid = int((root / ".motoko" / "zeo.pid").read_text().strip())
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--million", action="store_true", help="also measure 1,000,000 runs (minutes; opt-in)")
    args = parser.parse_args()
    sizes = [*args.sizes, *([1_000_000] if args.million and 1_000_000 not in args.sizes else [])]
    results = [measure(n, min(args.chunk, n)) for n in sizes]
    emit({
        "benchmark": "db_scale",
        "results": results,
        "targets": {
            "insert_100k_s": 30, "indexed_select_s": 0.020, "full_filter_100k_s": 1.5,
            "cli_select_1000_and_status_100k_s": 0.5, "cli_select_1000_and_status_1m_s": 1.0, "insert_1m_s": 300,
        },
    })


if __name__ == "__main__":
    main()

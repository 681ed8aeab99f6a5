"""Inserting runs: this motoko against another checkout of it, alternated, in the same run.

    python -m benchmarks.insert_ab --baseline DIR [--runs 100000] [--chunk 10000] [--rounds 2]

``DIR`` holds an older ``motoko`` package (e.g. ``git archive REV motoko benchmarks | tar -x -C DIR``).
Each round inserts ``--runs`` runs in chunks of ``--chunk`` (one transaction
each) into a fresh database, once with the baseline and once with this
tree, each in its own process (``PYTHONPATH``), alternating which goes
first. The machine's load moves between rounds; the ratio within a round
is the figure to trust, and ``cpu_ratio`` (CPU seconds of the inserting
process and of the ZEO server, baseline over this) moves least with load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import emit

HERE = Path(__file__).resolve().parent.parent


def insert_once(n: int, chunk: int) -> dict[str, Any]:
    """Insert ``n`` runs in chunks into a fresh database (in this process); per-chunk seconds."""
    from benchmarks.common import workflow
    from motoko.flow.workflow import Workflow

    with workflow({"scale": ("{x: float, name: str}", "#!/bin/bash\nexit 0\n", "")}) as root:
        wf = Workflow(root)
        db = wf.db_for("scale")
        chunks = []
        cpu, server_cpu = time.process_time(), _server_cpu_s(root)
        for first in range(0, n, chunk):
            points = [{"x": float(i), "name": f"n{i % 100}"} for i in range(first, min(n, first + chunk))]
            start = time.perf_counter()
            db.insert("scale", points, {}, run_name="bench")
            chunks.append(time.perf_counter() - start)
        cpu, server_cpu = time.process_time() - cpu, _server_cpu_s(root) - server_cpu
        wf.close()
    import motoko

    return {"motoko": motoko.__file__, "insert_s": sum(chunks), "client_cpu_s": cpu, "server_cpu_s": server_cpu, "chunk_s": chunks, "chunk_ratio_last_to_first": chunks[-1] / chunks[0]}


def _server_cpu_s(root: Path) -> float:
    """CPU seconds the study's ZEO server used so far (user + system, from /proc)."""
    pid = int((root / ".motoko" / "zeo.pid").read_text().strip())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(path: Path, n: int, chunk: int) -> dict[str, Any]:
    # The script by its path, from the checkout's directory: neither the
    # current directory nor this tree comes before ``path`` on sys.path.
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{HERE}"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one", "--runs", str(n), "--chunk", str(chunk)],
        cwd=path, env=env, capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", type=Path, help="a directory holding the older motoko package")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(insert_once(args.runs, args.chunk)))
        return
    if args.baseline is None:
        parser.error("--baseline DIR is required")
    rounds = []
    for index in range(args.rounds):
        order = [("baseline", args.baseline.resolve()), ("this", HERE)]
        if index % 2:
            order.reverse()
        got: dict[str, Any] = {label: _run(path, args.runs, args.chunk) for label, path in order}
        got["first"] = order[0][0]
        got["speedup"] = got["baseline"]["insert_s"] / got["this"]["insert_s"]
        got["cpu_ratio"] = (got["baseline"]["client_cpu_s"] + got["baseline"]["server_cpu_s"]) / (
            got["this"]["client_cpu_s"] + got["this"]["server_cpu_s"]
        )
        for label in ("baseline", "this"):
            got[label]["chunk_s"] = [round(s, 3) for s in got[label]["chunk_s"]]
        rounds.append(got)
    emit({"benchmark": "insert_ab", "runs": args.runs, "chunk": args.chunk, "rounds": rounds})


if __name__ == "__main__":
    main()

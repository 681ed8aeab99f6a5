"""Pilots against job arrays on the same SLURM, in the same run; prints JSON.

    python -m benchmarks.pilots [--runs 300] [--bundle-size 50] [--max 2] [--cores 4]

Two studies of trivial runs (``launch.sh`` appends the run id to a file and
exits), executed once through job arrays of ``--bundle-size`` (the SLURM
executor) and once through pilots (``executor: pilot``), with the database
served over TCP with TLS and the certificates ``motoko server start
--listen`` makes. Reported per scenario: wall time until every run is
FINISHED, runs/s, how many times each run executed (must be once), and for
pilots, the wall time until the manager exited (pilots left after
``idle_exit``) and whether any pilot was left in the queue.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import emit
from benchmarks.executors import ensure_slurm

TRIVIAL = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_DIR/$MOTOKO_STUDY"\n'


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_workflow(root: Path, name: str, args: argparse.Namespace) -> None:
    for study in ("arrays", "pilots"):
        folder = root / "studies" / study
        folder.mkdir(parents=True)
        (folder / "bd.yaml").write_text(f"study: {study}\njob: {{i: int}}\nconfig_files: []\n")
        (folder / "launch.sh").write_text(TRIVIAL)
        (folder / "launch.sh").chmod(0o755)
    (root / "motoko.yaml").write_text(
        "task_managers:\n  arrays:\n  pilots:\n"
        f"launcher:\n  poll: 0.5\n  heartbeat: 5\n  bundle_size: {args.bundle_size}\n"
        f"  pilots: {{name: {name}, max: {args.max}, cores: {args.cores}, time: 600, idle_exit: {args.idle_exit}}}\n"
    )


def _finished_at(address: str, study: str, n: int, started: float, out: dict[str, float]) -> None:
    """Watch the study until every run is FINISHED; record when, and when the first was claimed."""
    from motoko.study.database import StudyDB
    from motoko.study.records import FINISHED

    wall_clock = time.time() - (time.perf_counter() - started)  # the scenario's start, as a date
    db = StudyDB(address)
    try:
        while time.perf_counter() - started < 600:
            db.abort()
            runs = db.study(study)
            if runs.count(FINISHED) >= n:
                out["wall_s"] = time.perf_counter() - started
                launched = [run.launched.timestamp() for run in runs.runs.values() if run.launched]
                ended = [run.finished.timestamp() for run in runs.runs.values() if run.finished]
                if launched and ended:
                    # Until the first claim: scheduler, pilot start-up (python, TLS); then executing.
                    out["first_claim_s"] = min(launched) - wall_clock
                    out["claims_to_last_run_s"] = max(ended) - min(launched)
                return
            time.sleep(0.05)
    finally:
        db.close()


def scenario(root: Path, address: str, study: str, executor: str, n: int) -> dict[str, Any]:
    from motoko.config import load_config
    from motoko.launch.service import build_launcher
    from motoko.study.database import StudyDB
    from motoko.study.schema import load_schema

    with StudyDB(address) as db:
        db.create_study(load_schema(root / "studies" / study))
        db.insert(study, [{"i": i} for i in range(n)], {}, run_name="bench")
    config = load_config(root)
    started = time.perf_counter()
    done: dict[str, float] = {}
    watcher = threading.Thread(target=_finished_at, args=(address, study, n, started, done))
    watcher.start()
    launcher = build_launcher(config, study=study, executor=executor, once=True)
    try:
        launcher.serve()
    finally:
        launcher.db.close()
    exited = time.perf_counter() - started
    watcher.join(600)
    counts = Counter((Path(os.environ["COUNT_DIR"]) / study).read_text().split())
    wall = done.get("wall_s")
    return {
        "runs": n,
        "executor": executor,
        "wall_s": round(wall, 2) if wall else None,
        "first_claim_s": round(done["first_claim_s"], 2) if "first_claim_s" in done else None,
        "claims_to_last_run_s": round(done["claims_to_last_run_s"], 2) if "claims_to_last_run_s" in done else None,
        "runs_per_s": round(n / wall, 1) if wall else None,
        "exited_s": round(exited, 2),
        "executed_runs": len(counts),
        "executed_more_than_once": sum(1 for c in counts.values() if c > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--bundle-size", type=int, default=50)
    parser.add_argument("--max", type=int, default=2, help="pilots at once")
    parser.add_argument("--cores", type=int, default=4, help="runs per pilot at once")
    parser.add_argument("--idle-exit", type=float, default=2.0)
    args = parser.parse_args()
    problem = ensure_slurm()
    if problem:
        emit({"benchmark": "pilots", "skipped": problem})
        return
    from motoko.study.server import stop_server

    name = f"motoko-bench-pilot-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="motoko-bench-") as tmp:
        root = Path(tmp) / "wf"
        root.mkdir()
        os.environ["MOTOKO_HOME"] = str(Path(tmp) / "home")
        os.environ["COUNT_DIR"] = str(Path(tmp))
        make_workflow(root, name, args)
        port = _port()
        started = subprocess.run(
            [sys.executable, "-m", "motoko.cli.main", "server", "start", "--listen", f"127.0.0.1:{port}"],
            cwd=root, capture_output=True, text=True, check=True,
        )
        address = f"zeo://127.0.0.1:{port}"
        try:
            arrays = scenario(root, address, "arrays", "slurm", args.runs)
            pilots = scenario(root, address, "pilots", "pilot", args.runs)
            left = subprocess.run(["squeue", "--noheader", f"--name={name}", "--states=PENDING,RUNNING"],
                                  capture_output=True, text=True).stdout.split()
        finally:
            ours = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i"], capture_output=True, text=True).stdout.split()
            if ours:
                subprocess.run(["scancel", *ours], check=False)
            stop_server(root)
    speedup = arrays["wall_s"] / pilots["wall_s"] if arrays["wall_s"] and pilots["wall_s"] else None
    emit({
        "benchmark": "pilots",
        "server": started.stdout.strip(),
        "settings": vars(args),
        "job_arrays": arrays,
        "pilots": pilots,
        "speedup_pilots_over_arrays": round(speedup, 1) if speedup else None,
        "pilots_left_in_queue_after_idle_exit": len(left),
        "targets": {"speedup": 10, "executed_more_than_once": 0, "pilots_left": 0},
    })


if __name__ == "__main__":
    main()

"""Pilots against job arrays on the same SLURM, in the same run; prints JSON.

    python -m benchmarks.pilots [--runs 300] [--bundle-size 50] [--max 1] [--cores 8]
                                [--configs 2x4,1x8,...] [--claim-ahead N]

Two studies of trivial runs (``launch.sh`` appends the run id to a file and
exits), executed once through job arrays of ``--bundle-size`` (the SLURM
executor) and once through pilots (``executor: pilot``), with the database
served over TCP with TLS and the certificates ``motoko server start
--listen`` makes. Reported per scenario: wall time until every run is
FINISHED, runs/s, how many times each run executed (must be once), and for
pilots, the wall time until the manager exited (pilots left after
``idle_exit``) and whether any pilot was left in the queue.

Each pilot configuration (``--configs``: ``MAXxCORES[+AHEAD]``, e.g.
``2x4,1x8+32``; default ``--max``x``--cores``) runs on a study of its own,
after the job arrays, and reports its timeline: seconds from the scenario's
start to the first ``sbatch``, to SLURM starting the pilot (the line the
pilot script writes to its log), to the pilot's launcher registering in the
database (python started, imported, connected over TLS), to the first claim,
to the last run settled, to the submitting side seeing every run done, and
to the manager's exit. The speedup is taken against the first configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
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

from benchmarks.common import cache_bytecode, emit
from benchmarks.executors import ensure_slurm

TRIVIAL = '#!/bin/bash\necho "$MOTOKO_RUN_ID" >> "$COUNT_DIR/$MOTOKO_STUDY"\n'


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STUDIES = ("arrays", "pilots")


def make_workflow(root: Path, name: str, args: argparse.Namespace, studies: tuple[str, ...] | list[str] = STUDIES) -> None:
    for study in studies:
        folder = root / "studies" / study
        folder.mkdir(parents=True)
        (folder / "bd.yaml").write_text(f"study: {study}\njob: {{i: int}}\nconfig_files: []\n")
        (folder / "launch.sh").write_text(TRIVIAL)
        (folder / "launch.sh").chmod(0o755)
    configure(root, name, args, studies, args.max, args.cores, args.claim_ahead)


def configure(
    root: Path, name: str, args: argparse.Namespace, studies: tuple[str, ...] | list[str], pilots: int, cores: int, ahead: int | None
) -> None:
    """motoko.yaml for the next scenario (pilots read it when they start)."""
    claim = f"  claim_ahead: {ahead}\n" if ahead is not None else ""
    (root / "motoko.yaml").write_text(
        "task_managers:\n" + "".join(f"  {study}:\n" for study in studies)
        + f"launcher:\n  poll: 0.5\n  heartbeat: 5\n  bundle_size: {args.bundle_size}\n{claim}"
        f"  pilots: {{name: {name}, max: {pilots}, cores: {cores}, time: 600, idle_exit: {args.idle_exit}}}\n"
    )


def _finished_at(address: str, study: str, n: int, started: float, out: dict[str, Any]) -> None:
    """Watch the study until every run is done; record when, and when the first was claimed.

    Done is FINISHED or FAILED: a failed run is reported, not waited for.
    """
    from motoko.study.database import StudyDB
    from motoko.study.records import FAILED, FINISHED

    wall_clock = time.time() - (time.perf_counter() - started)  # the scenario's start, as a date
    out["start_date"] = wall_clock
    db = StudyDB(address)
    try:
        while time.perf_counter() - started < 600:
            db.abort()
            runs = db.study(study)
            if runs.count(FINISHED) + runs.count(FAILED) >= n:
                out["wall_s"] = time.perf_counter() - started
                out["failed"] = runs.count(FAILED)
                launched = [run.launched.timestamp() for run in runs.runs.values() if run.launched]
                ended = [run.finished.timestamp() for run in runs.runs.values() if run.finished]
                if launched and ended:
                    # Until the first claim: scheduler, pilot start-up (python, TLS); then executing.
                    out["first_claim_s"] = min(launched) - wall_clock
                    out["last_settle_s"] = max(ended) - wall_clock
                    out["claims_to_last_run_s"] = max(ended) - min(launched)
                out["registered"] = {
                    str(record.pilot_job): record.started.timestamp() - wall_clock
                    for record in db.launchers().values() if record.pilot_job
                }
                return
            time.sleep(0.02)
    finally:
        db.close()


class _Submissions(logging.Handler):
    """When the pilot manager ran sbatch (its log record), as dates."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.dates: list[tuple[float, list[str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("submitted"):
            ids = re.findall(r"\b\d+\b", record.getMessage().split(":", 1)[1].split("(")[0])
            self.dates.append((record.created, ids))


def _slurm_starts(root: Path) -> dict[str, float]:
    """job id → when SLURM started it, from the line each pilot script writes to its log."""
    starts = {}
    for log_file in (root / ".motoko" / "pilots").glob("pilot-*.out"):
        found = re.search(r"pilot job (\d+) started at ([\d.]+)", log_file.read_text(errors="replace"))
        if found:
            starts[found.group(1)] = float(found.group(2))
    return starts


def _timeline(root: Path, done: dict[str, Any], submissions: _Submissions, exited: float) -> dict[str, Any]:
    """Seconds from the scenario's start to each step of the first pilot (and the span over all)."""
    start = done["start_date"]
    sbatch = [date - start for date, _ in submissions.dates]
    ours = {job for _, ids in submissions.dates for job in ids}
    slurm = {job: date - start for job, date in _slurm_starts(root).items() if job in ours}
    registered = {job: date for job, date in done.get("registered", {}).items() if job in ours}

    def first(values: Any) -> float | None:
        values = list(values)
        return round(min(values), 3) if values else None

    return {
        "sbatch": first(sbatch),
        "slurm_started": first(slurm.values()),
        "registered": first(registered.values()),
        "first_claim": first([done["first_claim_s"]] if "first_claim_s" in done else []),
        "last_settle": first([done["last_settle_s"]] if "last_settle_s" in done else []),
        "seen_done": first([done["wall_s"]] if "wall_s" in done else []),
        "manager_exited": round(exited, 3),
        "pilots": {job: {"slurm_started": round(slurm[job], 3) if job in slurm else None,
                         "registered": round(registered[job], 3) if job in registered else None}
                   for job in sorted(ours)},
    }


def _left(name: str) -> list[str]:
    """Our pilots still queued or running."""
    return subprocess.run(["squeue", "--noheader", f"--name={name}", "--states=PENDING,RUNNING", "--format=%i"],
                          capture_output=True, text=True).stdout.split()


def _wait_node_free(timeout: float = 60.0) -> None:
    """Until no job is queued, running or completing: each scenario starts on an idle node.

    The node's CPUs fit ``max x cores`` pilots only when the previous
    scenario's jobs (array tasks completing, pilots leaving) are gone. After
    ``timeout`` (someone else's jobs) the scenario starts all the same.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True)
        if not out.stdout.split():
            return
        time.sleep(0.1)


def scenario(root: Path, address: str, study: str, executor: str, n: int, name: str) -> dict[str, Any]:
    from motoko.config import load_config
    from motoko.launch.service import build_launcher
    from motoko.study.database import StudyDB
    from motoko.study.schema import load_schema

    _wait_node_free()
    with StudyDB(address) as db:
        db.create_study(load_schema(root / "studies" / study))
        db.insert(study, [{"i": i} for i in range(n)], {}, run_name="bench")
    config = load_config(root)
    submissions = _Submissions()
    pilots_log = logging.getLogger("motoko.launch.pilots")
    pilots_log.setLevel(logging.INFO)
    pilots_log.addHandler(submissions)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done: dict[str, Any] = {}
    watcher = threading.Thread(target=_finished_at, args=(address, study, n, started, done))
    watcher.start()
    try:
        launcher = build_launcher(config, study=study, executor=executor, once=True)
        try:
            launcher.serve()
        finally:
            launcher.db.close()
        exited = time.perf_counter() - started
        watcher.join(600)
    finally:
        pilots_log.removeHandler(submissions)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # What the submitting side's sbatch/squeue calls cost the machine (the runs' own CPU is the pilots').
    commands_cpu = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    counts = Counter((Path(os.environ["COUNT_DIR"]) / study).read_text().split())
    wall = done.get("wall_s")
    result: dict[str, Any] = {
        "runs": n,
        "executor": executor,
        "wall_s": round(wall, 2) if wall else None,
        "first_claim_s": round(done["first_claim_s"], 2) if "first_claim_s" in done else None,
        "claims_to_last_run_s": round(done["claims_to_last_run_s"], 2) if "claims_to_last_run_s" in done else None,
        "runs_per_s": round(n / wall, 1) if wall else None,
        "exited_s": round(exited, 2),
        "executed_runs": len(counts),
        "executed_more_than_once": sum(1 for c in counts.values() if c > 1),
        "failed": done.get("failed"),
        "slurm_commands_cpu_s": round(commands_cpu, 2),
    }
    if executor == "pilot":
        result["pilots_left_in_queue_after_idle_exit"] = len(_left(name))
        result["timeline_s"] = _timeline(root, done, submissions, exited)
    return result


def _configs(text: str | None, args: argparse.Namespace) -> list[tuple[int, int, int | None]]:
    """``MAXxCORES[+AHEAD]`` items → (max, cores, claim_ahead)."""
    if not text:
        return [(args.max, args.cores, args.claim_ahead)]
    out = []
    for item in text.split(","):
        found = re.fullmatch(r"\s*(\d+)x(\d+)(?:\+(\d+))?\s*", item)
        if not found:
            raise SystemExit(f"--configs: {item!r} is not MAXxCORES[+AHEAD], e.g. 2x4 or 1x8+32")
        ahead = found.group(3)
        out.append((int(found.group(1)), int(found.group(2)), int(ahead) if ahead else args.claim_ahead))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--bundle-size", type=int, default=50)
    parser.add_argument("--max", type=int, default=1, help="pilots at once (one per node, all its CPUs: what sites do)")
    parser.add_argument("--cores", type=int, default=8, help="runs per pilot at once (the test node advertises 8 CPUs)")
    parser.add_argument("--claim-ahead", type=int, default=None, help="launcher claim_ahead (default: motoko's)")
    parser.add_argument("--configs", help="pilot configurations MAXxCORES[+AHEAD], comma-separated (e.g. 2x4,1x8+32)")
    parser.add_argument("--no-arrays", action="store_true", help="pilots only (no speedup is reported)")
    parser.add_argument("--idle-exit", type=float, default=2.0)
    parser.add_argument("--compile-on-start", action="store_true",
                        help="pilots compile motoko's modules as they start (no bytecode cache)")
    args = parser.parse_args()
    configs = _configs(args.configs, args)
    problem = ensure_slurm()
    if problem:
        emit({"benchmark": "pilots", "skipped": problem})
        return
    from motoko.study.server import stop_server

    name = f"motoko-bench-pilot-{uuid.uuid4().hex[:6]}"
    studies = ([] if args.no_arrays else ["arrays"]) + [f"pilots{i}" for i in range(len(configs))]
    results = []
    arrays: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="motoko-bench-") as tmp:
        root = Path(tmp) / "wf"
        root.mkdir()
        os.environ["MOTOKO_HOME"] = str(Path(tmp) / "home")
        os.environ["COUNT_DIR"] = str(Path(tmp))
        bytecode = "compiled at each start" if args.compile_on_start else cache_bytecode(Path(tmp) / "pycache")
        make_workflow(root, name, args, studies)
        port = _port()
        started = subprocess.run(
            [sys.executable, "-m", "motoko.cli.main", "server", "start", "--listen", f"127.0.0.1:{port}"],
            cwd=root, capture_output=True, text=True, check=True,
        )
        address = f"zeo://127.0.0.1:{port}"
        try:
            if not args.no_arrays:
                arrays = scenario(root, address, "arrays", "slurm", args.runs, name)
            for i, (pilots, cores, ahead) in enumerate(configs):
                configure(root, name, args, studies, pilots, cores, ahead)
                result = scenario(root, address, f"pilots{i}", "pilot", args.runs, name)
                results.append({"max": pilots, "cores": cores, "claim_ahead": ahead, **result})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # progress: a long run shows as it goes
        finally:
            ours = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i"], capture_output=True, text=True).stdout.split()
            if ours:
                subprocess.run(["scancel", *ours], check=False)
            stop_server(root)
    for result in results:
        if arrays.get("wall_s") and result["wall_s"]:
            result["speedup_over_arrays"] = round(arrays["wall_s"] / result["wall_s"], 1)
    first = results[0]
    emit({
        "benchmark": "pilots",
        "server": started.stdout.strip(),
        "settings": vars(args),
        "pilot_bytecode": bytecode,
        "job_arrays": arrays or None,
        "pilots": first,
        "configurations": results[1:],
        "speedup_pilots_over_arrays": first.get("speedup_over_arrays"),
        "pilots_left_in_queue_after_idle_exit": sum(r["pilots_left_in_queue_after_idle_exit"] for r in results),
        "targets": {"speedup": 10, "executed_more_than_once": 0, "pilots_left": 0},
    })


if __name__ == "__main__":
    main()

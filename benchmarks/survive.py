"""Runs surviving their launcher: launchers killed -9 at random moments; prints JSON.

    python benchmarks/survive.py [--runs 100] [--kills 3] [--only slurm,dask,local] [--seed N]

For each executor, ``--runs`` runs whose ``launch.sh`` works a moment
(0.5-2 s) and then appends its run id to a shared ``done`` file. A launcher
(``motoko launcher start``, a real process) is killed with SIGKILL ``--kills``
times, each at a random moment of its working life (1.5-6 s after its first
cycle), and a new one started each time; the last
one serves until every run ended. Retries are allowed (``retries: 3,
retry_on: [LOST]``), so a run wrongly given up would show as work done
twice. On Dask, a worker is also killed once. Reported per executor:

* ``finished``: runs FINISHED at the end (the target: all of them);
* ``done_once`` / ``done_twice`` / ``never_done``: how many times each
  run's work reached its end (the target: all once);
* ``retried``: runs that needed more than one attempt (work cut short by a
  dead worker or a stopped local process, never completed twice);
* ``adopted``: runs a new launcher took over (from the launchers' logs);
* ``left_in_queue``: our SLURM jobs still queued at the end (target: 0);
* ``seconds``: from the first launcher's start to the last run's end.

SLURM is started with ``tests/engines/start-slurm.sh`` when needed; Dask
with a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1,
stopped at the end. Nothing asserts: the figures are the result.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import emit, workflow  # noqa: E402
from motoko.study.database import StudyDB  # noqa: E402
from motoko.study.records import TERMINAL  # noqa: E402
from motoko.study.schema import load_schema  # noqa: E402
from motoko.study.server import default_address, ensure_server  # noqa: E402

LAUNCH = """#!/bin/bash
sleep "$MOTOKO_PARAM_work"
echo "$MOTOKO_RUN_ID" >> "$SURVIVE_DONE"
"""
CONFIG = (
    "poll: {initial: 0.05, factor: 2, maximum: 0.5}\n"
    "lost_after: 2\n"
    "launcher: {executor: %s, poll: 0.5, heartbeat: 0.5, cancel_grace: 1%s}\n"
)
STUDY_EXTRA = "retries: 3\nretry_on: [LOST]\n"


def _launcher(root: Path, n: int) -> subprocess.Popen[bytes]:
    with open(root / f"launcher-{n}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "motoko.cli.main", "launcher", "start"],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _states(root: Path) -> list[tuple[int, str, int]]:
    with StudyDB(default_address(root)) as db:
        return [(run.id, run.state, run.attempt) for run in db.study("survive").runs.values()]


def _wait_registered(root: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with StudyDB(default_address(root)) as db:
            if len(db.launchers()) >= count:
                return
        time.sleep(0.1)


def _retry_reasons(root: Path) -> dict[str, int]:
    """Why runs were retried: the ended attempts' errors, without their ids and times."""
    with StudyDB(default_address(root)) as db:
        errors = [str(h.get("error") or "").split("; ")[-1] for run in db.study("survive").runs.values() for h in run.history]
    return dict(Counter(errors))


def _scenario(kind: str, runs: int, kills: int, rng: random.Random, extra: str = "", chaos: Any = None) -> dict[str, Any]:
    with workflow({"survive": ("{i: int, work: float}", LAUNCH, "")}, CONFIG % (kind, extra)) as root:
        folder = root / "studies" / "survive"
        (folder / "bd.yaml").write_text((folder / "bd.yaml").read_text() + STUDY_EXTRA)
        done = root / "done"
        os.environ["SURVIVE_DONE"] = str(done)
        db = StudyDB(ensure_server(root))
        schema = load_schema(folder)
        db.create_study(schema)
        points = [{"i": i, "work": round(rng.uniform(0.5, 2.0), 2)} for i in range(runs)]
        db.insert("survive", [schema.coerce_job(p) for p in points], {})
        db.close()
        start = time.monotonic()
        launcher = _launcher(root, 0)
        for n in range(1, kills + 1):
            # A random moment of the launcher's working life (from its first cycle on,
            # which a loaded machine may delay by seconds).
            _wait_registered(root, n)
            time.sleep(rng.uniform(1.5, 6.0))
            if chaos is not None and n == 2:
                chaos()
            os.kill(launcher.pid, signal.SIGKILL)
            launcher.wait()
            launcher = _launcher(root, n)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = _states(root)
            if all(state in TERMINAL for _, state, _ in states):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - start
        launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        counts = Counter(int(x) for x in done.read_text().split()) if done.exists() else Counter()
        logs = "".join(p.read_text(errors="replace") for p in root.glob("launcher-*.log"))
        if os.environ.get("SURVIVE_LOGS"):
            Path(os.environ["SURVIVE_LOGS"]).write_text(logs)
        ids = [rid for rid, _, _ in states]
        return {
            "runs": runs,
            "launchers_killed": kills,
            "finished": sum(state == "FINISHED" for _, state, _ in states),
            "states": dict(Counter(state for _, state, _ in states)),
            "done_once": sum(counts[rid] == 1 for rid in ids),
            "done_twice": sum(counts[rid] > 1 for rid in ids),
            "never_done": sum(counts[rid] == 0 for rid in ids),
            "retried": sum(attempt > 1 for _, _, attempt in states),
            "adopted": logs.count("adopted run survive."),
            "retry_reasons": _retry_reasons(root),
            "seconds": round(seconds, 1),
        }


def slurm(runs: int, kills: int, rng: random.Random) -> dict[str, Any]:
    """100 runs in arrays of 10 on the real SLURM."""
    out = subprocess.run(["bash", str(REPO / "tests/engines/start-slurm.sh")], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            os.environ["SLURM_CONF"] = line.split("=", 1)[1]
    result = _scenario("slurm", runs, kills, rng, ", bundle_size: 10")
    queue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
    result["left_in_queue"] = sum(name.startswith("motoko-survive-") for name in queue)
    return result


def dask(runs: int, kills: int, rng: random.Random) -> dict[str, Any]:
    """A scheduler and two single-thread workers; one worker killed once, restarted."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.dask_{args[0]}", *args[1:]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    def worker() -> subprocess.Popen[bytes]:
        return spawn("worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1")

    try:
        spawn("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        workers = [worker(), worker()]
        time.sleep(3)

        def kill_a_worker() -> None:
            workers[0].kill()
            workers[0].wait()
            workers.append(worker())

        return _scenario("dask", runs, kills, rng, f", scheduler: '{address}'", chaos=kill_a_worker)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def local(runs: int, kills: int, rng: random.Random) -> dict[str, Any]:
    """Four runs at once on this host."""
    return _scenario("local", runs, kills, rng, ", max_parallel: 4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--only", default="slurm,dask,local")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scenarios = {"slurm": slurm, "dask": dask, "local": local}
    result: dict[str, Any] = {"benchmark": "survive", "seed": args.seed}
    for name in args.only.split(","):
        result[name] = scenarios[name](args.runs, args.kills, rng)
    emit(result)


if __name__ == "__main__":
    main()

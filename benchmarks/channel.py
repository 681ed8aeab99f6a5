"""The run channel: what a run's writes cost, through the launcher or the database.

    python -m benchmarks.channel [--runs 60] [--parallel 2] [--concurrent 200] [--seconds 3] [--rounds 3]

Measured side by side in one run:

* ``python_runs``: ``--runs`` Python runs whose ``doIt.py`` calls
  ``current_run()``, pushes one quantity and sets one attribute, through the
  channel and (channel switched off) through the database, against the same
  number of bare ``python doIt.py`` runs under the same launcher and under
  ``xargs -P``. Target: channel / bare ≥ 0.6.
* ``import``: starting Python and importing the run-side API, minus bare
  Python (target ≤ 30 ms), next to importing the database client.
* ``commit_rate``: one writer's small commits per second with no runs, next
  to an idle launcher, then while ``--concurrent`` runs execute under a local
  launcher (each writing its progress every second), over ``--rounds``
  rounds, with the channel; once without it (``--database-concurrent`` runs,
  each a database client); and how many database connections the server
  holds while they execute beyond the benchmark's own (target: 0 run
  processes, rate with runs within 20 % of the rate alone: ``ratio``).
* ``in_process_notice``: how long after a commit returns another client of
  the same process hears of it through ZEO: the most an in-process hop
  notice could save.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import cache_bytecode, emit, summary, timed, workflow

PYTHON_RUN = '#!/bin/bash\nexec "${MOTOKO_PYTHON:-python3}" doIt.py\n'
TRIVIAL = "#!/bin/bash\nexit 0\n"
API_DOIT = """
from motoko import current_run
run, job = current_run()
run.push_quantity(job.x * 2.0, step=0, name="double")
run.y = job.x
"""
BARE_DOIT = "x = 2.0 * 3\n"
HOLD_DOIT = """
import os, time
from motoko import current_run
run, job = current_run()
open(os.path.join({ready!r}, str(job.x)), "w").close()
step = 0
while not os.path.exists({release!r} + str(job.x // {per_round})):  # its round's release
    step += 1
    run.set_progress(min(1.0, step / 1000))
    time.sleep(1.0)
"""
WRITER = """
import sys, time
from motoko.study.database import StudyDB
db = StudyDB(sys.argv[1])
run = next(iter(db.study("writer").runs.values()))
count, deadline = 0, time.monotonic() + float(sys.argv[2])
start = time.perf_counter()
while time.monotonic() < deadline:
    db.transact(lambda: setattr(run, "counter", count))
    count += 1
print(count / (time.perf_counter() - start))
"""


def launch_runs(root: Path, study: str, n: int, parallel: int, *, channel: bool) -> dict[str, Any]:
    """Execute the CREATED runs of ``study`` with one local launcher; wall time and runs/s."""
    from motoko.config import load_config
    from motoko.launch.launcher import Launcher
    from motoko.launch.service import build_launcher

    launcher = build_launcher(load_config(root), study=study, once=True, max_parallel=parallel)
    assert isinstance(launcher, Launcher)  # a local executor: no pilots
    launcher.executor.shares_host = channel  # off: runs fall back to the database
    wall, report = timed(launcher.serve)
    launcher.db.close()
    return {"runs": n, "executed": report.executed, "finished": report.finished, "wall_s": wall, "runs_per_s": n / wall}


def python_runs(n: int, parallel: int, repeat: int) -> dict[str, Any]:
    """Python runs using the run-side API vs bare Python runs, interleaved."""
    from motoko.flow.workflow import Workflow

    samples: dict[str, list[float]] = {"api_channel": [], "api_database": [], "bare": [], "bare_xargs": []}
    studies = {"api": ("{x: int}", PYTHON_RUN, API_DOIT), "bare": ("{x: int}", PYTHON_RUN, BARE_DOIT)}
    for _ in range(repeat):
        with workflow(studies) as root:
            wf = Workflow(root)
            modes = (("api_channel", "api", True), ("bare", "bare", True), ("api_database", "api", False))
            for number, (label, study, channel) in enumerate(modes):
                wf.task_managers[study].createTask(x=list(range(number * n, (number + 1) * n)))
                figures = launch_runs(root, study, n, parallel, channel=channel)
                assert figures["finished"] == n, figures
                samples[label].append(figures["runs_per_s"])
            wf.close()
        samples["bare_xargs"].append(xargs_python(n, parallel))
    rates = {label: summary(values) for label, values in samples.items()}
    bare = rates["bare"]["median"]
    return {
        "runs": n, "parallel": parallel, "runs_per_s": rates,
        "ratio_channel_to_bare": rates["api_channel"]["median"] / bare,
        "ratio_database_to_bare": rates["api_database"]["median"] / bare,
    }


def xargs_python(n: int, parallel: int) -> float:
    """Runs/s of ``n`` bare ``python doIt.py`` started by ``xargs -P``."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "doIt.py"
        script.write_text(BARE_DOIT)
        listing = "\n".join([str(script)] * n) + "\n"
        wall, _ = timed(lambda: subprocess.run(["xargs", f"-P{parallel}", "-n1", sys.executable], input=listing, text=True, check=True))
    return n / wall


def import_cost(repeat: int) -> dict[str, Any]:
    """Seconds to start Python and import the run-side API (and, for reference, the database client).

    Wall time, and the child's CPU time (user + system), which a loaded
    machine disturbs far less.
    """

    def run(code: str) -> tuple[float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    codes = {
        "bare": "pass",
        "run_api": "from motoko import current_run; import motoko.launch.runtime",
        "database_client": "from motoko import current_run; import motoko.study.database",
    }
    wall: dict[str, list[float]] = {label: [] for label in codes}
    cpu: dict[str, list[float]] = {label: [] for label in codes}
    for _ in range(repeat):  # interleaved: load changes affect all alike
        for label, code in codes.items():
            w, c = run(code)
            wall[label].append(w)
            cpu[label].append(c)
    w_med = {label: summary(values)["median"] for label, values in wall.items()}
    c_med = {label: summary(values)["median"] for label, values in cpu.items()}
    return {
        "python_start_s": w_med["bare"],
        "run_api_above_bare_s": w_med["run_api"] - w_med["bare"],
        "database_client_above_bare_s": w_med["database_client"] - w_med["bare"],
        "python_start_cpu_s": c_med["bare"],
        "run_api_above_bare_cpu_s": c_med["run_api"] - c_med["bare"],
        "database_client_above_bare_cpu_s": c_med["database_client"] - c_med["bare"],
    }


def server_connections(root: Path) -> int:
    """Open unix-socket connections of the workflow's ZEO server process (its listener excluded)."""
    pid = int((root / ".motoko" / "zeo.pid").read_text())
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return len(inodes) - 1


def settled_connections(root: Path, seconds: float = 0.5) -> int:
    """The fewest :func:`server_connections` seen over ``seconds``.

    A client that just exited (the writer) stays counted until the server
    reads its end of file, which under load (CI) took longer than the
    moment between the writer's exit and a single count: the fewest over
    half a second leaves such closing connections out, while a run
    process connected to the database stays counted in every reading.
    """
    counts = [server_connections(root)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        counts.append(server_connections(root))
    return min(counts)


def writer_rate(address: str, seconds: float) -> float:
    """Commits/s of one writer process making small commits for ``seconds``."""
    done = subprocess.run([sys.executable, "-c", WRITER, address, str(seconds)], check=True, capture_output=True, text=True)
    return float(done.stdout.strip())


def commit_rate(concurrent: int, seconds: float, rounds: int, *, channel: bool) -> dict[str, Any]:
    """The writer's rate with no launcher, with an idle one, and while ``concurrent`` runs execute.

    Each round measures the writer alone, then next to a launcher with
    nothing to do (a client of the server like any, and told of every
    commit), then while a launcher executes ``concurrent`` runs. A round's
    ratio is its rate with runs over the mean of the rates alone around it
    (before it and before the next round): load from elsewhere shows as
    their spread, and the median over rounds is the figure (one round's
    writer rate alone moved by 10-15 % on this VM).
    """
    from motoko.config import load_config
    from motoko.flow.workflow import Workflow
    from motoko.launch.launcher import Launcher
    from motoko.launch.service import build_launcher
    from motoko.study.server import ensure_server

    alone: list[float] = []
    idle: list[float] = []
    busy: list[float] = []
    connected: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        ready, release = Path(tmp) / "ready", Path(tmp) / "release-"
        ready.mkdir()
        doit = HOLD_DOIT.format(ready=str(ready), release=str(release), per_round=concurrent)
        studies = {"hold": ("{x: int}", PYTHON_RUN, doit), "writer": ("{x: int}", TRIVIAL, ""), "idle": ("{x: int}", TRIVIAL, "")}
        with workflow(studies) as root:
            address = str(ensure_server(root))
            wf = Workflow(root)
            wf.writer.createTask(x=[0])
            for index in range(rounds):
                alone.append(writer_rate(address, seconds))
                own = settled_connections(root)
                waiting = build_launcher(load_config(root), study="idle", max_parallel=1)
                assert isinstance(waiting, Launcher)  # a local executor: no pilots
                serving = threading.Thread(target=waiting.serve)
                serving.start()
                try:
                    time.sleep(0.5)  # connected, registered and asleep
                    idle.append(writer_rate(address, seconds))
                finally:
                    waiting.stop()
                    serving.join()
                    waiting.db.close()
                wf.hold.createTask(x=[index * concurrent + i for i in range(concurrent)])
                executing = threading.Thread(target=launch_runs, args=(root, "hold", concurrent, concurrent), kwargs={"channel": channel})
                executing.start()
                try:
                    deadline = time.monotonic() + 600
                    while len(os.listdir(ready)) < (index + 1) * concurrent and time.monotonic() < deadline:
                        time.sleep(0.1)
                    time.sleep(0.5)
                    busy.append(writer_rate(address, seconds))
                    connected.append(settled_connections(root) - own)
                finally:
                    Path(f"{release}{index}").touch()
                    executing.join()
            alone.append(writer_rate(address, seconds))
            wf.close()
    ratios = [rate / ((alone[k] + alone[k + 1]) / 2) for k, rate in enumerate(busy)]
    return {
        "concurrent_runs": concurrent, "channel": channel, "rounds": rounds,
        "writer_commits_per_s_alone": alone, "writer_commits_per_s_idle_launcher": idle, "writer_commits_per_s_with_runs": busy,
        "ratios": ratios, "ratio": statistics.median(ratios),
        # What the launcher alone costs (a client told of every commit), apart from its runs:
        "ratio_with_runs_to_idle_launcher": statistics.median(b / i for b, i in zip(busy, idle, strict=True)),
        "server_connections_beyond_benchmark": max(connected), "run_processes_connected": max(0, max(connected) - 1),  # the launcher holds one
    }


def echo_after_commit(repeat: int = 100) -> dict[str, Any]:
    """Milliseconds from a commit returning to another client *of the same process* being told.

    This is all an in-process notice (an embedded launcher told of its
    workflow's runs, a handle told of its launcher's outcomes) could save
    over ZEO's own invalidation: negative means the invalidation arrived
    before the committer's commit returned.
    """
    from motoko.study.database import StudyDB
    from motoko.study.server import ensure_server

    with workflow({"echo": ("{i: int}", TRIVIAL, "")}) as root:
        address = ensure_server(root)
        writer, other = StudyDB(address), StudyDB(address)
        told = threading.Event()
        when = [0.0]

        def listener(oids: Any) -> None:
            when[0] = time.perf_counter()
            told.set()

        other.feed.subscribe(listener)
        gaps, commits = [], []
        for i in range(repeat):
            told.clear()
            start = time.perf_counter()
            writer.transact(functools.partial(writer.conn.root().__setitem__, "echo", i))
            done = time.perf_counter()
            told.wait(5)
            gaps.append((when[0] - done) * 1000)
            commits.append((done - start) * 1000)
        writer.close()
        other.close()
    return {"echo_after_commit_ms": summary(gaps), "commit_ms": summary(commits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the commit rate with runs (median)")
    parser.add_argument("--database-concurrent", type=int, default=64, help="runs as database clients (0: skip)")
    emit(measured(**vars(parser.parse_args())))


def measured(
    runs: int = 60, parallel: int = 2, repeat: int = 3, concurrent: int = 200, seconds: float = 3.0, rounds: int = 3,
    database_concurrent: int = 64,
) -> dict[str, Any]:
    """Every figure of the benchmark, its Python runs importing from bytecode (also for :mod:`benchmarks.compare`).

    Each Python run imports the run-side API: from bytecode, as an installed
    package has it (this project's sessions set PYTHONDONTWRITEBYTECODE, and
    every run compiled motoko's modules again: 14 ms instead of 6). The
    bytecode prefix is set in this process's environment, so ``compare``
    calls this in a process of its own: the other tools' venvs never see it.
    """
    args = argparse.Namespace(
        runs=runs, parallel=parallel, repeat=repeat, concurrent=concurrent, seconds=seconds, rounds=rounds,
        database_concurrent=database_concurrent,
    )
    with tempfile.TemporaryDirectory(prefix="motoko-bytecode-") as cache:
        bytecode = cache_bytecode(Path(cache))
        result = measure(args)
    result["bytecode"] = bytecode
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the benchmark, in one dictionary."""
    result: dict[str, Any] = {
        "benchmark": "channel",
        "python_runs": python_runs(args.runs, args.parallel, args.repeat),
        "import": import_cost(max(5, args.repeat * 3)),
        "in_process_notice": echo_after_commit(),
        "commit_rate": {"channel": commit_rate(args.concurrent, args.seconds, args.rounds, channel=True)},
        "targets": {"ratio_channel_to_bare": 0.6, "run_api_above_bare_s": 0.030, "commit_rate_ratio": 0.8, "run_processes_connected": 0},
    }
    if args.database_concurrent:
        result["commit_rate"]["database"] = commit_rate(args.database_concurrent, args.seconds, 1, channel=False)
    return result


if __name__ == "__main__":
    main()

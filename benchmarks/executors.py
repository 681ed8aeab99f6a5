"""Throughput of the SLURM and Dask executors on trivial runs; prints JSON.

    python benchmarks/executors.py [--quick] [--slurm-runs N] [--dask-runs N]

Three figures, each a real launcher (``build_launcher(..., once=True)``)
executing runs whose ``launch.sh`` is ``exit 0``, so that what is measured is
the executor and the scheduler, not the runs:

* SLURM, one job per run (``bundle_size: 1``);
* SLURM, job arrays (``bundle_size: 50``);
* Dask, a LocalCluster of 2 single-threaded workers.

SLURM is started with ``tests/engines/start-slurm.sh`` when it is not
running. The workflow directory is temporary and its database server is
stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from motoko.config import load_config  # noqa: E402
from motoko.launch.service import build_launcher  # noqa: E402
from motoko.study.database import StudyDB  # noqa: E402
from motoko.study.records import FINISHED  # noqa: E402
from motoko.study.schema import load_schema  # noqa: E402
from motoko.study.server import ensure_server, stop_server  # noqa: E402

STUDIES = ("slurm_jobs", "slurm_arrays", "dask_local")


def make_workflow(root: Path) -> None:
    """A workflow with one trivial study per scenario (runs do nothing, fast)."""
    for name in STUDIES:
        folder = root / "studies" / name
        folder.mkdir(parents=True)
        (folder / "bd.yaml").write_text(f"study: {name}\njob: {{i: int}}\nconfig_files: []\n")
        (folder / "launch.sh").write_text("#!/bin/bash\nexit 0\n")
        (folder / "launch.sh").chmod(0o755)
    (root / "motoko.yaml").write_text(
        "task_managers:\n"
        + "".join(f"  {name}:\n" for name in STUDIES)
        + "launcher: {poll: 1, heartbeat: 5, claim_ahead: 64}\n"
    )


def ensure_slurm() -> str | None:
    """Start SLURM if needed; return None when it runs, else why not."""
    script = REPO / "tests" / "engines" / "start-slurm.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return proc.stderr.strip()[-500:] or f"{script} failed"
    for line in proc.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            os.environ["SLURM_CONF"] = line.split("=", 1)[1]
    return None


def measure(root: Path, study: str, n: int, executor: str, **settings: Any) -> dict[str, Any]:
    """Insert ``n`` runs, execute them all with one launcher, return the figures."""
    config = load_config(root)
    for key, value in settings.items():
        setattr(config.launcher, key, value)
    with StudyDB(ensure_server(root)) as db:
        db.create_study(load_schema(root / "studies" / study))
        db.insert(study, [{"i": i} for i in range(n)], {}, run_name="bench")
    launcher = build_launcher(config, study=study, executor=executor, once=True)
    started = time.perf_counter()
    try:
        report = launcher.serve()
    finally:
        launcher.db.close()
    wall = time.perf_counter() - started
    with StudyDB(ensure_server(root)) as db:
        counts = db.study(study).counts()
    return {
        "runs": n,
        "executor": executor,
        **settings,
        "wall_s": round(wall, 2),
        "runs_per_s": round(n / wall, 1),
        "finished": counts.get(FINISHED, 0),
        "other_states": {k: v for k, v in counts.items() if k != FINISHED},
        "launcher_report": vars(report),
    }


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, load, versions."""
    facts: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    try:
        facts["slurm"] = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip()
        facts["slurm_node_cpus"] = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.strip()
    except OSError:
        facts["slurm"] = None
    try:
        import distributed

        facts["dask_distributed"] = distributed.__version__
    except ImportError:
        facts["dask_distributed"] = None
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (50 SLURM, 100 Dask)")
    parser.add_argument("--slurm-runs", type=int)
    parser.add_argument("--dask-runs", type=int)
    parser.add_argument("--bundle-size", type=int, default=50)
    args = parser.parse_args()
    n_slurm = args.slurm_runs or (50 if args.quick else 500)
    n_dask = args.dask_runs or (100 if args.quick else 1000)
    results: dict[str, Any] = {"machine": machine()}
    root = Path(tempfile.mkdtemp(prefix="motoko-bench-")) / "wf"
    root.mkdir()
    make_workflow(root)
    try:
        problem = ensure_slurm()
        if problem:
            results["slurm"] = {"skipped": problem}
        else:
            results["slurm_one_job_per_run"] = measure(root, "slurm_jobs", n_slurm, "slurm", bundle_size=1)
            results["slurm_job_arrays"] = measure(root, "slurm_arrays", n_slurm, "slurm", bundle_size=args.bundle_size)
        results["dask_local_cluster_2_workers"] = measure(root, "dask_local", n_dask, "dask", max_parallel=64)
    finally:
        stop_server(root, grace=5)
    results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["workflow_dir"] = str(root)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

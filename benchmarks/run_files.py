"""What creating a run's files costs, and how much of the fan-out it is; prints JSON.

    python -m benchmarks.run_files [--runs 1000] [--repeat 2]

A local run leaves four new inodes behind: its directory, ``run.json``,
``stdout`` and ``stderr`` (its exit status is a line appended to its
launcher's exit log, no longer an ``exit.<N>`` file). They are made ahead,
as a *spare* directory that staging renames (``motoko.launch.spares``): a
run's start allocates none, but a fan-out that keeps both cores busy
still pays for them. Hard links (the exec file, the attempt fence) make
no inode. ``xargs -P2`` running ``bash launch.sh``, the fan-out's
reference, creates none while timed: its directories and scripts are
made beforehand.

Reported, in one run:

* ``create_us``: CPU microseconds to create an empty file, make a
  directory and make a hard link, on the file system of the temporary
  directory and on ``/dev/shm`` (tmpfs);
* ``fan_out``: motoko's runs/s for ``--runs`` trivial runs (2 at a time),
  with the workflow on each file system, and ``xargs -P2`` on each: the
  ratio to xargs is the fan-out target of issue 14 (>= 0.3).

The same code, the same machine, minutes apart: the difference between the
two file systems is what making inodes costs here. On this project's VM
that cost moves with the disk's recent activity (30-1500 us per file within
one hour), so the disk's figures are only comparable within one run: its
ext4 has no journal, and allocating an inode then skips, one buffer
lookup each, the free inodes deleted in the last seconds
(``recently_deleted`` in the kernel's profile).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import KEEP_TREES, cache_bytecode, emit, machine
from benchmarks.throughput import TRIVIAL, motoko_runs, xargs_runs

TMPFS = "/dev/shm"


def create_costs(where: str, n: int = 500) -> dict[str, float]:
    """CPU microseconds per new empty file, new directory and hard link under ``where``."""
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        root = Path(tmp)
        source = root / "source"
        source.write_text("1\n")

        def cost(make: Any) -> float:
            start = time.process_time()
            for i in range(n):
                make(i)
            return round((time.process_time() - start) / n * 1e6, 1)

        directory = cost(lambda i: os.mkdir(root / f"d{i}"))
        created = cost(lambda i: os.close(os.open(root / f"d{i}" / "f", os.O_CREAT | os.O_WRONLY, 0o644)))
        linked = cost(lambda i: os.link(source, root / f"d{i}" / "l"))
    return {"mkdir": directory, "new_file": created, "hard_link": linked}


def fan_out(where: str, runs: int, repeat: int) -> dict[str, Any]:
    """motoko's and xargs' runs/s with temporary directories under ``where``, taking turns at going first.

    Why in turn: on this project's VM a new inode costs what the machine
    deleted in the seconds before, and each measure deletes its run
    directories when it ends: whoever came first paid for the previous
    clean-up (docs/performance.md).
    """
    saved = tempfile.tempdir
    trees = tempfile.mkdtemp(prefix="motoko-run-files-", dir=where)
    tempfile.tempdir = trees
    os.environ[KEEP_TREES] = "1"  # deleted at the end: see benchmarks.common.scratch
    ours: list[float] = []
    floor: list[float] = []
    try:
        for index in range(repeat):
            for name in ("motoko", "xargs") if index % 2 == 0 else ("xargs", "motoko"):
                if name == "motoko":
                    ours.append(motoko_runs(runs, 2, TRIVIAL)["runs_per_s"])
                else:
                    floor.append(xargs_runs(runs, 2)["runs_per_s"])
    finally:
        tempfile.tempdir = saved
        del os.environ[KEEP_TREES]
        shutil.rmtree(trees, ignore_errors=True)
    return {
        "motoko_runs_per_s": [round(v, 1) for v in ours],
        "xargs_runs_per_s": [round(v, 1) for v in floor],
        "ratio": round(statistics.median(ours) / statistics.median(floor), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    disk = tempfile.gettempdir()
    places = {"temporary directory": disk}
    if os.path.isdir(TMPFS) and os.access(TMPFS, os.W_OK):
        places["tmpfs"] = TMPFS
    with tempfile.TemporaryDirectory() as tmp:
        bytecode = cache_bytecode(Path(tmp))
        out: dict[str, Any] = {"benchmark": "run_files", "bytecode": bytecode, "runs": args.runs}
        out["fan_out"] = {name: fan_out(where, args.runs, args.repeat) for name, where in places.items()}
        out["create_us"] = {name: {"path": where, **create_costs(where)} for name, where in places.items()}
    out["files_per_run"] = {"new_inodes": 4, "new_inodes_at_start": 0, "renames": 1, "hard_links": 2, "appended_lines": 1}
    out["target"] = {"fan_out_ratio": 0.3}
    out["machine"] = machine()
    emit(out)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: temporary workflows and facts.

Benchmarks print JSON; they never assert. Machines here are noisy, so each
script measures its reference (xargs, a bare commit) in the same run and
reports ratios next to the raw figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """Facts a reader needs to judge the figures."""
    return {
        "cores": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


#: Set (to anything) in the environment, child processes included: the
#: temporary trees of :func:`scratch` are left for the caller to delete at
#: the end of the whole benchmark.
KEEP_TREES = "MOTOKO_BENCH_KEEP_TREES"


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary directory, deleted on exit unless :data:`KEEP_TREES` defers that.

    Why defer: on this project's VM (ext4 without a journal) a new inode
    costs more for about half a minute after many were deleted (the kernel
    skips recently deleted inodes one buffer lookup each): 60 us against
    30 us, up to 1.5 ms. A measure that deleted its 4,000 run files made the
    next measure pay for them, and only a tool that makes files while timed
    (motoko; xargs' are made before its timing starts) paid. Tools measured
    in one benchmark therefore keep their trees until its end.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not os.environ.get(KEEP_TREES):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def workflow(studies: dict[str, tuple[str, str, str]], config: str = "") -> Iterator[Path]:
    """A temporary workflow directory; its server is stopped on exit.

    Args:
        studies: name → (job fields as YAML flow mapping, launch.sh text, doIt.py text).
        config: Extra motoko.yaml text.
    """
    from motoko.study.server import stop_server

    with scratch("motoko-bench-") as root:
        lines = ["task_managers:"]
        for name, (job, launch, doit) in studies.items():
            folder = root / "studies" / name
            folder.mkdir(parents=True)
            (folder / "bd.yaml").write_text(f"study: {name}\njob: {job}\nconfig_files: []\n" if not doit else f"study: {name}\njob: {job}\n")
            (folder / "launch.sh").write_text(textwrap.dedent(launch))
            (folder / "launch.sh").chmod(0o755)
            if doit:
                (folder / "doIt.py").write_text(textwrap.dedent(doit))
            lines.append(f"  {name}:")
        (root / "motoko.yaml").write_text("\n".join(lines) + "\n" + textwrap.dedent(config))
        try:
            yield root
        finally:
            stop_server(root)


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def summary(values: list[float]) -> dict[str, float]:
    """Median, min, max and p90 of repeated measurements."""
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1], "p90": p90, "n": len(ordered)}


def emit(result: dict[str, Any]) -> None:
    """Print the result as JSON (the benchmark's only output on stdout)."""
    result.setdefault("machine", machine())
    json.dump(result, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")


def cache_bytecode(prefix: Path) -> str:
    """Compile motoko's modules once, as installing the package does: processes started then load bytecode.

    Why: with PYTHONDONTWRITEBYTECODE set (as in this project's sessions)
    and motoko not installed as a package, every pilot would compile ~100
    modules before it connects (~0.3 s of CPU), and every CLI command
    ~100 ms. The cache lives in the benchmark's temporary directory
    (PYTHONPYCACHEPREFIX, inherited by subprocesses and by pilots through
    sbatch --export=ALL); nothing is written to the source tree.
    """
    os.environ.update(bytecode_environment(prefix))
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return "cached (as an installed package)"


def bytecode_environment(prefix: Path) -> dict[str, str]:
    """Fill ``prefix`` with the bytecode of motoko and all it imports; the variables that make processes use it.

    With the prefix set, Python reads bytecode from it alone, also for the
    standard library and the other packages, whose own ``__pycache__`` it no
    longer sees: so every motoko module is imported once here, which caches
    all they import. Left to the first processes of a measure, eight
    launchers starting at once each compiled asyncio, ZODB, ZEO, click...
    (~0.35 s of CPU each, 2.8 s in all), in whichever scenario went first.
    Modules imported later, inside functions, are cached as first imported.
    Only for motoko's processes: another tool's venv given the prefix would
    compile everything it runs.
    """
    import motoko

    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(motoko.__file__).parent)],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    every_module = (
        "import importlib, pkgutil, motoko\n"
        "for module in pkgutil.walk_packages(motoko.__path__, 'motoko.'):\n"
        "    importlib.import_module(module.name)\n"
    )
    subprocess.run([sys.executable, "-c", every_module], check=True, stdout=subprocess.DEVNULL, env=env)
    return {"PYTHONPYCACHEPREFIX": str(prefix)}

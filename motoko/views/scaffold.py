"""``motoko init DIR``: a workflow directory that runs as is.

It holds one study (``decay``: an exponential decay integrated step by step,
pushing a quantity at every step and reporting progress) and a workflow file
with two steps (sweep the rate, then summarise), so that ``motoko run
workflows/main.py``, ``motoko status``, ``motoko plot amount`` and the
dashboard all have something to show on a new machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from motoko.errors import (
    MotokoError,
    ScaffoldError,  # noqa: F401 (defined there, importable from here)
)


@dataclass
class Scaffolded:
    """What :func:`scaffold` did."""

    directory: Path
    created: list[Path]
    unchanged: list[Path]


_CONFIG = """\
# A motoko workflow: the studies it uses and how runs are launched.
# Try: motoko run workflows/main.py && motoko status
task_managers:
  {study}:                      # the study in studies/{study}
launcher: {{executor: local, max_parallel: 2}}
"""

_BD = """\
# amount(t) for d(amount)/dt = -rate * amount, integrated over `steps` steps
study: {study}
job:
  rate: float        # the decay rate
  steps: int         # number of time steps
job_space:
  steps: 20
"""

_LAUNCH = """\
#!/bin/bash
# Runs doIt.py with the Python interpreter motoko runs under.
set -e
exec "${MOTOKO_PYTHON:-python3}" doIt.py
"""

_DOIT = '''\
"""{study}: integrate d(amount)/dt = -rate * amount with explicit Euler steps."""
from motoko import current_run

run, job = current_run()
amount, dt = 1.0, 0.1
run.push_quantity(amount, step=0, name="amount")
for step in range(1, job.steps + 1):
    amount -= job.rate * amount * dt
    run.push_quantity(amount, step=step, name="amount")
    run.set_progress(step / job.steps)
run.final = amount
'''

_WORKFLOW = '''\
"""Sweep the decay rate, then summarise.

    motoko run workflows/main.py [-p rates=[0.5,1,2]]
"""

from motoko import step


@step
async def simulate(workflow, rates=(0.5, 1.0, 2.0)):
    """One run per rate; waits until they are FINISHED."""
    return await workflow.{study}.createTask(rate=list(rates))


@step
async def summary(workflow, simulate):
    """The amount left at the end, per rate."""
    return {{job.rate: round(run.final, 4) for run, job in simulate}}
'''

_IGNORE = """\
.motoko/
studies/*/BD-*-runs/
"""


def files(study: str = "decay") -> dict[str, str]:
    """The files ``motoko init`` writes, by path relative to the directory."""
    return {
        "motoko.yaml": _CONFIG.format(study=study),
        f"studies/{study}/bd.yaml": _BD.format(study=study),
        f"studies/{study}/launch.sh": _LAUNCH,
        f"studies/{study}/doIt.py": _DOIT.format(study=study),
        "workflows/main.py": _WORKFLOW.format(study=study),
        ".gitignore": _IGNORE,
    }


def scaffold(directory: Path | str, study: str = "decay") -> Scaffolded:
    """Write a runnable workflow into ``directory`` (created if needed).

    Idempotent: files already there with the same content are left alone, so
    running it twice does nothing the second time. Nothing is written when
    any existing file differs.

    Raises:
        ScaffoldError: naming the files that differ.
        MotokoError: for a study name that is not an identifier.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", study):
        raise MotokoError(f"study name {study!r} is not an identifier", hint="use letters, digits and _, e.g. decay")
    root = Path(directory).resolve()
    wanted = {root / rel: text for rel, text in files(study).items()}
    clashes = [p for p, text in wanted.items() if p.exists() and (not p.is_file() or p.read_text() != text)]
    if clashes:
        raise ScaffoldError(clashes, root)
    created, unchanged = [], []
    for path, text in wanted.items():
        if path.exists():
            unchanged.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.name == "launch.sh":
            path.chmod(0o755)
        created.append(path)
    return Scaffolded(root, created, unchanged)

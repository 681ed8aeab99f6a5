"""What the SLURM executor submits: each run's script, the arrays' scripts, their sbatch.

Each attempt of a run gets a small bash script in the run's directory that
exports the run's variables (each value ``shlex``-quoted, so a value is
never shell-interpreted), checks the attempt fence, runs the command and
records its exit status; a bundle of runs becomes one job array whose
task ``i`` runs the ``i``-th run's script (see :mod:`motoko.launch.executors.slurm`).
"""

from __future__ import annotations

import os
import re
import shlex
import time
import uuid
from pathlib import Path

from motoko.launch import attempts
from motoko.launch.executors.base import Launch
from motoko.launch.executors.slurm_jobs import _Task

#: The per-attempt script, written into the run directory (``{attempt}`` filled in).
RUN_SCRIPT = "motoko-slurm.{attempt}.sh"
#: Where array scripts and their SLURM logs go, beside the run directories.
ARRAYS_DIR = "slurm-arrays"
# Not worth exporting into a job: set per process, per host, or read-only in bash.
_NOT_EXPORTED = {
    "_", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "BASHOPTS", "SHELLOPTS", "BASHPID",
    "BASH_VERSINFO", "EUID", "PPID", "UID", "GROUPS",
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _exports(env: dict[str, str]) -> list[str]:
    """``export``/``unset`` lines turning sbatch's environment into the run's.

    sbatch hands the job the launcher's environment (``--export=ALL``), so
    only what differs is written. SLURM's own variables are left alone: the
    job's ``SLURM_JOB_ID`` must be the job's, not the launcher's.
    """
    lines = []
    for name, value in sorted(env.items()):
        if os.environ.get(name) != value and _NAME.match(name) and _exported(name):
            lines.append(f"export {name}={shlex.quote(value)}")
    for name in sorted(os.environ):
        if name not in env and _NAME.match(name) and _exported(name):
            lines.append(f"unset {name}")
    return lines


def _exported(name: str) -> bool:
    return name not in _NOT_EXPORTED and not name.startswith("SLURM_")


def run_script(launch: Launch) -> str:
    """The bash script that runs one attempt of a staged run in its directory on a node.

    It first says it started (``started.<attempt>``, holding its SLURM id),
    then checks the attempt fence: a task whose attempt the run has left
    exits at once. The command runs as a child, not ``exec``-ed, so that the
    script can record its exit status; a job killed by SLURM records none,
    and its SLURM state says why.
    """
    q = shlex.quote
    n = launch.attempt
    started = attempts.started_file(Path("."), n).name
    exit_name = attempts.exit_file(Path("."), n).name
    lines = [
        "#!/bin/bash",
        f"# Written by motoko's SLURM executor: runs {launch.study} run {launch.run_id}, attempt {n}.",
        *_exports(launch.env),
        f"cd -- {q(str(launch.run_dir))} || exit 97",
        'id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}',
        f'printf "%s\n" "${{id:-$SLURM_JOB_ID}}" > {started}.tmp && mv -f {started}.tmp {started}',
        f'if [[ "$(cat {attempts.FENCE_FILE} 2>/dev/null)" != {n} ]]; then',
        f"  rm -f {started}",
        f'  echo "motoko: attempt {n} of {launch.study} run {launch.run_id} is stale (the run moved on): not run" >&2',
        "  exit 0",
        "fi",
        f"{shlex.join(launch.command)} </dev/null >stdout 2>stderr",
        "code=$?",
        f'printf "%d\n" "$code" > {exit_name}.tmp && mv -f {exit_name}.tmp {exit_name}',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def script_path(launch: Launch) -> Path:
    """Where attempt ``launch.attempt``'s script lives."""
    return launch.run_dir / RUN_SCRIPT.format(attempt=launch.attempt)


def _write_run_script(launch: Launch) -> None:
    # The fence first: from now on only this attempt's task may execute here.
    attempts.write_fence(launch.run_dir, launch.attempt)
    path = script_path(launch)
    path.write_text(run_script(launch))
    path.chmod(0o700)


def _sbatch_base(name: str, directory: Path, output: str, nproc: int) -> list[str]:
    base = ["sbatch", "--parsable", f"--job-name={name}", f"--chdir={directory}"]
    base += [f"--output={directory / output}", "--export=ALL"]
    if nproc > 1:
        base.append(f"--ntasks={nproc}")
    return base


def _job_command(task: _Task, options: tuple[str, ...]) -> list[str]:
    """sbatch of one run's script as a plain job (its options after the config's)."""
    launch = task.launch
    base = _sbatch_base(f"motoko-{launch.study}-{launch.run_id}", launch.run_dir, "slurm-%j.out", launch.nproc)
    return [*base, *options, *launch.options, str(script_path(launch))]


def _array_command(tasks: list[_Task], options: tuple[str, ...]) -> list[str]:
    """Write the array script (its manifest of run directories); return its sbatch.

    Task ``i`` of the array runs ``runs[i]``'s script: SLURM_ARRAY_TASK_ID
    picks the run, so one sbatch and one scheduler job carry the bundle.
    """
    first = tasks[0].launch
    directory = first.run_dir.parent / ARRAYS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    manifest = "\n".join(f"  {shlex.quote(str(script_path(t.launch)))}  # {t.launch.study} run {t.launch.run_id}" for t in tasks)
    script = directory / "array.sh"
    script.write_text(
        "#!/bin/bash\n# Written by motoko's SLURM executor: task i of the array runs runs[i].\n"
        f"runs=(\n{manifest}\n)\n"
        'exec bash "${runs[$SLURM_ARRAY_TASK_ID]}"\n'
    )
    for task in tasks:
        task.log_file = directory / "slurm.out"  # renamed per task once the job id is known
    name = f"motoko-{first.study}-x{len(tasks)}"
    base = _sbatch_base(name, directory, "slurm-%A_%a.out", first.nproc)
    # The array range comes last: it is motoko's to set, whatever the options say.
    return [*base, *options, *first.options, f"--array=0-{len(tasks) - 1}", str(script)]

"""Attempt files: how a run directory tells its attempts apart on disk.

A run that is retried executes again in the same directory. Without care, a
task of an earlier attempt still waiting in a scheduler's queue would start
after the retry was submitted and act as the retry (same script, same exit
file), and nobody could tell. So every file an attempt leaves is named by
the attempt, and the directory holds one *fence*:

``.motoko-attempt``
    The attempt the run is at, written before an attempt is submitted. A task
    executes its command only if the fence still names its own attempt: a
    stale task exits at once, without running anything.
``started.<N>``
    Written by attempt N's task when it starts, *before* it reads the fence;
    it holds the task's identity in its executor (a SLURM job id, a Dask
    worker). Whoever moves the fence on (a retry, or a launcher that gives
    attempt N up) writes the fence *first* and then looks for ``started.<N>``:
    of two processes that each write then read, at least one sees the
    other, so either the task stands down or the launcher knows it started.
``submitted.<N>``
    What the executor calls attempt N (a SLURM job id), written as soon as
    the scheduler accepted it: an adopter finds the job even when its
    launcher died before recording the id in the database.
``exit.<N>``
    Attempt N's exit status, written when its command ended. A launcher that
    adopts the runs of a dead launcher settles them from it.
``../.motoko-exits.<launcher id>``
    Where runs of the local executor record their exit status instead: a
    line ``<run id> <attempt> <status> <the sum of the three>`` appended by
    the launcher's run host (:mod:`motoko.launch.run_host`) to its log
    beside the run directories. A new file costs an inode, and on some
    file systems (this project's test machine: ~0.7 ms of CPU) that was a
    sixth of a trivial run's cost; an append costs none. Only one process
    appends to it, so each short line lands whole; one torn by a failed
    write (disk full) fails its sum and is no status, and does not hide
    the next one.

The files are small and written whole; a reader that finds one half-written
treats it as not there yet.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from motoko.launch.links import link_shared

#: The fence: the attempt this run directory belongs to now.
FENCE_FILE = ".motoko-attempt"
#: What a launcher writes into the fence to give an attempt up (``revoked <N>``).
REVOKED = "revoked"


#: Runs a command, records its status in exit.<attempt> (``$0``), and ends as
#: the command did: with its status, or killed by the same signal. The shell
#: catches TERM, INT and HUP with a no-op while the command runs, so that a
#: cancel (TERM to the run's process group) lets the command end its own way
#: and its status is still recorded; the command itself starts with the
#: default handlers (caught signals are reset by exec, unlike ignored ones).
_RECORDER = (
    'trap : TERM INT HUP; c=0; "$@" || c=$?; echo "$c" > "$0"; '
    'if [ "$c" -gt 128 ] && [ "$c" -lt 193 ]; then trap - $((c - 128)) 2>/dev/null; kill -$((c - 128)) $$; fi; '
    'exit "$c"'
)


def recorded(attempt: int, command: Sequence[str]) -> tuple[str, ...]:
    """``command`` run by a tiny ``/bin/sh`` that records its exit status in ``exit.<attempt>``.

    Run in the run directory. The status then survives whoever waited for
    the process (a Dask worker) being killed: only a parent learns a
    process's status, and the shell is that parent. (A local launcher's
    runs have its run host as parent instead: :mod:`motoko.launch.run_host`.)
    """
    return ("/bin/sh", "-c", _RECORDER, f"exit.{attempt}", *command)


#: The name, beside the run directories, of a launcher's exit log (its id follows).
EXIT_LOG = ".motoko-exits"


def exit_log(run_dir: Path, launcher: str) -> Path:
    """The exit log of ``launcher``'s local runs, beside ``run_dir``."""
    return run_dir.parent / f"{EXIT_LOG}.{launcher}"


def read_logged_exit(run_dir: Path, run_id: int, attempt: int, launcher: str) -> int | None:
    """Attempt ``attempt``'s exit status from ``launcher``'s exit log, or None when it has none.

    The whole log is read: this serves adoption after a launcher died, not
    a run's normal end (its launcher learns the status as its parent).
    """
    try:
        data = exit_log(run_dir, launcher).read_bytes()
    except OSError:
        return None
    wanted = (str(run_id).encode(), str(attempt).encode())
    found: int | None = None
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) != 4 or (parts[0], parts[1]) != wanted:
            continue
        try:
            code, total = int(parts[2]), int(parts[3])
        except ValueError:
            continue
        if total == run_id + attempt + code:  # else torn: not a status
            found = code
    return found


def prune_exit_logs(tree: Path, keep: set[str]) -> int:
    """Remove the exit logs under ``tree`` of launchers not in ``keep``; return how many.

    A log serves only the adoption of its launcher's runs still LAUNCHED or
    RUNNING: ``motoko clean`` keeps those of live launchers and of launchers
    that such runs name.
    """
    removed = 0
    prefix = f"{EXIT_LOG}."
    try:
        names = os.listdir(tree)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and name[len(prefix):] not in keep:
            with contextlib.suppress(OSError):
                os.unlink(tree / name)
                removed += 1
    return removed


def recorded_status(run_dir: Path, run_id: int, attempt: int, launcher: str | None = None) -> int | None:
    """The exit status attempt ``attempt`` recorded, or None: its ``exit.<N>``, else ``launcher``'s exit log.

    ``exit.<N>``: runs of SLURM and Dask, and local runs made before the exit log.
    """
    code = read_exit(run_dir, attempt)
    if code is None and launcher:
        code = read_logged_exit(run_dir, run_id, attempt, launcher)
    return code


def exit_file(run_dir: Path, attempt: int) -> Path:
    """Where attempt ``attempt`` records its exit status."""
    return run_dir / f"exit.{attempt}"


def started_file(run_dir: Path, attempt: int) -> Path:
    """Where attempt ``attempt``'s task says that it started, and as what."""
    return run_dir / f"started.{attempt}"


def submitted_file(run_dir: Path, attempt: int) -> Path:
    """Where the executor notes what the scheduler calls attempt ``attempt``."""
    return run_dir / f"submitted.{attempt}"


def write_submitted(run_dir: Path, attempt: int, ident: str) -> None:
    """Note the scheduler's id of attempt ``attempt`` (written whole)."""
    _write(submitted_file(run_dir, attempt), f"{ident}\n")


def read_submitted(run_dir: Path, attempt: int) -> str | None:
    """The scheduler's id of attempt ``attempt`` as noted at submission, or None."""
    try:
        return submitted_file(run_dir, attempt).read_text().strip() or None
    except OSError:
        return None


def write_fence(run_dir: Path, attempt: int, *, fresh: bool = False) -> None:
    """Open the run directory to ``attempt`` alone (called before submitting it).

    The attempt's own stale files (from a submission that never ran) are
    removed, so that nothing answers for this attempt but its own task.
    ``fresh``: the caller created the directory just now, so there are none.
    """
    if not fresh:
        for path in (exit_file(run_dir, attempt), started_file(run_dir, attempt), submitted_file(run_dir, attempt)):
            path.unlink(missing_ok=True)
    if not _link_fence(run_dir, attempt):
        _write(run_dir / FENCE_FILE, f"{attempt}\n")


def fence_source(run_dir: Path, attempt: int) -> Path:
    """The file beside the run directories whose hard links are their fences at ``attempt``."""
    return run_dir.parent / f"{FENCE_FILE}.{attempt}"


def _link_fence(run_dir: Path, attempt: int) -> bool:
    """Make the fence a hard link to the run tree's :func:`fence_source`; False if that cannot be done.

    Why: a new file costs an inode, slow on some file systems; a link does
    not (see :mod:`motoko.launch.links`). Safe because nothing writes a
    fence in place: :func:`write_fence` and :func:`revoke` rename a new
    directory entry over it, and the shared file keeps its content.
    """
    return link_shared(fence_source(run_dir, attempt), f"{attempt}\n".encode(), 0o644, run_dir / FENCE_FILE, replace=True)


def revoke(run_dir: Path, attempt: int) -> bool:
    """Close the run directory to ``attempt``; True if none of its tasks can run any more.

    False means the attempt's task had already started (``started.<N>``
    exists): it runs, or ran, and must be adopted or stopped, not forgotten.
    """
    with contextlib.suppress(OSError):
        _write(run_dir / FENCE_FILE, f"{REVOKED} {attempt}\n")
    return not started_file(run_dir, attempt).exists()


def fence(run_dir: Path) -> str | None:
    """The fence's content ('3', 'revoked 3'), or None when there is none."""
    try:
        return (run_dir / FENCE_FILE).read_text().strip()
    except OSError:
        return None


def read_exit(run_dir: Path, attempt: int) -> int | None:
    """Attempt ``attempt``'s exit status, or None when it has not recorded one."""
    try:
        return int(exit_file(run_dir, attempt).read_text().strip())
    except (OSError, ValueError):
        return None


def read_started(run_dir: Path, attempt: int) -> str | None:
    """What attempt ``attempt``'s task wrote when it started, or None if it did not."""
    try:
        text = started_file(run_dir, attempt).read_text().strip()
    except OSError:
        return None
    return text or None


def write_started(run_dir: Path, attempt: int, text: str) -> None:
    """Say that attempt ``attempt``'s task started, and as what (written whole)."""
    _write(started_file(run_dir, attempt), f"{text}\n")


def record_exit(run_dir: Path, attempt: int, code: int) -> None:
    """Record attempt ``attempt``'s exit status (written whole, then renamed)."""
    _write(exit_file(run_dir, attempt), f"{code}\n")


def stale_attempts(run_dir: Path, attempt: int) -> dict[int, str]:
    """Earlier attempts that started and recorded no exit status: attempt → started text.

    Such an attempt was killed (time limit, node failure) or may still
    execute; the executor checks which before a newer attempt starts.
    """
    found: dict[int, str] = {}
    try:
        names = os.listdir(run_dir)
    except OSError:
        return found
    for name in names:
        if not name.startswith("started."):
            continue
        try:
            earlier = int(name.removeprefix("started."))
        except ValueError:
            continue
        if earlier < attempt and read_exit(run_dir, earlier) is None:
            found[earlier] = read_started(run_dir, earlier) or ""
    return found


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

"""Writing a staged run directory: in place when new, by renames when it exists.

:func:`~motoko.launch.staging.plan_stage` renders and checks a run's files
(writing nothing); :class:`StagedRun` writes them. Kept apart because the
writing is what waits on the file system: a launcher does it in the thread
that starts the run's process, not in its loop.

A run directory this staging creates (or takes from the launcher's spares,
see :mod:`motoko.launch.spares`) is written in place (no temporary
file, rename or symlink checks: nothing else is in it yet); an existing one
(a retry) gets each file written beside and renamed over, so that a
process of an earlier attempt reading a file never sees it half written.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from motoko.errors import StagingError
from motoko.launch.links import link_shared
from motoko.launch.spares import FILES as SPARE_FILES
from motoko.launch.spares import Spares

#: The name of an exec file shared by the runs of a run tree, before its content hash.
EXEC_SOURCE = ".motoko-exec."

__all__ = ["RUN_JSON", "StagedRun", "safe_join", "shebang_command"]

RUN_JSON = "run.json"


def safe_join(base: Path, name: str, *, what: str) -> Path:
    """Return ``base / name`` for a name from configuration, refusing anything that leaves ``base``.

    Refused: empty names, NUL bytes, absolute paths, any ``..`` component, and
    names whose resolved path (symlinks followed) is not strictly inside
    ``base``. ``base`` itself need not exist yet.

    Raises:
        StagingError: Naming ``what`` (e.g. "exec_file") and the value.
    """

    def refuse(why: str) -> StagingError:
        return StagingError(
            f"{what} {name!r} {why}", hint="use a relative path to a file inside " + str(base)
        )

    if not isinstance(name, str) or not name.strip():
        raise refuse("is empty")
    if "\0" in name:
        raise refuse("contains a NUL byte")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise refuse("is an absolute path")
    if ".." in path.parts:
        raise refuse("contains a '..' component")
    if not path.parts:
        raise refuse("names the folder itself, not a file")
    root = Path(base).resolve()
    target = (root / path).resolve()
    if target == root or not target.is_relative_to(root):
        raise refuse(f"resolves to {str(target)!r}, outside {str(root)!r} (through a symlink)")
    return Path(base).joinpath(*path.parts)


@dataclass(frozen=True)
class StagedRun:
    """A run directory rendered and checked, not written yet (see :func:`~motoko.launch.staging.plan_stage`).

    Attributes:
        run_dir: The run's directory.
        names: The files' names in it, the exec file first, ``run.json`` last.
        files: ``(bytes, mode)`` of each name.
        exec_unchanged: No marker changed the exec file: it may be linked
            to a shared copy.
    """

    run_dir: Path
    names: list[str]
    files: list[tuple[bytes, int]]
    exec_unchanged: bool

    @property
    def exec_path(self) -> Path:
        """Where the exec file is (or will be) staged."""
        return self.run_dir.joinpath(*PurePosixPath(self.names[0]).parts)

    @property
    def exec_head(self) -> bytes:
        """The exec file's first bytes, to choose how to execute it without reading it back."""
        return self.files[0][0][:256]

    def write(self, spares: Spares | None = None) -> Path:
        """Write the run directory; return the exec file's path.

        Args:
            spares: The launcher's spare directories: a new run directory is
                one of them renamed, its ``run.json`` written in place.

        Raises:
            StagingError: The directory or a file cannot be written, or a
                symlink is in the way.
        """
        return self.write_reporting(spares)[0]

    def write_reporting(self, spares: Spares | None = None) -> tuple[Path, bool]:
        """:meth:`write`, and whether this call created the directory.

        Why: a directory just created holds nothing of an earlier attempt,
        so whoever opens it to this attempt (the fence) has no stale file
        of its own to look for (three system calls per run saved).
        """
        run_dir, names, files = self.run_dir, self.names, self.files
        try:
            spare = spares is not None and spares.take(run_dir)
            if spare:
                created = True
            else:
                began = time.perf_counter()
                created = _new_directory(run_dir)
                if spares is not None and created:
                    spares.timed(time.perf_counter() - began)
            if created:
                # Nothing else is in it (a spare's empty files at most), and nothing runs there before this returns.
                targets = [run_dir.joinpath(*PurePosixPath(name).parts) for name in names]
                if not (self.exec_unchanged and _link_exec(run_dir, targets[0], files[0][0])):
                    _write_new(run_dir, targets[0], *files[0])
                for name, target, (data, mode) in zip(names[1:], targets[1:], files[1:], strict=True):
                    if spare and name in SPARE_FILES:
                        _fill(target, data, mode)
                    else:
                        _write_new(run_dir, target, data, mode)
            else:
                os.chmod(run_dir, 0o700)
                targets = [_destination(run_dir, name) for name in names]
                for target, (data, mode) in zip(targets, files, strict=True):
                    _write_atomic(target, data, mode)
        except OSError as exc:
            raise StagingError(
                f"cannot write the run directory {str(run_dir)!r}: {exc.strerror or exc}",
                where=exc.filename and str(exc.filename),
                hint="check the directory's permissions and free space",
            ) from exc
        return targets[0], created


def _destination(run_dir: Path, name: str) -> Path:
    """Return where ``name`` goes in the run directory, refusing symlinks in the way."""
    target = safe_join(run_dir, name, what="destination")
    if target.is_symlink():
        raise StagingError(
            f"destination {str(target)!r} is a symlink; refusing to write through it",
            hint="remove the symlink from the run directory",
        )
    return target


#: The mode of an exec file that no marker changed: every run links one shared,
#: read-only copy (see :func:`_link_exec`).
_SHARED_MODE = 0o555


def _link_exec(run_dir: Path, target: Path, data: bytes) -> bool:
    """Link the run's exec file to a shared copy beside the run directories; False if that cannot be done.

    Why: every run of a study whose exec file holds no marker gets the same
    bytes, and a link costs no inode (see :mod:`motoko.launch.links`). The
    copy is named by its content and read-only: an exec file edited in
    place through one run's link would show in its siblings, so the shared
    copy is checked before each link and replaced when it changed.
    Never having been open for writing in this process since it was
    written whole, the linked file also cannot be "Text file busy" when
    executed.
    """
    source = run_dir.parent / f"{EXEC_SOURCE}{hashlib.sha256(data).hexdigest()[:24]}"
    try:
        return link_shared(source, data, _SHARED_MODE, target, replace=False)
    except FileExistsError:
        return False


def _new_directory(run_dir: Path) -> bool:
    """Create the run directory (its parents too, if missing); True when this call created it.

    Private, like the database: parameters, logs and results are the user's alone.
    """
    try:
        os.mkdir(run_dir, 0o700)
    except FileExistsError:
        return False
    except FileNotFoundError:
        run_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkdir(run_dir, 0o700)
        except FileExistsError:
            return False
    os.chmod(run_dir, 0o700)  # mkdir's mode went through the umask
    return True


def _write_new(run_dir: Path, target: Path, data: bytes, mode: int) -> None:
    """Write a file into a run directory that this staging created: in place, no rename.

    Why: a temporary file and a rename per file are what make restaging an
    existing directory safe (a process of an earlier attempt may be reading
    the old file); a directory created a moment ago has no reader. A crash
    halfway leaves a partial file in a run that never started, and its next
    staging (the directory exists then) replaces the file whole. A name
    already there (the same file listed twice) is replaced as usual.
    """
    if target.parent != run_dir:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        _write_atomic(_destination(run_dir, str(target.relative_to(run_dir))), data, mode)
        return
    _write_fd(fd, data, mode)


def _fill(target: Path, data: bytes, mode: int) -> None:
    """Write a spare's empty placeholder ``target`` in place (no new inode)."""
    _write_fd(os.open(target, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)), data, mode)


def _write_fd(fd: int, data: bytes, mode: int) -> None:
    """Write ``data`` to the open file ``fd``, set its ``mode`` and close it."""
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        os.fchmod(handle.fileno(), mode)


def _write_atomic(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new temporary file beside ``target``, then rename it over ``target``.

    The temporary file is created exclusively and without following symlinks,
    and rename replaces a path rather than writing through it.
    """
    if not target.parent.is_dir():  # a config file in a subfolder (the run directory itself exists)
        target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        _write_fd(fd, data, mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


_SHEBANG_RE = re.compile(rb"[ \t]*([^ \t]+)[ \t]*(.*?)[ \t]*\Z")


def shebang_command(head: bytes, exec_path: Path) -> tuple[str, ...] | None:
    """The command the kernel would build from the file's ``#!`` line: interpreter, its argument, the file.

    Why not execute the file itself: executing a file that was open for
    writing fails with "Text file busy" while any process still holds a
    writer's descriptor, and a process that another thread forks at the
    moment a run directory is written holds a copy of it until it executes
    its own command. An interpreter only reads the file. The argument
    vector is the one the kernel gives the interpreter (the rest of the
    line after the interpreter is one argument), so ``$0`` and ``ps`` are
    the same.

    Returns:
        None when ``head`` has no ``#!`` line, or one whose interpreter is
        not a path or that does not end within ``head``: the kernel then
        decides, as before.
    """
    if not head.startswith(b"#!") or b"\n" not in head:
        return None
    match = _SHEBANG_RE.match(head[2:].split(b"\n", 1)[0])
    if match is None or b"/" not in match.group(1):
        return None
    interpreter, argument = os.fsdecode(match.group(1)), os.fsdecode(match.group(2))
    return (interpreter, argument, str(exec_path)) if argument else (interpreter, str(exec_path))

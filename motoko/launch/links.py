"""Files that many run directories hold alike, as hard links to one shared file.

Why: creating a file costs an inode, and on some file systems (the ext4
``/tmp`` of this project's test machines) allocating one takes 0.5-2 ms of
kernel time, the largest cost of starting a short run; a hard link to an
existing file takes microseconds. A run directory's attempt fence and its
exec file (when no marker changed it) are the same bytes in every run of a
run tree, so each is linked from one *source* beside the run directories.

Safe only for files nothing writes in place: motoko replaces a fence or a
restaged file by a rename (a new directory entry), which leaves the shared
file as it was. The source is checked before every link (one ``stat``): a
source changed since this process wrote or read it back (an edit in place
through one of its links) is read again, and replaced by a new file when
its content is not the expected one, so later runs never get the edit.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

#: Sources this process wrote or read back and found right: path → (inode, mtime, size).
_checked: dict[Path, tuple[int, int, int]] = {}
_lock = threading.Lock()


def link_shared(source: Path, content: bytes, mode: int, target: Path, *, replace: bool) -> bool:
    """Make ``target`` a hard link to ``source``, which holds ``content`` with ``mode``.

    Args:
        source: The shared file (created, or replaced when wrong, here).
        content: What ``source`` and so ``target`` must hold.
        mode: The source's permission bits (shared by every link).
        target: The link to make.
        replace: Replace an existing ``target`` (by a rename); otherwise an
            existing ``target`` raises FileExistsError.

    Returns:
        False when hard links cannot be made here (another file system, no
        hard links, no permission beside the run directories): write the
        file whole instead.

    Raises:
        FileExistsError: ``target`` exists and ``replace`` is False.
        OSError: ``target``'s directory is missing or cannot be written.
    """
    for _ in range(2):
        try:
            _check_source(source, content, mode)
        except OSError:
            return False
        try:
            if replace:
                _link_replacing(source, target)
            else:
                os.link(source, target)
            return True
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno != errno.EMLINK:  # e.g. EXDEV, EPERM: no hard links here
                return False
            _forget(source)  # the file system's limit of links per file: start a new source
            try:
                _write(source, content, mode)
            except OSError:
                return False
    return False


def _check_source(source: Path, content: bytes, mode: int) -> None:
    """Make sure ``source`` holds ``content``: one stat when it did not change since last checked."""
    try:
        st = os.stat(source, follow_symlinks=False)
    except FileNotFoundError:
        _write(source, content, mode)
        return
    if _checked.get(source) == (st.st_ino, st.st_mtime_ns, st.st_size):
        return
    with open(source, "rb") as handle:
        right = handle.read(len(content) + 1) == content and (st.st_mode & 0o7777) == mode
    if not right:
        _write(source, content, mode)
        return
    with _lock:
        _checked[source] = (st.st_ino, st.st_mtime_ns, st.st_size)


def _write(source: Path, content: bytes, mode: int) -> None:
    """Write a new source file whole and rename it into place (links to the old one keep it)."""
    beside = source.with_name(f"{source.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(beside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            os.fchmod(handle.fileno(), mode)
        st = os.stat(beside)
        os.replace(beside, source)
    except BaseException:
        beside.unlink(missing_ok=True)
        raise
    with _lock:
        _checked[source] = (st.st_ino, st.st_mtime_ns, st.st_size)


def _link_replacing(source: Path, target: Path) -> None:
    """Link ``source`` at ``target``, replacing what is there by a rename."""
    try:
        os.link(source, target)
        return
    except FileExistsError:
        pass
    beside = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    beside.unlink(missing_ok=True)
    os.link(source, beside)
    try:
        os.replace(beside, target)
    except BaseException:
        beside.unlink(missing_ok=True)
        raise


def _forget(source: Path) -> None:
    with _lock:
        _checked.pop(source, None)


def prune_sources(tree: Path, prefixes: tuple[str, ...]) -> int:
    """Remove the shared files under ``tree`` named ``prefix*`` that no run directory links to.

    A source whose only name is its own (one link) belongs to no run any
    more: ``motoko clean`` deleted them all. A launcher linking it at the
    same moment finds it gone and writes a new one (see :func:`link_shared`).
    Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(tree))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefixes) or entry.name.endswith(".tmp"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_file(follow_symlinks=False) or st.st_nlink != 1:
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        _forget(Path(entry.path))
        removed += 1
    return removed


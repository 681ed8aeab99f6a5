"""A run's directory seen from outside: its files and the tail of its logs.

Launchers stage each run in ``run.run_path`` (``stdout`` and ``stderr`` are
written there by the executor). :func:`list_files` and :func:`tail_lines`
read that directory on the host they are called on; :func:`follow_lines`
keeps reading a log until the run ends, waking on database commits (the
change feed) and on a short file poll, never a fixed multi-second sleep.

A run that has not been staged yet has no files: listing gives an empty
list, tailing raises :class:`RunFileNotFound` saying so (and following waits
for the file to appear).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, cast, overload

from motoko.errors import (
    RunFileNotFound,  # noqa: F401 (defined there, importable from here)
    did_you_mean,
)
from motoko.study.blocking import refuse_in_loop


class Run(Protocol):
    """What finding a run's files needs of a run (a stored :class:`~motoko.study.records.Run`).

    A protocol: records call this module, so it does not import them.
    """

    @property
    def id(self) -> int: ...
    @property
    def study(self) -> str: ...
    @property
    def run_path(self) -> str | None: ...
    @property
    def started(self) -> _dt.datetime | None: ...
    @property
    def machine_name(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def is_terminal(self) -> bool: ...

#: Seconds between two reads of a followed file when no commit wakes us.
FOLLOW_INTERVAL = 0.2
#: Bytes read backwards at a time when looking for the last lines.
_CHUNK = 8192


#: Files motoko itself keeps in a run directory: the attempt fence, each
#: attempt's exit status, start and submission marks, and SLURM submission
#: scripts (see :mod:`motoko.launch.attempts`). Listed by ``runs ls``, but
#: neither a run's inputs nor its outputs.
_BOOKKEEPING = re.compile(r"(\.motoko-attempt|(exit|started|submitted)\.\d+|motoko-slurm\.\d+\.sh)\Z")


def is_bookkeeping(name: str) -> bool:
    """Whether ``name`` (relative to the run directory) is one of motoko's own files."""
    return _BOOKKEEPING.match(name) is not None


class RunFile(NamedTuple):
    """One file of a run directory.

    Attributes:
        name: Path relative to the run directory (``/``-separated).
        size: Size in bytes.
        modified: Last modification time (UTC).
    """

    name: str
    size: int
    modified: _dt.datetime


def _label(run: Run) -> str:
    return f"{run.study}.{run.id}"


def run_directory(run: Run) -> Path | None:
    """The run's directory on this host, or None while nothing was written yet.

    Raises:
        RunFileNotFound: the run started but its directory is not on this
            host (it ran elsewhere, or was cleaned).
    """
    if not run.run_path:
        return None
    path = Path(run.run_path)
    if path.is_dir():
        return path
    if run.started is None:
        return None  # claimed, being staged, or cancelled before it started
    where = f" (it ran on {run.machine_name})" if run.machine_name else ""
    raise RunFileNotFound(
        _label(run),
        None,
        f"the directory {path} of run {_label(run)} does not exist on this host{where}",
        hint="look on the machine that ran it, or check whether `motoko clean` removed it",
    )


def list_files(run: Run) -> list[RunFile]:
    """Every file under the run directory, sorted by name; [] before staging."""
    directory = run_directory(run)
    if directory is None:
        return []
    out = []
    for root, dirs, names in os.walk(directory):
        dirs.sort()
        for name in names:
            path = Path(root) / name
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while listing
            modified = _dt.datetime.fromtimestamp(stat.st_mtime, _dt.timezone.utc)
            out.append(RunFile(path.relative_to(directory).as_posix(), stat.st_size, modified))
    return sorted(out, key=lambda f: f.name)


def _missing(run: Run, name: str) -> RunFileNotFound:
    label = _label(run)
    directory = run_directory(run)
    if directory is None:
        if run.is_terminal:
            return RunFileNotFound(label, name, f"run {label} has no files: it ended {run.state} before it started")
        return RunFileNotFound(
            label,
            name,
            f"run {label} has no files yet: it is {run.state} and has not started",
            hint=f"follow it with `motoko runs tail {label} -f` to wait for its output",
        )
    names = [f.name for f in list_files(run)]
    return RunFileNotFound(
        label, name, f"run {label} has no file {name!r} in {directory}", hint=did_you_mean(name, names)
    )


def file_path(run: Run, name: str) -> Path:
    """The path of ``name`` in the run directory.

    Raises:
        RunFileNotFound: when the run or the file does not exist yet, naming
            the files that do.
    """
    directory = run_directory(run)
    if directory is not None:
        path = inside(directory, name)
        if path is not None:
            return path
        if (directory / name).exists() or os.path.islink(directory / name):
            raise RunFileNotFound(
                _label(run), name, f"{name!r} is outside the run directory {directory} of run {_label(run)}",
                hint=f"give a file listed by `motoko runs files {_label(run)}` (no '..', no link leading out)",
            )
    raise _missing(run, name)


def inside(directory: Path, name: str) -> Path | None:
    """``directory/name`` if it is a regular file inside ``directory``, links resolved; else None.

    ``..`` and symbolic links leading out of the run directory (a run may
    create any link) never make motoko read another file.
    """
    try:
        root = Path(directory).resolve(strict=True)
        path = (root / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    if root not in path.parents or not path.is_file():
        return None
    return path


def last_lines(path: Path, lines: int, *, complete_only: bool = False) -> tuple[list[str], int]:
    """The last ``lines`` lines of a file (without newlines), and the offset read up to.

    Reads backwards in chunks, so a huge log costs only its end. With
    ``complete_only`` an unterminated last line is left out, and the offset
    points at its start, so that a follower reads it once it is complete.
    """
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        end = handle.tell()
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= lines:
            step = min(_CHUNK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    if complete_only and data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
        end -= len(data) - cut
        data = data[:cut]
    parts = data.decode("utf-8", errors="replace").splitlines()
    return (parts[-lines:] if lines > 0 else []), end


def tail_lines(run: Run, name: str = "stdout", lines: int = 20) -> list[str]:
    """The last ``lines`` lines of one file of the run (without newlines)."""
    found, _ = last_lines(file_path(run, name), lines)
    return found


def follow_lines(
    run: Run,
    name: str,
    lines: int,
    see_changes: Callable[[], None],
    wait: Callable[[float], None],
) -> Iterator[str]:
    """Yield the last ``lines`` lines, then each new line until the run ends.

    ``see_changes`` begins a new transaction (so the run's state is current);
    ``wait(seconds)`` blocks until a commit arrives or the time passed.

    Raises:
        RunFileNotFound: when the run ended without ever writing the file.
    """
    for item in _follow(run, [name], lines, see_changes):
        if item is None:
            wait(FOLLOW_INTERVAL)
        else:
            yield item[1]


async def follow_lines_async(
    run: Run,
    name: str,
    lines: int,
    see_changes: Callable[[], None],
    wait: Callable[[float], Awaitable[None]],
) -> AsyncIterator[str]:
    """:func:`follow_lines` for async code: ``wait(seconds)`` is awaited."""
    for item in _follow(run, [name], lines, see_changes):
        if item is None:
            await wait(FOLLOW_INTERVAL)
        else:
            yield item[1]


def follow_many(
    run: Run,
    names: list[str],
    lines: int,
    see_changes: Callable[[], None],
    wait: Callable[[float], None],
) -> Iterator[tuple[str, str]]:
    """:func:`follow_lines` over several files at once: yields ``(name, line)`` until the run ends.

    Raises:
        RunFileNotFound: when the run ended without ever writing one of the files.
    """
    for item in _follow(run, names, lines, see_changes):
        if item is None:
            wait(FOLLOW_INTERVAL)
        else:
            yield item


class _Follower:
    """Where the reading of one followed file stands."""

    def __init__(self, name: str):
        self.name = name
        self.offset: int | None = None
        self.partial = b""

    def read(self, path: Path, lines: int) -> list[str]:
        """The last ``lines`` lines the first time, then every line completed since."""
        out: list[str] = []
        if self.offset is None:
            out, self.offset = last_lines(path, lines, complete_only=True)
        if path.stat().st_size < self.offset:  # restaged for another attempt: a new file
            self.offset, self.partial = 0, b""
        with open(path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()
        return out + [c.decode("utf-8", errors="replace") for c in chunks]


def _follow(run: Run, names: list[str], lines: int, see_changes: Callable[[], None]) -> Iterator[tuple[str, str] | None]:
    """The one following loop: yields ``(name, line)``, and None where the caller should wait.

    The state is read *before* the files, so once a terminal state is seen,
    the read that follows gets everything the run wrote.
    """
    followers = [_Follower(name) for name in dict.fromkeys(names)]
    while True:
        see_changes()
        ended = run.is_terminal
        for follower in followers:
            path = _existing(run, follower.name)
            if path is not None:
                yield from ((follower.name, line) for line in follower.read(path, lines))
            elif ended:
                raise _missing(run, follower.name)
        if ended:
            for follower in followers:
                if follower.partial:
                    yield follower.name, follower.partial.decode("utf-8", errors="replace")
            return
        yield None


def _existing(run: Run, name: str) -> Path | None:
    try:
        directory = run_directory(run)
    except RunFileNotFound:
        return None
    if directory is None:
        return None
    return inside(directory, name)


def sleep_wait(seconds: float) -> None:
    """The fallback ``wait`` of :func:`follow_lines` when no change feed exists."""
    time.sleep(seconds)


class RunFiles:
    """The file methods of a run: ``run.files()``, ``run.tail()`` (a mixin of :class:`~motoko.study.records.Run`).

    Its names are motoko's own: a study field may not take them
    (:data:`motoko.study.records.MOTOKO_ATTRIBUTES`).
    """

    if TYPE_CHECKING:

        def _see_changes(self) -> None: ...
        def _wait_for_change(self, seconds: float) -> None: ...
        async def _wait_for_change_async(self, seconds: float) -> None: ...

    def files(self) -> list[RunFile]:
        """The files of the run directory: ``(name, size, modified)``, sorted by name.

        An empty list while the run has no directory (not staged yet).

        Raises:
            RunFileNotFound: the run started but its directory is not on this host.
        """
        return list_files(cast(Run, self))

    @overload
    def tail(self, name: str = ..., lines: int = ..., follow: Literal[False] = ...) -> list[str]: ...

    @overload
    def tail(self, name: str = ..., lines: int = ..., *, follow: Literal[True]) -> Iterator[str]: ...

    @overload
    def tail(self, name: list[str] | tuple[str, ...], lines: int = ..., follow: Literal[False] = ...) -> dict[str, list[str]]: ...

    @overload
    def tail(self, name: list[str] | tuple[str, ...], lines: int = ..., *, follow: Literal[True]) -> Iterator[tuple[str, str]]: ...

    def tail(self, name: str | list[str] | tuple[str, ...] = "stdout", lines: int = 20, follow: bool = False) -> Any:
        """The last ``lines`` lines of a file of the run directory (``stdout`` by default).

        Several files at once (Inductiva's ``tail_files``): ``run.tail(["stdout",
        "stderr"])`` returns ``{name: lines}``, and with ``follow=True`` yields
        ``(name, line)`` pairs from all of them until the run ends.

        With ``follow=True``, returns an iterator that yields those lines,
        then every new line as the run writes it, and stops once the run has
        ended (FINISHED, FAILED, CANCELLED or LOST). Following a run that has
        not started yet waits for its file to appear.

        Raises:
            RunFileNotFound: the run has no such file (yet), saying why and
                naming the files it has; when following, only if the run
                ended without writing it.
            EventLoopError: following inside a workflow step, an event action
                or a launcher; ``async for line in run.tail_async()`` there.
        """
        if follow:
            refuse_in_loop("run.tail(follow=True)", "async for line in run.tail_async()")
        run = cast(Run, self)
        if not isinstance(name, str):
            if not follow:
                return {each: tail_lines(run, each, lines) for each in name}
            return follow_many(run, list(name), lines, self._see_changes, self._wait_for_change)
        if not follow:
            return tail_lines(run, name, lines)
        return follow_lines(run, name, lines, self._see_changes, self._wait_for_change)

    def tail_async(self, name: str = "stdout", lines: int = 20) -> AsyncIterator[str]:
        """``tail(name, lines, follow=True)`` for async code: ``async for line in run.tail_async()``.

        Waiting for new lines does not block the event loop.

        Raises:
            RunFileNotFound: only if the run ended without writing the file.
        """
        return follow_lines_async(cast(Run, self), name, lines, self._see_changes, self._wait_for_change_async)

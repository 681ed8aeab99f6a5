"""Run directories made ahead, so that starting a run allocates no inode.

Why: a new run directory holding ``run.json``, ``stdout`` and ``stderr`` is
four new inodes, and a hop between dependent runs waited for all four. On
the ext4 of this project's test machines (no journal) a new inode costs
from 20 µs to 0.9 ms of kernel time, depending on how many files were
deleted in the seconds before (``benchmarks.run_files``); on a cluster's
parallel file system each is a round trip to its metadata server. A rename
allocates nothing.

So a local launcher keeps, beside the run directories of each study it
started a run of, a few *spare* directories named after it
(``.motoko-spare.<launcher id>.<n>``), each holding the empty files
:data:`FILES`. Staging a new run renames a spare to the run's directory
(:meth:`Spares.take`), ``run.json`` is written into its placeholder, and
the run host truncates ``stdout`` and ``stderr`` as it opens them. A
thread of its own then makes the next spare, while the run executes.

Spares are made only while they pay: a new directory costing less than
:data:`WORTH` (a moving average, timed as spares or run directories are
made) is cheap enough to make on the spot, and the spare thread would
only compete with the run for the machine (0.3 ms per hop, measured on
two cores with 25 µs directories).

A spare never replaces anything: an existing run directory (an earlier
attempt's, even empty) is restaged in place as before. The launcher
removes its spares when it stops; the spares of a launcher killed on this
host are removed by the next launcher that uses the folder once its pid is
gone (:func:`sweep`), and by ``motoko clean`` once it is no longer live.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from motoko.study.server import pid_alive

__all__ = ["FILES", "PREFIX", "Spares", "prune_spares", "sweep"]

#: The name every spare directory starts with (then the launcher id, a dot and a number).
PREFIX = ".motoko-spare."
#: The empty files a spare holds, with their modes (the umask applies, as to a shell's ``>``):
#: ``run.json`` (``motoko.launch.run_dirs.RUN_JSON``, written at staging) and the files the
#: run host sends the run's output to (``motoko.launch.run_host``).
FILES = {"run.json": 0o600, "stdout": 0o666, "stderr": 0o666}
#: Spares kept ready per folder: a hop takes one; a launcher starting many
#: runs at once makes the rest as it would have made their directories.
DEPTH = 2
#: Seconds a new directory must cost (moving average) for spares to be made: below, the spare
#: thread costs a hop more than the inodes it saves (``benchmarks.compare.chain_once``).
WORTH = 100e-6
#: Weight of the last timing in that average.
_RECENT = 0.2


class Spares:
    """One launcher's spare run directories.

    Args:
        owner: The launcher's id (``host:pid:tag``): in every spare's name.
        host: This machine's name, as in launcher ids (for :func:`sweep`).
        depth: Spares kept ready per folder.
    """

    def __init__(self, owner: str, host: str, depth: int = DEPTH):
        self.owner = owner
        self.host = host
        self.depth = depth
        self._ready: dict[Path, list[Path]] = {}
        self._pending: set[Path] = set()
        self._drawn: set[Path] = set()  # folders whose spares were asked for since the last replenish
        self._cost: float | None = None  # a new directory's seconds, a moving average (None: not yet timed)
        self._swept: set[Path] = set()
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._closed = False
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="motoko-spares")

    def take(self, run_dir: Path) -> bool:
        """Make ``run_dir`` from a spare of its folder; True when done.

        Then ``run_dir`` is a new directory (mode 0700) holding only the
        empty :data:`FILES`. False: no spare was ready, or ``run_dir``
        exists; the caller creates it as usual. Either way the folder's
        spares are made again at the next :meth:`replenish`.
        """
        folder = run_dir.parent
        with self._lock:
            if self.worth or folder not in self._swept:  # a first visit sweeps, whatever the cost
                self._drawn.add(folder)
            ready = self._ready.get(folder)
            spare = ready.pop() if ready else None
        if spare is None:
            return False
        if os.path.lexists(run_dir):  # a rename would replace an empty directory: never
            with self._lock:
                self._ready.setdefault(folder, []).append(spare)
            return False
        try:
            os.rename(spare, run_dir)
        except OSError:  # gone (a clean), or the folder changed under us
            shutil.rmtree(spare, ignore_errors=True)
            return False
        return True

    @property
    def worth(self) -> bool:
        """True while a new directory costs :data:`WORTH` or more (or was not timed yet)."""
        return self._cost is None or self._cost >= WORTH

    def timed(self, seconds: float) -> None:
        """Note that making a directory here took ``seconds`` (a spare, or a run directory made on the spot)."""
        self._cost = seconds if self._cost is None else (1 - _RECENT) * self._cost + _RECENT * seconds

    def replenish(self) -> None:
        """Make again, in the background, the spares taken since the last call.

        Called once the runs staged meanwhile have started: making a spare
        while a run is staged or spawned would compete with it for the
        folder's lock and the interpreter.
        """
        with self._lock:
            drawn, self._drawn = self._drawn, set()
        for folder in drawn:
            self._refill_soon(folder)

    def fill(self, folder: Path) -> None:
        """Make the folder's spares now (in this thread), whatever a directory costs."""
        self._refill(folder, always=True)

    def ready(self, folder: Path) -> list[Path]:
        """The spares ready in ``folder``."""
        with self._lock:
            return list(self._ready.get(folder, ()))

    def flush(self) -> None:
        """Wait until the spares being made are made."""
        with contextlib.suppress(RuntimeError):  # closed: nothing is being made
            self._maker.submit(lambda: None).result()

    def close(self) -> None:
        """Stop making spares and remove those left (the launcher stops)."""
        self._closed = True
        self._maker.shutdown(wait=True)
        with self._lock:
            left = [spare for spares in self._ready.values() for spare in spares]
            self._ready.clear()
        for spare in left:
            shutil.rmtree(spare, ignore_errors=True)

    def _refill_soon(self, folder: Path) -> None:
        with self._lock:
            if self._closed or folder in self._pending:
                return
            self._pending.add(folder)
        with contextlib.suppress(RuntimeError):  # shut down meanwhile
            self._maker.submit(self._refill, folder)

    def _refill(self, folder: Path, always: bool = False) -> None:
        try:
            if folder not in self._swept:
                self._swept.add(folder)
                sweep(folder, self.host, keep=self.owner)
            if not (always or self.worth):
                return
            while not self._closed:
                with self._lock:
                    if len(self._ready.get(folder, ())) >= self.depth:
                        return
                spare = folder / f"{PREFIX}{self.owner}.{next(self._numbers)}"
                try:
                    _make(spare, self.timed)
                except OSError:  # no folder yet, or not writable: no spares here (runs start as before)
                    return
                with self._lock:
                    self._ready.setdefault(folder, []).append(spare)
        finally:
            with self._lock:
                self._pending.discard(folder)


def _make(spare: Path, timed: Callable[[float], None]) -> None:
    """Create one spare: a private directory with the empty :data:`FILES`; ``timed`` gets its mkdir's seconds."""
    began = time.perf_counter()
    os.mkdir(spare, 0o700)
    timed(time.perf_counter() - began)
    try:
        os.chmod(spare, 0o700)  # mkdir's mode went through the umask
        for name, mode in FILES.items():
            os.close(os.open(spare / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode))
    except OSError:
        shutil.rmtree(spare, ignore_errors=True)
        raise


def _owner(name: str) -> str | None:
    """The launcher id in a spare's name, or None when ``name`` is no spare's."""
    if not name.startswith(PREFIX):
        return None
    owner, _, number = name[len(PREFIX):].rpartition(".")
    return owner if owner and number.isdigit() else None


def _remove(folder: Path, gone: Callable[[str], bool]) -> int:
    """Remove the spares in ``folder`` whose launcher id ``gone`` accepts; return how many."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        owner = _owner(name)
        if owner is not None and gone(owner):
            shutil.rmtree(folder / name, ignore_errors=True)
            removed += 1
    return removed


def sweep(folder: Path, host: str, keep: str = "") -> int:
    """Remove the spares in ``folder`` of gone launchers of this ``host``; return how many.

    Gone: the pid in the launcher's id no longer exists. Spares of other
    hosts (a shared file system) and of ``keep`` are left alone.
    """

    def gone(owner: str) -> bool:
        parts = owner.split(":")
        if owner == keep or len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            return False
        return int(parts[1]) != os.getpid() and not pid_alive(int(parts[1]))

    return _remove(folder, gone)


def prune_spares(folder: Path, keep: set[str]) -> int:
    """Remove the spares in ``folder`` of launchers not in ``keep`` (``motoko clean``); return how many."""
    return _remove(folder, lambda owner: owner not in keep)

"""Copying a run's files out of its directory: ``run.download_outputs()``, ``download_inputs()``.

The names follow Inductiva's ``Task`` (``download_outputs(filenames=None,
output_dir=None)``, ``last_modified_file()``). A run's *inputs* are what its
launcher staged: the study's ``exec_file`` and ``config_files`` (rendered) and
``run.json``; its *outputs* are every other file of its directory (``stdout``,
``stderr`` and whatever the run wrote).

Files are read where the run directory is: on this host, or through a shared
file system. When the directory is on a host this one cannot see (a cluster
node's scratch disk), the files the run stored in the database with
``run.store_file(name)`` are read instead, over the database connection;
anything else is refused with :class:`~motoko.errors.RunFileNotFound`
naming that host, before anything is written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import persistent
from BTrees.OOBTree import OOBTree

from motoko.errors import ParameterError, RunFileNotFound, did_you_mean
from motoko.study.run_files import Run as RunWithFiles
from motoko.study.run_files import (
    RunFile,
    file_path,
    inside,
    is_bookkeeping,
    list_files,
    run_directory,
)


class Run(RunWithFiles, Protocol):
    """A run as downloads read it: any attribute of a stored :class:`~motoko.study.records.Run`.

    A protocol: records take their file methods from this module, so it does not import them.
    """

    def __getattr__(self, name: str) -> Any: ...

#: The parameters file every staged run has (``motoko.launch.staging.RUN_JSON``).
STAGED_PARAMETERS = "run.json"
#: Where downloads go by default, under the current directory (Inductiva: ``inductiva_output``).
OUTPUT_ROOT = "motoko_output"
INPUT_ROOT = "motoko_input"
#: The largest file a run may store in the database (bytes): results, not data sets.
MAX_STORED_BYTES = 16 << 20


class StoredFile(persistent.Persistent):
    """One file a run stored in the database (its own record: storing another never rewrites it)."""

    def __init__(self, data: bytes):
        self.data = data


def input_names(run: Run) -> list[str]:
    """The names a launcher stages into the run directory: exec file, config files, run.json."""
    study = run._study
    names: list[str] = []
    if study is not None:
        schema = study.schema
        names += [schema.exec_file, *schema.config_files]
    elif run.exec:
        names.append(run.exec)
    return list(dict.fromkeys([*names, STAGED_PARAMETERS]))


def _label(run: Run) -> str:
    return f"{run.study}.{run.id}"


def _directory(run: Run) -> Path:
    """The run directory, or RunFileNotFound saying why there is none to copy from."""
    directory = run_directory(run)  # raises when it ran on a host we cannot see
    if directory is None:
        label = _label(run)
        state = f"ended {run.state}" if run.is_terminal else f"is {run.state}"
        raise RunFileNotFound(
            label, None, f"run {label} has no directory to copy from: it {state} and was never staged",
            hint="download once it has started",
        )
    return directory


def stored(run: Run) -> dict[str, bytes]:
    """The files ``run`` stored in the database, by name."""
    files = getattr(run, "_stored_files", None)
    return {name: item.data for name, item in files.items()} if files is not None else {}


def copy_files(run: Run, *, inputs: bool, filenames: Iterable[str] | None, output_dir: str | Path | None) -> Path:
    """Copy the run's inputs or outputs (or just ``filenames``) into ``output_dir``; return it.

    Every name is checked before anything is copied; sub-directories are kept.
    When the run directory is on a host this one cannot see, the files the
    run stored in the database are copied instead.

    Raises:
        RunFileNotFound: the run has no directory (yet, or on this host, and
            did not store the file), or a requested file does not exist
            (with close names).
    """
    try:
        directory: Path | None = _directory(run)
    except RunFileNotFound as unreachable:
        if not stored(run):
            raise
        directory, kept = None, stored(run)
        if filenames is not None and any(str(name) not in kept for name in filenames):
            missing = next(str(name) for name in filenames if str(name) not in kept)
            raise RunFileNotFound(
                _label(run), missing, f"{unreachable.message}; it stored only {', '.join(sorted(kept))} in the database",
                hint=did_you_mean(missing, kept),
            ) from None
    staged = set(input_names(run))
    present = [f.name for f in list_files(run)] if directory is not None else sorted(stored(run))
    if filenames is None:
        chosen = [name for name in present if (name in staged) == inputs and not is_bookkeeping(name)]
        if directory is not None:  # a link leading out of the run directory is never followed
            chosen = [name for name in chosen if inside(directory, name) is not None]
    else:
        chosen = [str(name) for name in filenames]
        for name in chosen:
            if name not in present:
                label = _label(run)
                raise RunFileNotFound(
                    label, name, f"run {label} has no file {name!r} in {directory}", hint=did_you_mean(name, present)
                )
            if directory is not None:
                file_path(run, name)  # raises for a link leading out, naming it
    root = INPUT_ROOT if inputs else OUTPUT_ROOT
    target = Path(output_dir) if output_dir is not None else Path.cwd() / root / _label(run)
    target.mkdir(parents=True, exist_ok=True)
    kept = stored(run) if directory is None else {}
    for name in chosen:
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if directory is None:
            destination.write_bytes(kept[name])
        else:
            source = inside(directory, name)
            assert source is not None  # checked above
            shutil.copy2(source, destination)
    return target


def last_modified(run: Run) -> RunFile | None:
    """The most recently modified file of the run directory; None when it has none."""
    files = [f for f in list_files(run) if not is_bookkeeping(f.name)]
    return max(files, key=lambda f: (f.modified, f.name)) if files else None


class RunDownloads:
    """Inductiva-style file methods of a :class:`~motoko.study.records.Run` (a mixin)."""

    def download_outputs(self, filenames: Iterable[str] | None = None, output_dir: str | Path | None = None) -> Path:
        """Copy the run's outputs (every file but the staged inputs) into ``output_dir``; return it.

        Args:
            filenames: Only these files (relative to the run directory), inputs or not.
            output_dir: Default ``./motoko_output/STUDY.ID``; created if needed.

        Raises:
            RunFileNotFound: no run directory (not staged yet, or on a host
                this one cannot see, which it names), or an unknown file name.
        """
        return copy_files(self, inputs=False, filenames=filenames, output_dir=output_dir)  # type: ignore[arg-type]

    def download_inputs(self, filenames: Iterable[str] | None = None, output_dir: str | Path | None = None) -> Path:
        """Copy the files the launcher staged (exec file, config files, run.json); return the directory.

        ``output_dir`` defaults to ``./motoko_input/STUDY.ID``. Raises as :meth:`download_outputs`.
        """
        return copy_files(self, inputs=True, filenames=filenames, output_dir=output_dir)  # type: ignore[arg-type]

    def store_file(self, name: str, data: bytes | None = None, *, commit: bool = False) -> None:
        """Store a file of the run directory in the database, for hosts that cannot see the directory.

        Called inside the run (``run.store_file("results/y.txt")``): the file
        is read relative to the run directory, unless ``data`` is given.
        ``download_outputs()`` reads stored files when the run directory is
        on another host. Storing a name again replaces it. ``commit=True``
        commits it at once on the run's connection, retrying conflicts (the
        channel path of a run stores files so, outside its launcher's batches).

        Raises:
            ParameterError: for an absolute or escaping name, or a file over
                :data:`MAX_STORED_BYTES`.
            FileNotFoundError: when the file does not exist.
        """
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ParameterError(f"store_file takes a name inside the run directory, got {name!r}", field="name",
                                 value=name, hint="e.g. run.store_file('results/y.txt')")
        content = relative.read_bytes() if data is None else bytes(data)
        if len(content) > MAX_STORED_BYTES:
            raise ParameterError(
                f"{name} is {len(content)} bytes; a run stores at most {MAX_STORED_BYTES} bytes per file",
                field="name", value=name, hint="keep large files on a shared file system and download from there",
            )
        if commit:
            self._commit(lambda: self.store_file(name, content), what=f"store {name}")  # type: ignore[attr-defined]
            return
        files: Any = getattr(self, "_stored_files", None)
        if files is None:
            files = OOBTree()
            self._stored_files = files
        files[relative.as_posix()] = StoredFile(content)

    def stored_files(self) -> list[str]:
        """The names of the files the run stored in the database (see :meth:`store_file`)."""
        return sorted(stored(self))  # type: ignore[arg-type]

    def last_modified_file(self) -> RunFile | None:
        """The run directory's most recently modified file ``(name, size, modified)``; None if none.

        Raises:
            RunFileNotFound: the run started on a host whose directory this one cannot see.
        """
        return last_modified(self)  # type: ignore[arg-type]

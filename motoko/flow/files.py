"""A RunList's files: downloads and the newest file of every run (Inductiva's ``Task`` verbs).

Each run's files are copied by :mod:`motoko.study.downloads` (which also gives
``run.download_outputs()`` and friends); here they are gathered for a whole
task, one sub-directory per run (``STUDY.ID``), so that several runs never
overwrite each other's ``stdout``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from motoko.study.downloads import INPUT_ROOT, OUTPUT_ROOT, copy_files, last_modified
from motoko.study.records import Run
from motoko.study.run_files import RunFile


class RunListFiles:
    """File methods of a :class:`~motoko.flow.futures.RunList` (a mixin)."""

    def _fresh(self) -> list[Run]:  # provided by RunList
        raise NotImplementedError

    def _copy(self, inputs: bool, filenames: Iterable[str] | None, output_dir: str | Path | None) -> list[Path]:
        root = Path(output_dir) if output_dir is not None else Path.cwd() / (INPUT_ROOT if inputs else OUTPUT_ROOT)
        names = list(filenames) if filenames is not None else None
        unique = {run.id: run for run in self._fresh()}.values()
        return [copy_files(run, inputs=inputs, filenames=names, output_dir=root / f"{run.study}.{run.id}") for run in unique]

    def download_outputs(self, filenames: Iterable[str] | None = None, output_dir: str | Path | None = None) -> list[Path]:
        """Copy every run's outputs into ``output_dir/STUDY.ID/``; return those directories in task order.

        Args:
            filenames: Only these files of each run (relative to its directory).
            output_dir: Default ``./motoko_output``.

        Raises:
            RunFileNotFound: a run has no directory (not staged yet, or on a
                host this one cannot see, which it names), or lacks a file.
                Runs before it are already copied.
        """
        return self._copy(False, filenames, output_dir)

    def download_inputs(self, filenames: Iterable[str] | None = None, output_dir: str | Path | None = None) -> list[Path]:
        """Copy every run's staged inputs into ``output_dir/STUDY.ID/`` (default ``./motoko_input``)."""
        return self._copy(True, filenames, output_dir)

    def last_modified_file(self) -> tuple[Run, RunFile] | None:
        """The most recently modified file among the runs' directories, with its run; None if none."""
        newest: tuple[Run, RunFile] | None = None
        for run in self._fresh():
            found = last_modified(run) if run.run_path else None
            if found is not None and (newest is None or found.modified > newest[1].modified):
                newest = (run, found)
        return newest

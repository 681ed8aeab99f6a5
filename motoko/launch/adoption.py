"""Adoption: what a launcher does with the runs of a launcher that stopped heart-beating.

Declaring such runs LOST at once throws results away and runs work twice:
a SLURM job survives its launcher, finishes, and its exit status says how
it went; a queued one starts later. So a launcher that finds silent runs
(:func:`motoko.study.liveness.silent_runs`) of a launcher with its own kind
of executor asks the executor about each (:meth:`Executor.inspect
<motoko.launch.executors.base.Executor.inspect>`) before anything is
written:

* still queued or running, or ended with its exit status recorded: the
  launcher *adopts* the run (takes it over in the database, in one
  conflict-checked transaction, so two launchers never adopt the same run)
  and its executor watches it to its real end;
* nothing to be found (the scheduler forgot it and it left no exit status):
  the run is LOST, and retried if its study allows it.

Inspections run in the background between cycles; their verdicts are
applied by the next cycle's transaction, after checking that the run is
still silent and still at the same attempt. Silent runs of other kinds of
launchers are left to launchers of their kind, except local runs, which
are declared LOST as before (their processes, if on this host, stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from motoko.launch.executors.base import Executor, Orphan, Verdict
from motoko.study.database import StudyDB
from motoko.study.liveness import OrphanProcess, Silent, declare_lost, silent_runs
from motoko.study.records import LOST, now

log = logging.getLogger(__name__)

Key = tuple[str, int]


class Adoption:
    """One launcher's adoption of silent runs (see the module docstring).

    Args:
        executor: The launcher's executor; it inspects and adopts.
        launcher_id: The adopting launcher's id, written on adopted runs.
        wake: Called when a verdict arrives, so that the launcher applies it soon.
    """

    def __init__(self, executor: Executor, launcher_id: str, wake: Callable[[], None] | None = None):
        self.executor = executor
        self.launcher_id = launcher_id
        self.wake = wake
        self._inspecting: dict[Key, asyncio.Task[None]] = {}
        self._verdicts: dict[Key, tuple[Orphan, Verdict]] = {}
        # Filled by judge() inside a transaction; acted on by after_commit().
        self._to_inspect: list[Orphan] = []
        self._adopted: list[tuple[Orphan, bytes]] = []
        self._applied: list[Key] = []
        self.orphans: list[OrphanProcess] = []

    @property
    def busy(self) -> bool:
        """True while inspections run or verdicts wait to be applied."""
        return bool(self._inspecting or self._verdicts)

    @property
    def has_verdicts(self) -> bool:
        """True when a verdict waits for the next cycle."""
        return bool(self._verdicts)

    def judge(self, db: StudyDB, lost_after: Mapping[str, float], observer: str) -> int:
        """Apply verdicts and find silent runs to inspect; return how many runs became LOST.

        Runs inside the launcher's cycle transaction: a retried transaction
        calls it again and starts over.
        """
        self._to_inspect, self._adopted, self._applied, self.orphans = [], [], [], []
        lost = 0
        for name, seconds in lost_after.items():
            study = db.study(name)
            silent = silent_runs(db, study, seconds, skip_launcher=self.launcher_id)
            mine = [s for s in silent if s.executor == self.executor.name]
            others = {s.executor for s in silent} - {self.executor.name}
            if others & {"local", None}:
                lost += declare_lost(
                    db, study, seconds, observer=observer, skip_launcher=self.launcher_id,
                    orphans=self.orphans, executors=tuple({"local"} - {self.executor.name}),
                )
            seen = set()
            for item in mine:
                seen.add((name, item.run.id))
                lost += self._judge_one(name, item, observer)
            for key in [k for k in self._verdicts if k[0] == name and k not in seen]:
                self._applied.append(key)  # adopted elsewhere, or it spoke again: forget it
        return lost

    def _judge_one(self, study_name: str, item: Silent, observer: str) -> int:
        run = item.run
        orphan = Orphan(
            study_name, run.id, int(run.attempt), Path(run.run_path or "."), str(run.launcher),
            run.machine_name, run.executor_id,
        )
        found = self._verdicts.get(orphan.key)
        if found is None or (found[0].attempt, found[0].launcher) != (orphan.attempt, orphan.launcher):
            if orphan.key not in self._inspecting and run.run_path:
                self._to_inspect.append(orphan)
            return 0
        verdict = found[1]
        self._applied.append(orphan.key)
        if verdict.adopt:
            run.launcher = self.launcher_id
            run.heartbeat = now()
            assert run._p_oid is not None
            self._adopted.append((orphan, run._p_oid))
            return 0
        assert run._study is not None
        run._study.transition(run, LOST, error=item.lost_error(observer, verdict.reason))
        return 1

    def after_commit(self) -> list[tuple[Key, bytes]]:
        """Act on what the committed transaction decided; return the adopted runs (key, oid)."""
        for key in self._applied:
            self._verdicts.pop(key, None)
        adopted = []
        for orphan, oid in self._adopted:
            log.warning(
                "adopted run %s.%d (attempt %d) of silent launcher %s",
                orphan.study, orphan.run_id, orphan.attempt, orphan.launcher,
            )
            self.executor.adopt(orphan)
            adopted.append((orphan.key, oid))
        loop = asyncio.get_running_loop()
        for orphan in self._to_inspect:
            if orphan.key not in self._inspecting:
                self._inspecting[orphan.key] = loop.create_task(self._inspect(orphan))
        self._to_inspect, self._adopted, self._applied = [], [], []
        return adopted

    async def _inspect(self, orphan: Orphan) -> None:
        try:
            verdict = await self.executor.inspect(orphan)
        except Exception:  # an inspection that fails is tried again at the next check
            log.exception("could not inspect run %s.%d", orphan.study, orphan.run_id)
            return
        finally:
            self._inspecting.pop(orphan.key, None)
        self._verdicts[orphan.key] = (orphan, verdict)
        if self.wake is not None:
            self.wake()

    async def close(self) -> None:
        """Stop inspections still running (their runs stay silent for the next launcher)."""
        for task in list(self._inspecting.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inspecting.clear()


def record_submitted(db: StudyDB, launcher_id: str, submitted: list[tuple[Key, str]]) -> None:
    """Record on each run the engine's id for it (a job id): how an adopter finds it.

    Inside the launcher's cycle transaction; runs another launcher took
    over meanwhile are left alone.
    """
    for (study_name, rid), ident in submitted:
        run = db.study(study_name).runs.get(rid)
        if run is not None and run.launcher == launcher_id and run.executor_id != ident:
            run.executor_id = ident

"""What the dashboard may change: cancel runs, retry failed ones.

The page names runs by id (one run, from its details) or by the table's
filter (a selection). Each action validates everything first (study, ids,
constraint), then changes every run in one transaction through the study's
own verbs (``Study.cancel``, ``Study.requeue``), the same ones ``motoko
cancel`` and lost-run retries use, so state changes keep going through the
one transition path. The HTTP layer (:mod:`motoko.views.web.server`) checks
the token and the client's address before calling these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from motoko.errors import MotokoError, RunNotFound, UnknownNameError
from motoko.study.records import FAILED, LOST, TERMINAL, Run

#: States a run may be retried from (a cancelled run is retried only when named by id).
RETRYABLE = (FAILED, LOST)


def _study(workflow: Any, name: str) -> str:
    try:
        return str(workflow.config.resolve(name))
    except (UnknownNameError, KeyError):
        raise UnknownNameError("study", name, workflow.task_managers) from None


def _runs(workflow: Any, study: str, ids: Sequence[int] | None, constraints: str) -> tuple[str, list[Run]]:
    """The runs an action names: by ``ids`` (each must exist), else by ``constraints``."""
    name = _study(workflow, study)
    db = workflow.db_for(name)
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise MotokoError(f"ids must be a list of run ids, got {ids!r}", hint="e.g. [1, 2]")
        runs_tree = db.study(name).runs
        missing = [i for i in ids if i not in runs_tree]
        if missing:
            raise RunNotFound(name, missing)
        return name, [runs_tree[i] for i in dict.fromkeys(ids)]
    return name, db.select(name, constraints.strip() or None)


def _plural(n: int) -> str:
    return "1 run" if n == 1 else f"{n} runs"


def cancel_runs(workflow: Any, study: str, ids: Sequence[int] | None = None, constraints: str = "") -> dict[str, Any]:
    """Cancel the unfinished runs named (CREATED ones at once, running ones asked to stop).

    Returns ``{"ids": [...], "message": "cancel requested for 3 runs in calc"}``.

    Raises:
        MotokoError: for an unknown study, run id or a malformed constraint
            (nothing is changed).
    """
    name, runs = _runs(workflow, study, ids, constraints)
    targets = [run.id for run in runs if run.state not in TERMINAL]
    db = workflow.db_for(name)

    def change() -> list[int]:
        records = db.study(name)
        return [rid for rid in targets if records.cancel(records.runs[rid])]

    done = db.transact(change, what=f"cancel runs of {name!r} from the dashboard") if targets else []
    message = f"cancel requested for {_plural(len(done))} in {name}" if done else f"no unfinished run to cancel in {name}"
    return {"study": name, "ids": done, "message": message}


def retry_runs(workflow: Any, study: str, ids: Sequence[int] | None = None, constraints: str = "") -> dict[str, Any]:
    """Put the failed (FAILED or LOST) runs named back to CREATED for another attempt.

    A run named by id may also be CANCELLED. The attempt count goes up and
    the ended attempt stays in the run's history; a launcher then executes
    the run again. Returns ``{"ids": [...], "message": "2 runs queued again in calc"}``.

    Raises:
        MotokoError: as :func:`cancel_runs`.
    """
    name, runs = _runs(workflow, study, ids, constraints)
    allowed = (*RETRYABLE, "CANCELLED") if ids is not None else RETRYABLE
    targets = [run.id for run in runs if run.state in allowed]
    db = workflow.db_for(name)

    def change() -> list[int]:
        records = db.study(name)
        done = []
        for rid in targets:
            run = records.runs[rid]
            if run.state in allowed:
                records.requeue(run, "retried from the dashboard")
                done.append(rid)
        return done

    done = db.transact(change, what=f"retry runs of {name!r} from the dashboard") if targets else []
    message = f"{_plural(len(done))} queued again in {name}" if done else f"no failed run to retry in {name}"
    return {"study": name, "ids": done, "message": message}

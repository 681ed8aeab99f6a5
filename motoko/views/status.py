"""Status of a workflow: counts by state, running runs, latest failures.

:func:`collect_status` reads what ``motoko status`` shows from the state
indexes (so it costs O(active + failed runs), not O(all runs));
:func:`render_text` lays it out for a terminal and :func:`to_json` for
scripts. Styling uses click styles, which ``click.echo`` strips when the
output is not a terminal.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import click

from motoko.study.liveness import launcher_records, silence_note
from motoko.study.prefetch import prefetch
from motoko.study.records import Run, now
from motoko.study.states import ACTIVE, CREATED, STATES
from motoko.study.unserved import unserved

if TYPE_CHECKING:
    from motoko.flow.outdated import OutdatedCount, OutdatedReport

#: States reported as failures, newest first.
FAILURE_STATES = ("FAILED", "LOST")

#: Terminal colours of the states (user states are shown plain).
STATE_COLOURS = {
    "CREATED": "blue",
    "LAUNCHED": "cyan",
    "RUNNING": "yellow",
    "FINISHED": "green",
    "FAILED": "red",
    "LOST": "magenta",
    "CANCELLED": "bright_black",
}


@dataclass
class RunLine:
    """One run as the status shows it (a running run or a failure)."""

    study: str
    id: int
    state: str
    progress: float | None = None
    machine_name: str | None = None
    status: str | None = None
    started: _dt.datetime | None = None
    finished: _dt.datetime | None = None
    exit_code: int | None = None
    error: str | None = None
    note: str | None = None

    @classmethod
    def of(cls, run: Run, note: str | None = None) -> RunLine:
        """Describe ``run``; ``error`` is the last non-empty line of its error text."""
        return cls(
            note=note,
            study=run.study,
            id=run.id,
            state=run.state,
            progress=run.progress,
            machine_name=run.machine_name,
            status=run.status,
            started=run.started or run.launched,
            finished=run.finished,
            exit_code=run.exit_code,
            error=error_line(run.error),
        )


@dataclass
class StudyStatus:
    """Counts of one study's runs by state."""

    name: str
    counts: dict[str, int]
    database: str = ""

    @property
    def total(self) -> int:
        """Number of runs in the study."""
        return sum(self.counts.values())

    @property
    def unfinished(self) -> int:
        """Runs not yet in a terminal or user state (CREATED, LAUNCHED, RUNNING)."""
        return sum(n for s, n in self.counts.items() if s == CREATED or s in ACTIVE)


#: Runs of a resumed run name beyond which ``motoko status`` does not read them to find outdated
#: ones: it counts them (motoko.study.outdated_counts), or, in a study without counts, leaves a note.
OUTDATED_CHECK_LIMIT = 10_000


@dataclass
class Status:
    """What ``motoko status`` shows, at one moment."""

    studies: list[StudyStatus]
    running: list[RunLine] = field(default_factory=list)
    failures: list[RunLine] = field(default_factory=list)
    taken: _dt.datetime = field(default_factory=now)
    more_running: int = 0
    #: What launchers want the user to know (sbatch refusing jobs for now),
    #: and runs whose launcher went silent.
    notes: list[str] = field(default_factory=list)
    outdated: list[OutdatedReport | OutdatedCount] = field(default_factory=list)
    #: "3 runs waiting, no launcher alive: `motoko launcher start`", or None.
    unserved: str | None = None

    @property
    def states(self) -> list[str]:
        """motoko's states, then any user state some study has, in first-seen order."""
        out = list(STATES)
        for study in self.studies:
            out += [s for s in study.counts if s not in out]
        return out

    @property
    def done(self) -> bool:
        """True when there are runs and none waits or executes."""
        return any(s.total for s in self.studies) and not any(s.unfinished for s in self.studies)


def error_line(error: str | None) -> str | None:
    """The last non-empty line of an error text (what usually names the problem)."""
    if not error:
        return None
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else None


def collect_status(
    workflow: Any, studies: Iterable[str] | None = None, *, running: int = 20, failures: int = 5
) -> Status:
    """Read the status of a workflow's studies now.

    Args:
        workflow: An open :class:`~motoko.flow.workflow.Workflow`.
        studies: Study names (default: every study of motoko.yaml).
        running: At most this many running runs are listed (the rest counted).
        failures: The newest this many FAILED or LOST runs are listed.
    """
    names = [workflow.config.resolve(s) for s in studies] if studies else list(workflow.task_managers)
    rows: list[StudyStatus] = []
    active: list[RunLine] = []
    failed: list[RunLine] = []
    notes: list[str] = []
    stamp = now()
    pairs = []
    in_flight = 0
    for name in names:
        db = workflow.db_for(name)
        study = db.study(name)
        pairs.append((db, name))
        counts = study.counts()
        rows.append(StudyStatus(name, counts, str(db.address)))
        in_flight += counts.get("RUNNING", 0) + counts.get("LAUNCHED", 0)
        launchers = launcher_records(db)
        lost_after = workflow.task_managers[name].schema.lost_after or workflow.config.lost_after
        # A study of a million runs may have thousands running or failed: only
        # the newest few of each are read (run ids grow with creation), in one batch.
        for state in ("RUNNING", "LAUNCHED"):
            for run in _newest(study.ids_in_state(state), _LOOK_AHEAD * running):
                record = launchers.get(run.launcher or "")
                active.append(RunLine.of(run, silence_note(run, record, lost_after, stamp)))
        for state in FAILURE_STATES:
            failed += [RunLine.of(run) for run in _newest(study.ids_in_state(state), _LOOK_AHEAD * failures)]
        notes += launcher_notes(launchers, name, lost_after, stamp)
    silent = sum(1 for r in active if r.note)
    if silent:
        notes.append(f"{silent} run(s) whose launcher stopped heart-beating: start a launcher to recover them")
    oldest = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    active.sort(key=lambda r: (r.state != "RUNNING", -(r.progress or 0.0), r.study, r.id))
    failed.sort(key=lambda r: r.finished or oldest, reverse=True)
    reports, more_notes = outdated_reports(workflow)
    notes += more_notes
    waiting = unserved(pairs, within=workflow.config.lost_after)
    return Status(
        rows, active[:running], failed[:failures], more_running=max(0, in_flight - running),
        notes=sorted(set(notes)), outdated=reports, unserved=str(waiting) if waiting else None,
    )


def outdated_reports(workflow: Any) -> tuple[list[OutdatedReport | OutdatedCount], list[str]]:
    """The outdated runs of the run names `motoko run` resumes, and notes on those not checked.

    The studies' counters answer first, reading no run: nothing outdated
    nor kept ends it there. Otherwise a run name of up to
    :data:`OUTDATED_CHECK_LIMIT` runs is read whole (which runs, which files,
    their descendants); a bigger one is shown by its counts, or, in a study
    made before counts existed, left to ``motoko run --dry-run`` with a note.
    """
    # (Imported here: `motoko` commands that only format states start faster.)
    from motoko.flow.outdated import count_outdated, current_run_names, find_outdated, run_name_size

    reports: list[OutdatedReport | OutdatedCount] = []
    notes: list[str] = []
    for run_name in sorted(set(current_run_names(workflow.directory).values())):
        counted = count_outdated(workflow, run_name)
        if counted is not None and not counted and not counted.kept:
            continue
        # Reading every run costs ~40 µs each: status stays well under a second.
        if run_name_size(workflow, run_name, OUTDATED_CHECK_LIMIT) > OUTDATED_CHECK_LIMIT:
            if counted is not None:
                reports.append(counted)
                continue
            notes.append(
                f"outdated runs of {run_name} not checked: it holds more than {OUTDATED_CHECK_LIMIT:,} runs"
                " (`motoko run FILE --dry-run` checks them)"
            )
            continue
        report = find_outdated(workflow, run_name)
        if report or report.kept:
            reports.append(report)
    return reports, notes


def run_note(workflow: Any, run: Run) -> str | None:
    """The silence note of one run ("launcher gone 40 s ago: ..."), or None (read-only)."""
    db = workflow.db_for(run.study)
    lost_after = workflow.task_managers[run.study].schema.lost_after or workflow.config.lost_after
    return silence_note(run, launcher_records(db).get(run.launcher or ""), lost_after)


def silent_counts(workflow: Any) -> dict[str, str]:
    """Per study with silent runs: ``N run(s): launcher gone S s ago: start a launcher...`` (read-only)."""
    out = {}
    for name in workflow.task_managers:
        study = workflow.db_for(name).study(name)
        notes = [run_note(workflow, run) for state in ACTIVE for run in study.ids_in_state(state).values()]
        found = [note for note in notes if note]
        if found:
            out[name] = f"{len(found)} run(s): {min(found, key=len)}"
    return out


def launcher_notes(launchers: Any, study: str, lost_after: float, stamp: _dt.datetime) -> list[str]:
    """The notes of the live launchers serving ``study`` (``launcher ID: NOTE``)."""
    return [
        f"launcher {record.id}: {record.note}"
        for record in launchers.values()
        if record.note and record.stopped is None and study in record.studies
        and (stamp - record.heartbeat).total_seconds() <= lost_after
    ]


#: Runs read per state for every one listed: the listed ones are sorted by
#: progress or end time, which the run ids only approximate.
_LOOK_AHEAD = 10


def _newest(runs: Any, n: int) -> list[Run]:
    """The ``n`` runs with the highest ids of a state index, fetched in one batch."""
    picked: list[Run] = []
    key = None
    while len(picked) < n:
        try:
            key = runs.maxKey() if key is None else runs.maxKey(key - 1)
        except ValueError:  # nothing below
            break
        picked.append(runs[key])
    prefetch(picked)
    return picked


# -- rendering ---------------------------------------------------------------------------


def style_state(text: str, state: str) -> str:
    """``text`` in the colour of ``state`` (plain for user states)."""
    colour = STATE_COLOURS.get(state)
    return click.style(text, fg=colour, bold=state in ("FAILED", "LOST")) if colour else text


def progress_bar(fraction: float | None, width: int = 12) -> str:
    """A bar like ``███████░░░░░  58%``; blank when the run reports no progress."""
    if fraction is None:
        return " " * (width + 6)
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled) + f" {fraction * 100:4.0f}%"


def _ago(moment: _dt.datetime | None, reference: _dt.datetime) -> str:
    if moment is None:
        return ""
    seconds = max(0, int((reference - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _counts_table(status: Status) -> list[str]:
    states = [s for s in status.states if s in STATES or any(st.counts.get(s) for st in status.studies)]
    header = ["study", "total", *states]
    body = [[st.name, str(st.total), *(str(st.counts.get(s, 0)) if st.counts.get(s) else "·" for s in states)] for st in status.studies]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(click.style(h.ljust(w) if i == 0 else h.rjust(w), bold=True) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    for row in body:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
        for state, text, width in zip(states, row[2:], widths[2:], strict=True):
            padded = text.rjust(width)
            cells.append(style_state(padded, state) if text != "·" else click.style(padded, dim=True))
        lines.append("  ".join(cells))
    return lines


def render_text(status: Status, *, title: str | None = None) -> str:
    """The status as aligned text with click styles (stripped when piped)."""
    stamp = status.taken.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    lines = [click.style(title or "motoko status", bold=True) + click.style(f"  {stamp}", dim=True), ""]
    if not status.studies:
        return "\n".join([*lines, "no study"])
    lines += _counts_table(status)
    if status.unserved:
        lines += ["", click.style(status.unserved, fg="yellow", bold=True)]
    if status.running:
        extra = f" (+{status.more_running} more)" if status.more_running else ""
        lines += ["", click.style(f"running{extra}", bold=True)]
        names = [f"{r.study}.{r.id}" for r in status.running]
        width = max(len(n) for n in names)
        for name, r in zip(names, status.running, strict=True):
            parts = [
                "  " + name.ljust(width),
                style_state(r.state.ljust(8), r.state),
                progress_bar(r.progress),
                (r.machine_name or "").ljust(10),
                click.style(_ago(r.started, status.taken).rjust(7), dim=True),
            ]
            if r.status:
                parts.append(r.status)
            if r.note:
                parts.append(click.style(r.note, fg="red"))
            lines.append("  ".join(parts).rstrip())
    if not status.running:
        lines += ["", click.style("nothing is running", dim=True)]
    if status.notes:
        lines += ["", click.style("notes", bold=True), *(f"  {click.style(note, fg='red')}" for note in status.notes)]
    if status.outdated:
        lines += ["", click.style("outdated (motoko run asks before reusing them)", bold=True)]
        for report in status.outdated:
            if report:
                lines.append("  " + click.style(report.summary(), fg="yellow"))
            kept_counts = report.kept_counts()
            kept = sum(kept_counts.values())
            if kept:
                studies = ", ".join(f"{n} of {study}" for study, n in kept_counts.items())
                lines.append(f"  {kept} run(s) of {report.run_name} reused although outdated (--keep-outdated): {studies}")
    if status.failures:
        lines += ["", click.style("latest failures", bold=True)]
        names = [f"{r.study}.{r.id}" for r in status.failures]
        width = max(len(n) for n in names)
        for name, r in zip(names, status.failures, strict=True):
            what = r.state + (f" (exit {r.exit_code})" if r.exit_code is not None else "")
            when = _ago(r.finished, status.taken)
            parts = ["  " + name.ljust(width), style_state(what.ljust(16), r.state), click.style((when + " ago").rjust(9), dim=True) if when else " " * 9]
            parts.append(r.error or "")
            lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def to_json(status: Status) -> dict[str, Any]:
    """The status as JSON-serialisable data (datetimes as ISO strings)."""

    def line(r: RunLine) -> dict[str, Any]:
        data = asdict(r)
        for key in ("started", "finished"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data

    return {
        "time": status.taken.isoformat(),
        "studies": [
            {"study": s.name, "total": s.total, "counts": dict(s.counts), "database": s.database} for s in status.studies
        ],
        "running": [line(r) for r in status.running],
        "more_running": status.more_running,
        "failures": [line(r) for r in status.failures],
        "notes": list(status.notes),
        "outdated": [
            {
                "run_name": r.run_name, "total": r.total, "files": r.files(), "summary": r.summary() if r else "",
                "runs": [f"{study}.{rid}" for study, rid in r.runs()],
                "kept": [f"{study}.{rid}" for study, rid in r.kept_runs()],
                "kept_total": sum(r.kept_counts().values()),
            }
            for r in status.outdated
        ],
        "done": status.done,
        "unserved": status.unserved,
    }


__all__ = ["Status", "StudyStatus", "RunLine", "collect_status", "render_text", "run_note", "silent_counts", "to_json"]

"""Runs as notebook HTML and as short text: what ``display(rl)`` shows.

Handles (RunList, TaskSelection, the study manager) and a single Run render
through here, so every table looks alike: one row per run with its state in
colour, a progress bar, the job's parameters and the run's key results (its
``output`` entries, free attributes such as ``run.y`` and the last value of
each quantity), capped at :data:`ROW_LIMIT` rows and a "… N more" line. A run
alone shows its fields, the last lines of its stdout and its quantities.

Every value is HTML-escaped: parameters and outputs are user data (a string
parameter may hold ``<script>``). Rendering only reads; it lives in the study
layer because :class:`~motoko.study.records.Run` renders itself, and the
study layer imports nothing above it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from motoko.study.fields import BUILTIN_RUN_FIELDS
from motoko.study.run_files import Run as RunWithFiles
from motoko.study.run_files import tail_lines


class Run(RunWithFiles, Protocol):
    """A run as display reads it: any attribute of a stored :class:`~motoko.study.records.Run`.

    A protocol: runs render themselves with this module, so it does not import them.
    """

    def __getattr__(self, name: str) -> Any: ...

#: Rows a table shows before "… N more".
ROW_LIMIT = 20
#: Characters of one cell before it is cut with "…".
CELL_LIMIT = 60
#: Lines of stdout a run shows.
LOG_LINES = 10

#: Background colour of each state's badge (user states are grey).
STATE_COLOURS = {
    "CREATED": "#9e9e9e",
    "LAUNCHED": "#42a5f5",
    "RUNNING": "#1565c0",
    "FINISHED": "#2e7d32",
    "FAILED": "#c62828",
    "LOST": "#6a1b9a",
    "CANCELLED": "#ef6c00",
}
_OTHER_COLOUR = "#616161"

#: Run attributes that are bookkeeping, not results: never shown as results.
_BOOKKEEPING = frozenset(BUILTIN_RUN_FIELDS) | {
    "history", "heartbeat", "stop_requested", "executor_id", "workflow", "parents", "metadata", "output", "study",
}

_STYLE = (
    "<style>.motoko-table td,.motoko-table th{padding:2px 8px;text-align:left;white-space:nowrap}"
    ".motoko-state{color:white;border-radius:3px;padding:0 4px;font-size:90%}"
    ".motoko-bar{display:inline-block;width:60px;height:8px;background:#e0e0e0;vertical-align:middle}"
    ".motoko-bar>span{display:block;height:8px;background:#43a047}</style>"
)


def cell(value: Any) -> str:
    """``value`` as escaped text for one table cell, cut to :data:`CELL_LIMIT` characters."""
    if value is None:
        return ""
    if isinstance(value, float) and len(repr(value)) > 12:
        value = f"{value:.6g}"  # 3.656158440062973e-05 reads better as 3.65616e-05
    text = value if isinstance(value, str) else repr(value) if isinstance(value, list | dict | tuple) else str(value)
    if len(text) > CELL_LIMIT:
        text = text[: CELL_LIMIT - 1] + "…"
    return html.escape(text)


def state_badge(state: str) -> str:
    """A coloured badge for ``state``."""
    colour = STATE_COLOURS.get(state, _OTHER_COLOUR)
    return f'<span class="motoko-state" style="background:{colour}">{html.escape(state)}</span>'


def progress_bar(fraction: float | None) -> str:
    """A small bar filled to ``fraction`` (empty when the run set none), with its percentage."""
    if fraction is None:
        return ""
    percent = max(0.0, min(1.0, float(fraction))) * 100
    return f'<span class="motoko-bar"><span style="width:{percent:.0f}%"></span></span> {percent:.0f}%'


def results_of(run: Run) -> dict[str, Any]:
    """A run's key results: ``output`` entries, free attributes, last value of each quantity."""
    run._p_activate()  # a ghost's __dict__ is empty
    out: dict[str, Any] = {}
    for name, value in (run.output or {}).items():
        out[f"output.{name}"] = value
    for name, value in run.__dict__.items():
        if not name.startswith("_") and name not in _BOOKKEEPING:
            out[name] = value
    stored = run._quantities
    for name in run.list_quantities():
        steps = stored[name].steps if stored is not None else None
        out[f"q.{name}"] = steps[steps.maxKey()] if steps else None
    return out


def count_states(runs: Iterable[Run]) -> dict[str, int]:
    """Runs per state, each run counted once, in order of first appearance."""
    counts: dict[str, int] = {}
    for run in {r.id: r for r in runs}.values():
        counts[run.state] = counts.get(run.state, 0) + 1
    return counts


def summary(title: str, runs: Sequence[Run]) -> str:
    """One line: ``calc: 3 runs (2 FINISHED, 1 RUNNING)`` (the plain-text face of a table)."""
    counts = count_states(runs)
    total = sum(counts.values())
    states = ", ".join(f"{n} {state}" for state, n in counts.items())
    return f"{title}: {total} run{'s' if total != 1 else ''}" + (f" ({states})" if states else "")


def runs_html(title: str, runs: Sequence[Run], limit: int = ROW_LIMIT) -> str:
    """The HTML table of ``runs`` under a ``title`` line (see the module docstring)."""
    unique = list({r.id: r for r in runs}.values())
    shown = unique[:limit]
    params = _union(dict(r.job.params) for r in shown)
    results = _union(results_of(r) for r in shown)
    head = ["id", "state", "progress", "status", *params, *results]
    rows = []
    for run in shown:
        job = dict(run.job.params)
        found = results_of(run)
        cells = [cell(run.id), state_badge(run.state), progress_bar(run.progress), cell(run.status)]
        cells += [cell(job.get(name)) for name in params]
        cells += [cell(found.get(name)) for name in results]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if len(unique) > len(shown):
        rows.append(f'<tr><td colspan="{len(head)}">… {len(unique) - len(shown)} more</td></tr>')
    header = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
    return (
        f'<div class="motoko">{_STYLE}<b>{html.escape(summary(title, unique))}</b>'
        f'<table class="motoko-table">{header}{"".join(rows)}</table></div>'
    )


def run_html(run: Run, log_lines: int = LOG_LINES) -> str:
    """One run: its fields, the last lines of its stdout and its quantities."""
    fields: dict[str, Any] = {
        "study": run.study, "id": run.id, "job_id": run.job_id, **dict(run.job.params),
        "run_name": run.run_name, "created": run.created, "started": run.started, "finished": run.finished,
        "exit_code": run.exit_code, "error": run.error, "status": run.status, "attempt": run.attempt,
        "run_path": run.run_path,
    }
    rows = [f"<tr><th>state</th><td>{state_badge(run.state)}</td></tr>",
            f"<tr><th>progress</th><td>{progress_bar(run.progress)}</td></tr>"]
    rows += [f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in fields.items() if v is not None]
    rows += [f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in results_of(run).items()]
    out = [f'<div class="motoko">{_STYLE}<b>{html.escape(f"run {run.study}.{run.id}")}</b>',
           f'<table class="motoko-table">{"".join(rows)}</table>']
    lines = _last_lines(run, log_lines)
    if lines:
        out.append(f"<details open><summary>stdout (last {len(lines)} lines)</summary>"
                   f"<pre>{html.escape(chr(10).join(lines))}</pre></details>")
    quantities = _quantity_rows(run)
    if quantities:
        out.append('<table class="motoko-table"><tr><th>quantity</th><th>steps</th><th>last value</th></tr>'
                   f"{quantities}</table>")
    out.append("</div>")
    return "".join(out)


def _last_lines(run: Run, lines: int) -> list[str]:
    try:
        return tail_lines(run, "stdout", lines)
    except (OSError, ValueError):  # no directory or no stdout yet, or not on this host
        return []


def _quantity_rows(run: Run) -> str:
    stored = run._quantities
    if stored is None:
        return ""
    rows = []
    for name in run.list_quantities():
        steps = stored[name].steps
        last = steps[steps.maxKey()] if steps else None
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{len(steps)}</td><td>{cell(last)}</td></tr>")
    return "".join(rows)


def _union(mappings: Iterable[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for mapping in mappings:
        names.update(dict.fromkeys(mapping))
    return list(names)

"""``motoko run``'s progress display: bars on a terminal, plain lines elsewhere.

On a terminal, one tqdm bar per study of the workflow's run name fills with
the runs' own ``set_progress`` (an ended run counts as 1), followed by the
counts (``2/3 finished, 1 running``) and the running runs' progress; tqdm
gives the elapsed time and the ETA. Elsewhere (a batch job, ``nohup``, CI)
nothing is redrawn: a plain line every ``every`` seconds (``--progress-every``,
``MOTOKO_PROGRESS_EVERY``) says the same, so a log shows how far the workflow
got. Both say once, within seconds, when runs wait with no launcher alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import click

from motoko.flow.launcher_watch import HINT_AFTER, watch_for
from motoko.flow.waiting import Progress, progress_of
from motoko.study.records import CREATED, RUNNING

#: Seconds between two plain progress lines when stderr is not a terminal.
DEFAULT_EVERY = 30.0
#: Running runs named after the counts (the rest are counted).
SHOWN_RUNNING = 3
#: Seconds between two redraws of the bars (a burst of commits is one redraw).
REDRAW = 0.2


def progress_every(given: float | None) -> float:
    """The interval of plain lines: the option, else ``MOTOKO_PROGRESS_EVERY``, else 30 s."""
    if given is not None:
        return given
    try:
        return max(0.1, float(os.environ.get("MOTOKO_PROGRESS_EVERY", DEFAULT_EVERY)))
    except ValueError:
        return DEFAULT_EVERY


@dataclass
class StudyView:
    """What is shown of one study: its runs' progress and the running ones' own."""

    name: str
    progress: Progress
    running: list[tuple[int, float | None]]
    waiting: int


def read_studies(workflow: Any) -> list[StudyView]:
    """The progress of each study's runs of the workflow's run name (studies without runs left out)."""
    views = []
    for name in workflow.task_managers:
        runs = workflow[name].select().runs()
        if not runs:
            continue
        # Named: the runs whose process started (LAUNCHED ones are still queued).
        running = [(r.id, r.progress) for r in runs if r.state == RUNNING]
        waiting = sum(1 for r in runs if r.state == CREATED)
        views.append(StudyView(name, progress_of(runs), running, waiting))
    return views


def describe(view: StudyView) -> str:
    """``2/3 finished (67%), 1 running: calc.3 40%`` (the counts, then the running runs)."""
    text = str(view.progress)
    if view.running:
        shown = [f"{view.name}.{rid}" + ("" if p is None else f" {100 * p:.0f}%") for rid, p in view.running[:SHOWN_RUNNING]]
        more = f" +{len(view.running) - SHOWN_RUNNING}" if len(view.running) > SHOWN_RUNNING else ""
        text += ": " + ", ".join(shown) + more
    return text


class Eta:
    """The time left, from the pace of the overall progress since the display started."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first: float | None = None

    def left(self, views: list[StudyView]) -> float | None:
        """Seconds left at the pace so far (None before anything moved)."""
        total = sum(v.progress.total for v in views)
        if not total:
            return None
        done = sum(v.progress.overall * v.progress.total for v in views) / total
        if self.first is None:
            self.first = done
        elapsed = time.monotonic() - self.start
        if done >= 1.0:
            return 0.0
        if done <= self.first or elapsed <= 0:
            return None
        return (1.0 - done) * elapsed / (done - self.first)


def clock(seconds: float) -> str:
    """``1:02:03`` or ``02:03``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def plain_line(views: list[StudyView], elapsed: float, eta: float | None) -> str:
    """One line for a log: ``[00:12] calc: 2/3 finished (67%), 1 running: calc.3 40% | eta 00:06``."""
    body = " | ".join(f"{v.name}: {describe(v)}" for v in views) or "no run yet"
    tail = f" | eta {clock(eta)}" if eta is not None else ""
    return f"[{clock(elapsed)}] {body}{tail}"


class Bars:
    """One tqdm bar per study on stderr, redrawn in place."""

    def __init__(self, width: int = 0) -> None:
        self._bars: dict[str, Any] = {}
        self._width = width  # study names padded to it, so the bars line up

    def show(self, views: list[StudyView]) -> None:
        """Redraw (adding a bar for a study that got its first runs)."""
        from tqdm import tqdm

        for view in views:
            bar = self._bars.get(view.name)
            total = max(view.progress.total, 1)
            if bar is None:
                bar = self._bars[view.name] = tqdm(
                    total=total, desc=f"{view.name}:".ljust(self._width + 1), unit=describe(view), file=sys.stderr, position=len(self._bars), leave=True,
                    dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {unit} [{elapsed}<{remaining}]",
                )
            bar.total = total
            bar.n = round(view.progress.overall * total, 3)
            bar.unit = describe(view)  # (tqdm's postfix would start with ", ")
            bar.refresh()

    def write(self, text: str) -> None:
        """A line above the bars."""
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        """Leave the bars on screen as they last were."""
        for bar in self._bars.values():
            bar.close()


async def monitor(workflow: Any, *, tty: bool | None = None, every: float | None = None) -> None:
    """Show the progress of the workflow's runs until cancelled (``motoko run``'s monitor).

    Args:
        tty: Draw bars (default: when stderr is a terminal); else plain lines.
        every: Seconds between plain lines (see :func:`progress_every`).
    """
    tty = sys.stderr.isatty() if tty is None else tty
    interval = progress_every(every)
    watch = watch_for(workflow)
    watch.take_over()  # the display says "no launcher alive" itself, once
    started = time.monotonic()
    eta = Eta()
    bars = Bars(max((len(name) for name in workflow.task_managers), default=0)) if tty else None
    hint_at: float | None = started + HINT_AFTER
    next_line = started + interval
    waiter = workflow.change_waiter()
    try:
        while True:
            views = read_studies(workflow)
            now = time.monotonic()
            left = eta.left(views)  # from the first read on: the pace is measured since the start
            if hint_at is not None and now >= hint_at:
                pending = [(v.name, 0, CREATED) for v in views for _ in range(v.waiting)]
                found = watch.check(pending) if pending else None
                # Said once; until then looked at again every few seconds (a later
                # step's runs may be the first to wait).
                hint_at = None if found is not None else now + HINT_AFTER
                if found is not None and bars is not None:
                    bars.write(f"motoko: {found}")
                elif found is not None:
                    click.echo(f"motoko: {found}", err=True)
            if bars is not None:
                bars.show(views)
                await asyncio.sleep(REDRAW)
                await waiter.wait(1.0)
                continue
            if now >= next_line:
                click.echo(plain_line(views, now - started, left), err=True)
                next_line = now + interval
            wake = min(t for t in (next_line, hint_at) if t is not None)
            await asyncio.sleep(max(0.01, wake - time.monotonic()))
    finally:
        waiter.close()
        if bars is not None:
            with contextlib.suppress(Exception):  # the end as it is: every bar at its last count
                bars.show(read_studies(workflow))
            bars.close()

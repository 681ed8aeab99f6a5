"""Rendering rows for the terminal: aligned tables, JSON, CSV.

Tables are coloured only when stdout is a terminal (click strips styles when
piped), so scripts reading ``motoko select`` output see plain text.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click

from motoko.study.values import jsonable
from motoko.views.status import STATE_COLOURS  # one palette for every view


def cell(value: Any) -> str:
    """Text of one value: dates without microseconds, floats short, None empty."""
    if value is None:
        return ""
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple | dict):
        return json.dumps(jsonable(value), default=str)
    text = jsonable(str(value))  # a lone surrogate would break the terminal's encoding
    return str(text).replace("\n", "⏎")


def colour_state(text: str, state: str) -> str:
    """Style a state name by its meaning."""
    colour = STATE_COLOURS.get(state)
    return click.style(text, fg=colour) if colour else text


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, state_column: str | None = "state") -> str:
    """An aligned text table with a bold header; states coloured."""
    return "\n".join(stream_table(columns, [rows], state_column=state_column))


def stream_table(
    columns: Sequence[str], pages: Iterable[Sequence[Sequence[Any]]], *, state_column: str | None = "state"
) -> Iterator[str]:
    """The lines of :func:`table` for rows that come in pages, each page's as it comes.

    Column widths are set by the first page (a longer value later is cut
    with "…", as any value over 60 characters is): the first lines of a
    long selection are printed before its last rows are read.
    """
    widths: list[int] | None = None
    state_index = columns.index(state_column) if state_column in columns else -1
    for page in pages:
        texts = [[cell(v) for v in row] for row in page]
        if widths is None:
            widths = [len(c) for c in columns]
            for row in texts:
                for i, text in enumerate(row):
                    widths[i] = min(max(widths[i], len(text)), 60)
            yield "  ".join(click.style(c.ljust(w), bold=True) for c, w in zip(columns, widths, strict=True)).rstrip()
        for row in texts:
            parts = []
            for i, (text, width) in enumerate(zip(row, widths, strict=True)):
                shown = text if len(text) <= width else text[: width - 1] + "…"
                padded = shown.ljust(width)
                parts.append(colour_state(padded, text) if i == state_index else padded)
            yield "  ".join(parts).rstrip()


def stream(columns: Sequence[str], pages: Iterable[Sequence[Sequence[Any]]], fmt: str) -> Iterator[str]:
    """The text of :func:`render` (``json`` or ``csv``) for rows that come in pages, as they come."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        yield out.getvalue().rstrip("\n")
        for page in pages:
            out.seek(0)
            out.truncate()
            for row in page:
                writer.writerow([cell(v) for v in row])
            if page:
                yield out.getvalue().rstrip("\n")
        return
    # JSON: the list render() prints, one object at a time (each held back
    # until the next shows whether it needs its comma).
    held: str | None = None
    for page in pages:
        for row in page:
            text = " " + json.dumps({c: jsonable(v) for c, v in zip(columns, row, strict=True)}, indent=1).replace("\n", "\n ")
            yield "[" if held is None else held + ","
            held = text
    yield "[]" if held is None else held + "\n]"


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as ``table``, ``json`` (a list of objects) or ``csv``."""
    if fmt == "json":
        return json.dumps([{c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in rows], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(v) for v in row])
        return out.getvalue().rstrip("\n")
    return table(columns, rows)


class OneLineLogs(logging.Formatter):
    """Log records on one line each: an exception becomes ``(Type: message)``, not a traceback.

    ZODB, ZEO and ``transaction`` log tracebacks while a server is away
    (e.g. "Failed to abort resource manager"); motoko recovers from that and
    says so in its own warning, so the CLI shows them as one line. ``--debug``
    keeps every traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            record.msg = f"{record.getMessage()} ({type(error).__name__}: {error})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        return super().format(record)


def one_line_logs(debug: bool) -> None:
    """Make the root logger's handlers print one line per record, unless ``debug``."""
    if debug:
        return
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OneLineLogs(handler.formatter._fmt if handler.formatter else None))  # noqa: SLF001

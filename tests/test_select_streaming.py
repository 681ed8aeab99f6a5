"""`motoko select` prints rows as they are made, a page of runs (and their jobs) at a time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from conftest import motoko, write_config, write_study

from motoko.cli.db_commands import PAGE
from motoko.cli.format import render, stream, stream_table, table

COLUMNS = ["id", "state"]


def _pages(log: list[str], pages: list[list[list[Any]]]) -> Iterator[list[list[Any]]]:
    for number, page in enumerate(pages):
        log.append(f"page {number}")
        yield page


def test_the_first_lines_are_out_before_the_next_page_is_read():
    for fmt in ("table", "json", "csv"):
        log: list[str] = []
        pages = _pages(log, [[[1, "FINISHED"]], [[2, "CREATED"]], [[3, "CREATED"]]])
        lines = stream_table(COLUMNS, pages) if fmt == "table" else stream(COLUMNS, pages, fmt)
        first = [next(lines), next(lines)]
        assert "page 2" not in log and "1" in first[1], f"{fmt}: the first run is printed before the last page is read"


def test_streamed_text_is_what_rendering_all_rows_at_once_gives():
    rows = [[1, "FINISHED"], [2, None], [3, [1.5, "a"]]]
    for fmt in ("json", "csv"):
        assert "\n".join(stream(COLUMNS, [rows[:1], [], rows[1:]], fmt)) == render(COLUMNS, rows, fmt)
        assert "\n".join(stream(COLUMNS, [], fmt)) == render(COLUMNS, [], fmt)
    assert "\n".join(stream_table(COLUMNS, [rows])) == table(COLUMNS, rows)


def test_a_table_keeps_the_widths_of_its_first_page():
    lines = [click.unstyle(line) for line in stream_table(["name"], [[["ab"]], [["a much longer name"]]])]
    assert lines == ["name", "ab", "a m…"]


def test_select_over_several_pages_prints_every_run_once(workdir: Path):
    write_study(workdir, "big", "{x: int}", "")
    write_config(workdir, ["big"])
    from motoko.flow.workflow import Workflow

    runs = PAGE * 2 + 7
    workflow = Workflow(workdir)
    try:
        workflow.big.createTask(x=list(range(runs)))
    finally:
        workflow.close()
    out = motoko("select", "--format", "csv", "--fields", "id,x", cwd=workdir)
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["study", "id", "x"] and len(rows) == runs + 1
    assert sorted(int(row[2]) for row in rows[1:]) == list(range(runs)), "every run's own job"
    as_json = json.loads(motoko("select", "x >= 3", "--format", "json", "--fields", "x", cwd=workdir).stdout)
    assert [row["x"] for row in as_json] == list(range(3, runs))
    lines = motoko("select", "--study", "big", cwd=workdir).stdout.splitlines()
    assert lines[0] == f"big: {runs} run(s)" and len(lines) == runs + 2

"""The dashboard's runs table (motoko.views.web.api.runs_table) on a real ZEO server: pages, totals, filters."""

from __future__ import annotations

from pathlib import Path

from conftest import write_config, write_study

from motoko.flow.workflow import Workflow
from motoko.views.web.api import runs_table


def test_pages_of_every_run_and_of_a_filter_read_like_the_whole_selection(workdir: Path):
    write_study(workdir, "calc", "{x: float}", "")
    write_config(workdir, ["calc"])
    with Workflow(workdir, run_name="r1") as wf:
        wf.calc.createTask(x=[float(i) for i in range(12)])
        wf.calc.runs[3].cancel()
        wf.db_for("calc").transact(lambda: wf.db_for("calc").study("calc").delete(wf.calc.runs[5]))
        every = [run.id for run in reversed(wf.db_for("calc").select("calc"))]
        assert every == [12, 11, 10, 9, 8, 7, 6, 4, 3, 2, 1]
        first = runs_table(wf, "calc", limit=4)
        assert [row[0] for row in first["rows"]] == every[:4] and first["total"] == 11
        assert first["rows"][0][:3] == [12, "CREATED", 11.0]  # id, state, x (read with the job)
        later = runs_table(wf, "calc", limit=4, offset=6)
        assert [row[0] for row in later["rows"]] == every[6:10]
        assert [row[0] for row in runs_table(wf, "calc", limit=4, offset=10)["rows"]] == [1]
        cancelled = runs_table(wf, "calc", "state = CANCELLED")
        assert [row[:3] for row in cancelled["rows"]] == [[3, "CANCELLED", 2.0]] and cancelled["total"] == 1

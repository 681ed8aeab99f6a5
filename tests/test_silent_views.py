"""No run looks alive forever: the views mark runs whose launcher went silent, and change nothing."""

from __future__ import annotations

import datetime as dt
import json
import re

from conftest import motoko
from launch_support import create_runs, make_study, run_of

from motoko.flow.workflow import Workflow
from motoko.study.container import LauncherRecord
from motoko.views.web.api import overview

CONFIG = "lost_after: 30\nlauncher: {executor: local}\n"


def _launched_by_a_dead_launcher(db, rid: int, seconds: float) -> None:
    then = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)

    def change() -> None:
        record = LauncherRecord("launcher-7", "elsewhere", 999_999_999, "slurm", ["s"])
        record.heartbeat = then
        record.note = "SLURM refused jobs for now (stale words of a dead launcher)"
        db.launchers()["launcher-7"] = record
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, "LAUNCHED", launcher="launcher-7", heartbeat=then, machine_name="elsewhere")
        study.transition(run, "RUNNING")
        run.launched = run.created = then

    db.transact(change)


def test_status_info_runs_show_and_the_dashboard_mark_silent_runs(workdir):
    _, db = make_study(workdir, CONFIG)
    silent, alive = create_runs(db, x=[1, 2])
    _launched_by_a_dead_launcher(db, silent, 100)
    serial = run_of(db, silent)._p_serial

    status = motoko("status", cwd=workdir)
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.strip().startswith(f"s.{silent} "))
    assert re.search(r"launcher gone 1\d\d s ago: start a launcher to recover them$", line)
    assert "1 run(s) whose launcher stopped heart-beating: start a launcher to recover them" in status.stdout
    assert "stale words of a dead launcher" not in status.stdout  # a dead launcher's note is not news

    as_json = json.loads(motoko("status", "--format", "json", cwd=workdir).stdout)
    assert as_json["running"][0]["note"].startswith("launcher gone")

    info = motoko("info", cwd=workdir)
    assert re.search(r"^s: 1 run\(s\): launcher gone 1\d\d s ago: start a launcher to recover them$", info.stdout, re.M)

    show = motoko("runs", "show", f"s.{silent}", cwd=workdir).stdout.splitlines()
    assert re.fullmatch(r"note +launcher gone 1\d\d s ago: start a launcher to recover them", show[-1])
    assert "note" not in motoko("runs", "show", f"s.{alive}", cwd=workdir).stdout

    with Workflow(workdir / "motoko.yaml") as workflow:
        page = overview(workflow)
    assert page["running"][0]["note"].startswith("launcher gone")
    assert any("start a launcher to recover them" in note for note in page["notes"])

    run = run_of(db, silent)
    assert (run.state, run._p_serial) == ("RUNNING", serial)  # read-only: nothing was declared or written


def test_a_live_launchers_runs_carry_no_note(workdir):
    _, db = make_study(workdir, CONFIG)
    (rid,) = create_runs(db, x=1)
    _launched_by_a_dead_launcher(db, rid, 5)  # silent for less than lost_after
    status = motoko("status", cwd=workdir)
    assert "launcher gone" not in status.stdout
    # A live launcher's note is news: it is shown.
    assert "launcher launcher-7: SLURM refused jobs for now (stale words of a dead launcher)" in status.stdout

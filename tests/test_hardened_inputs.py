"""Issue 17, items 4-6 and 9-10: hostile input is refused in one line, in bounded time and memory.

Every case runs the real command line under an address-space limit
(``hardened_support.MEMORY``) and a timeout, and checks that nothing was
written to the database.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study
from hardened_support import bounded_motoko, one_line_error

from motoko.study.database import StudyDB
from motoko.study.server import ensure_server

DOIT = "from motoko import current_run\nrun, job = current_run()\n"
BOMB = '[&a ["x","x","x","x","x","x","x","x","x"], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], &g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]'
TEN = ", ".join(f"f{i}: int" for i in range(10))


def _runs(root: Path, study: str) -> int:
    db = StudyDB(ensure_server(root))
    try:
        return len(db.study(study).runs) if study in db.studies() else 0
    finally:
        db.close()


def _workflow(root: Path, body: str, job: str = "{x: int}", extra: str = "") -> None:
    write_study(root, "s", job, DOIT)
    write_config(root, ["s"], extra)
    (root / "wf.py").write_text("from motoko import step\n\n\n@step\nasync def first(workflow, p=None):\n"
                                + textwrap.indent(textwrap.dedent(body), "    "))


# -- item 4: spaces are counted before they are expanded; YAML aliases are bounded ---------


def test_a_ten_by_ten_sweep_is_refused_before_it_is_expanded(workdir):
    _workflow(workdir, "return await workflow.s.createTask(" + ", ".join(f"f{i}=list(range(10))" for i in range(10)) + ")\n",
              job="{" + TEN + "}")
    done = bounded_motoko("run", "wf.py", cwd=workdir)
    one_line_error(done, "s.createTask", "10000000000 jobs", "10 x 10 x 10", "max_jobs = 100000", "max_jobs:` in motoko.yaml")
    assert _runs(workdir, "s") == 0


def test_the_space_limit_is_configurable(workdir):
    _workflow(workdir, "return await workflow.s.createTask(x=list(range(6)))\n", extra="max_jobs: 5\n")
    one_line_error(bounded_motoko("run", "wf.py", cwd=workdir), "6 jobs", "max_jobs = 5")
    assert _runs(workdir, "s") == 0
    (workdir / "motoko.yaml").write_text((workdir / "motoko.yaml").read_text().replace("max_jobs: 5", "max_jobs: 6"))
    assert bounded_motoko("run", "wf.py", cwd=workdir).returncode == 0
    assert _runs(workdir, "s") == 6


def test_an_alias_bomb_in_a_command_line_parameter_is_refused(workdir):
    _workflow(workdir, "return await workflow.s.createTask(x=[1])\n")
    done = bounded_motoko("run", "wf.py", "-p", f"p={BOMB}", cwd=workdir)
    one_line_error(done, "'p'", "more than 100000 values", "aliases")
    assert _runs(workdir, "s") == 0


@pytest.mark.parametrize("where", ["bd.yaml", "motoko.yaml"])
def test_an_alias_bomb_in_a_yaml_file_is_refused(workdir, where):
    _workflow(workdir, "return await workflow.s.createTask(x=[1])\n")
    assert motoko("create", cwd=workdir).returncode == 0
    target = workdir / ("studies/s/bd.yaml" if where == "bd.yaml" else "motoko.yaml")
    target.write_text(target.read_text() + f"bomb: {BOMB}\n")
    done = bounded_motoko("info", cwd=workdir)
    one_line_error(done, where, "more than 100000 values", "aliases")


# -- item 5: values that cannot be stored and read back losslessly are refused ------------


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        ("f=float('inf')", ["field 'f' cannot hold inf", "no infinity"]),
        ("f=[1.0, float('-inf')]", ["field 'f' cannot hold -inf"]),
        ("l=[[1, float('nan')]]", ["field 'l' cannot hold nan"]),
        ("t='a\\x00b'", ["field 't' cannot hold a NUL byte"]),
        ("d={'k\\x00': 1}", ["field 'd' cannot hold a NUL byte"]),
        ("t='\\ud800'", ["field 't' cannot hold a lone surrogate"]),
        ("d={'k': ['\\udfff']}", ["field 'd' cannot hold a lone surrogate"]),
        ("t='x' * (128 * 1024 + 1)", ["field 't' cannot hold a string of 131073 bytes", "128 KiB"]),
    ],
)
def test_values_that_would_break_later_are_refused_at_create_task(workdir, call, fragments):
    _workflow(workdir, f"return await workflow.s.createTask({call})\n", job="{f: float, t: str, l: list, d: dict}",
              extra="")
    (workdir / "studies/s/bd.yaml").write_text(
        (workdir / "studies/s/bd.yaml").read_text() + "job_space: {f: 1.0, t: a, l: [1], d: {}}\n")
    done = bounded_motoko("run", "wf.py", cwd=workdir)
    one_line_error(done, "s.createTask", *fragments)
    assert _runs(workdir, "s") == 0


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_values_runs_store_never_break_listings_exports_or_the_dashboard(workdir):
    """A run may store inf, NaN or a lone surrogate in a free attribute: every view still works (item 5)."""
    write_study(workdir, "s", "{x: int}", DOIT + "run.y = float('inf')\nrun.w = float('nan')\nrun.z = 'a\\ud800b'\n"
                "run.push_quantity(float('-inf'), step=0, name='q')\n")
    write_config(workdir, ["s"])
    (workdir / "wf.py").write_text("from motoko import step\n\n\n@step\nasync def first(workflow):\n"
                                   "    return len(await workflow.s.createTask(x=[1]))\n")
    done = bounded_motoko("run", "wf.py", cwd=workdir)
    assert done.returncode == 0, done.stderr
    listed = bounded_motoko("select", "--format", "json", "--fields", "id,state,y,w,z", cwd=workdir)
    assert listed.returncode == 0, listed.stderr
    row = _strict_json(listed.stdout)[0]
    assert row["state"] == "FINISHED" and row["y"] is None and row["w"] is None and row["z"] == "a\ufffdb"
    table = bounded_motoko("select", "--fields", "id,y,z", cwd=workdir)
    assert table.returncode == 0, table.stderr
    exported = bounded_motoko("export", "--format", "json", cwd=workdir)
    assert exported.returncode == 0, exported.stderr
    _strict_json(exported.stdout)
    shown = bounded_motoko("runs", "show", "s.1", cwd=workdir)
    assert shown.returncode == 0, shown.stderr

    from motoko.flow.workflow import Workflow
    from motoko.views.web import Dashboard

    workflow = Workflow(workdir / "motoko.yaml")
    dashboard = Dashboard(workflow, port=0).start()
    try:
        for path in ("/api/overview", "/api/runs?study=s", "/api/run?study=s&id=1"):
            with urllib.request.urlopen(dashboard.url.rstrip("/") + path, timeout=30) as reply:
                data = _strict_json(reply.read().decode("utf-8"))
            assert "error" not in data, data
    finally:
        dashboard.close()
        workflow.close()


# -- item 6: field names that shadow motoko's own ----------------------------------------


@pytest.mark.parametrize(
    ("section", "name", "why"),
    [("job", "run_id", "is motoko's own"), ("job", "state", "is motoko's own"), ("run", "tail", "is motoko's own"),
     ("job", "push_quantity", "is motoko's own"), ("job", "params", "is motoko's own"),
     ("job", "__class__", "is private"), ("job", "_p_oid", "is private"), ("run", "_v_x", "is private")],
)
def test_reserved_and_private_field_names_are_refused(workdir, section, name, why):
    _workflow(workdir, "return await workflow.s.createTask(x=[1])\n",
              job="{x: int" + (f", {name}: int" if section == "job" else "") + "}")
    if section == "run":
        bd = workdir / "studies/s/bd.yaml"
        bd.write_text(bd.read_text() + f"run: {{{name}: int}}\n")
    done = bounded_motoko("run", "wf.py", cwd=workdir)
    one_line_error(done, "studies/s/bd.yaml:", f"{section} field name {name!r} {why}", "rename it, e.g.")
    assert _runs(workdir, "s") == 0


# -- item 9: a changed field type never silently rewrites a study with runs ---------------


def _stored_type(root: Path, field: str) -> str:
    db = StudyDB(ensure_server(root))
    try:
        return str(db.study("s").schema_data["job_fields"][field])
    finally:
        db.close()


def test_a_changed_field_type_is_refused_naming_field_types_and_the_way_out(workdir):
    _workflow(workdir, "return await workflow.s.createTask(x=[1, 2])\n")
    assert bounded_motoko("run", "wf.py", cwd=workdir).returncode == 0
    bd = workdir / "studies/s/bd.yaml"
    bd.write_text(bd.read_text().replace("{x: int}", "{x: str}"))
    for args in (("info",), ("select", "x ~ 1"), ("run", "wf.py")):
        done = bounded_motoko(*args, cwd=workdir)
        one_line_error(done, "studies/s/bd.yaml", "job field 'x' of study 's' changed type from int (stored) to str",
                       "keep `x: int`", "fresh study", "motoko create --yes")
        assert _stored_type(workdir, "x") == "int", f"{args} rewrote the stored schema"
    assert _runs(workdir, "s") == 2
    # The way out: drop the runs (or keep the type).
    assert bounded_motoko("create", "--yes", cwd=workdir).returncode == 0
    assert _stored_type(workdir, "x") == "str" and _runs(workdir, "s") == 0


def test_field_type_changed_error_says_what_where_and_how():
    from motoko.errors import FieldTypeChanged

    error = FieldTypeChanged("s", "job", "i", "int", "str", where="studies/s/bd.yaml")
    assert str(error).startswith("studies/s/bd.yaml: job field 'i' of study 's' changed type from int (stored) to str")
    assert "keep `i: int`" in str(error) and error.stored == "int" and error.new == "str"
    assert isinstance(error, ValueError)

"""`motoko create`, `select`, `info` and `server` through the real command line."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from conftest import motoko


def test_reading_commands_do_not_import_the_launcher(example):
    """select, status and info open a Workflow but start no launcher: its machinery (~30 ms) is not imported."""
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    code = (
        "import sys\nfrom motoko.cli.main import cli\n"
        "for args in (['select', 'state = FINISHED'], ['status'], ['info']):\n"
        "    try:\n        cli.main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('motoko.launch.launcher', 'motoko.launch.service', 'motoko.flow.orchestrator',"
        " 'motoko.cli.run_commands', 'motoko.cli.launcher_commands', 'motoko.cli.pilot_commands') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=example, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert "mult: 4 run(s)" in done.stdout  # the commands did run


def test_every_command_is_found_by_name_and_listed_in_help(example):
    """Commands are imported when invoked (see COMMAND_MODULES): none may be missing from the map."""
    from motoko.cli import main

    for name, module_name in sorted(main.COMMAND_MODULES.items()):
        module = importlib.import_module(f"motoko.cli.{module_name}")
        assert name in {command.name for command in module.COMMANDS}, (name, module_name)
    modules = {module_name for module_name in main.COMMAND_MODULES.values()}
    for module_name in modules:
        for command in importlib.import_module(f"motoko.cli.{module_name}").COMMANDS:
            assert main.COMMAND_MODULES.get(command.name) == module_name, command.name
    listed = motoko("--help", cwd=example).stdout
    assert all(f"  {name} " in listed for name in main.COMMAND_MODULES), listed
    unknown = motoko("selct", cwd=example)
    assert unknown.returncode == 2 and "No such command 'selct'. Did you mean 'select'?" in unknown.stderr
    version = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom motoko.cli.main import main\ntry:\n    main(['--version'])\n"
         "except SystemExit:\n    pass\nprint(sorted(m for m in sys.modules if m.endswith('_commands') or m in ('motoko.study.database', 'ZODB')))"],
        cwd=example, capture_output=True, text=True, timeout=60,
    )
    assert version.stdout.splitlines()[-1] == "[]", version.stdout + version.stderr
    # The CLI shows these loggers' records by name, without importing their modules:
    from motoko.flow import launcher_watch
    from motoko.study import server

    assert (server.announce.name, launcher_watch.log.name) == ("motoko.study.server.started", "motoko.flow.launcher_watch")


def test_create_then_recreate_asks_before_dropping(example):
    created = motoko("create", cwd=example)
    assert created.returncode == 0
    assert created.stdout.splitlines() == ["study mult: created", "study add: created", "study norm: created"]
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    declined = motoko("create", cwd=example)  # no stdin: the question is declined
    assert declined.returncode == 1 and "Drop every run of mult (4 runs), add (2 runs), norm (2 runs)?" in declined.stderr
    assert "FINISHED" in motoko("select", "--study", "add", cwd=example).stdout
    kept = motoko("create", "--keep", cwd=example)
    assert kept.returncode == 0 and "study add: updated" in kept.stdout
    dropped = motoko("create", "--yes", cwd=example)
    assert dropped.returncode == 0 and "study add: emptied" in dropped.stdout
    assert "add: 0 run(s)" in motoko("select", "--study", "add", cwd=example).stdout


def test_select_formats_fields_and_constraints(example):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    table = motoko("select", "a > 0, a < 1", "--study", "mult", cwd=example).stdout.splitlines()
    assert table[0] == "mult: 1 run(s)"
    assert table[1].split() == ["id", "job_id", "state", "run_name", "a", "x", "progress", "machine_name"]
    assert table[2].split()[:5] == ["1", "1", "FINISHED", "pipeline", "0.342"]
    rows = json.loads(motoko("select", "state = FINISHED", "--format", "json", "--fields", "id,y", cwd=example).stdout)
    assert {r["study"] for r in rows} == {"mult", "add", "norm"}
    mult = [r for r in rows if r["study"] == "mult"]
    assert mult[0]["y"] == [0.342, 0.684, 1.026]
    csv = motoko("select", "--study", "norm", "--format", "csv", "--fields", "id,jobs.target", cwd=example).stdout
    assert csv.splitlines() == ["study,id,jobs.target", 'norm,1,"[3.3, 2.34, 0.148]"', 'norm,2,"[3.3, 2.34, 0.148]"']
    ored = motoko("select", "a < -1 or a > 1", "--study", "mult", "--format", "csv", "--fields", "id", cwd=example)
    assert ored.stdout.split() == ["study,id", "mult,2", "mult,3", "mult,4"]


def test_select_across_studies_skips_studies_without_the_field(example):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    only_add = motoko("select", "b = 0.56", "--format", "csv", "--fields", "id", cwd=example)
    assert only_add.returncode == 0 and only_add.stdout.split() == ["study,id", "add,1", "add,2"]
    unknown = motoko("select", "nope = 1", cwd=example)
    assert unknown.returncode == 2 and "unknown field 'nope'" in unknown.stderr


def test_info_counts_by_state(example):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    rows = json.loads(motoko("info", "--format", "json", cwd=example).stdout)
    counts = {r["study"]: (r["total"], r["FINISHED"]) for r in rows}
    assert counts == {"mult": (4, 4), "add": (2, 2), "norm": (2, 2)}


def test_server_start_status_stop(example):
    assert "not running" in motoko("server", "status", cwd=example).stdout
    assert motoko("server", "status", cwd=example).returncode == 3
    started = motoko("server", "start", cwd=example)
    assert started.returncode == 0 and "server running at zeo://" in started.stdout
    again = motoko("server", "start", cwd=example)
    assert again.stdout == started.stdout  # idempotent
    status = motoko("server", "status", cwd=example)
    assert status.returncode == 0 and "running at zeo://" in status.stdout and "(pid " in status.stdout
    assert motoko("server", "stop", cwd=example).stdout.strip() == "server stopped"
    assert motoko("server", "stop", cwd=example).stdout.strip() == "server was not running"


def test_reading_commands_do_not_import_the_graph_library():
    """networkx (~70 ms) is imported where a graph is built: select, status and info never build one."""
    code = (
        "import sys\nimport motoko.cli.main, motoko.cli.db_commands, motoko.views.status\n"
        "import motoko.flow.workflow, motoko.flow.outdated, motoko.flow.rerun\n"
        "print('networkx' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "False\n", "")

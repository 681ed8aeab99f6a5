"""A corpus of bad input, each case run through the real ``motoko`` command line.

Issue 6 promises that every user mistake gives one line naming the problem and
a fix, exit code 2, no traceback, and leaves the database and the run
directories unchanged. Each case here copies a workflow directory whose
database a successful ``motoko run workflows/pipeline.py`` has filled (so that
"unchanged" means something), makes ONE thing wrong, runs one command and
checks all four:

1. the exit code is 2;
2. stderr is exactly one line, ``motoko: error: ...``, holding the case's
   ``names`` (the place: file:line, field, column or option, and the problem)
   and its ``fix`` (key words of the hint);
3. no traceback in stdout or stderr;
4. nothing changed: the database dump (every study's schema, jobs, runs,
   state index and id counters) and the run directories (every file under
   ``studies/*/BD-*-runs`` with its size and modification time) are the same
   before and after.

The database is read straight from ``.motoko/data.fs`` with a read-only
FileStorage (no lock, no write), not through the CLI: most cases break
motoko.yaml or a bd.yaml, so ``motoko select`` could not read it any more.

A case whose fix belongs to code owned elsewhere is marked
``xfail(strict=True)`` with what it currently prints.
"""

from __future__ import annotations

import itertools
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ZODB
from conftest import REPO, motoko
from ZODB.FileStorage import FileStorage

from motoko.study.server import stop_server

# The example's motoko.yaml and mult/bd.yaml, written out here so that the
# line numbers the cases expect do not move when the example's comments do.
CONFIG = """\
task_managers:
  mult:
  add:
  norm:
aliases: {post: norm}
orchestrator: workflows.orchestrator.main
launcher: {executor: local, max_parallel: 2}
"""
MULT_BD = """\
study: mult
job:
  a: float
  x: list
job_space:
  x: [1.0, 2.0, 3.0]
"""
YAML = "motoko.yaml"
BD = "studies/mult/bd.yaml"
BAD_PY = "workflows/bad.py"
STEP = "from motoko import step\n\n"  # a workflow file's first two lines

Edit = Callable[[Path], None]


# -- edits: each makes one thing wrong in a case's copy ----------------------------


def write(rel: str, content: str | bytes) -> Edit:
    def edit(root: Path) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return edit


def replace(rel: str, old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        path = root / rel
        text = path.read_text()
        assert old in text, f"{rel} no longer holds {old!r}: update the case"
        path.write_text(text.replace(old, new, 1))

    return edit


def append(rel: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        with open(root / rel, "a") as handle:
            handle.write(text)

    return edit


def delete(rel: str) -> Edit:
    return lambda root: (root / rel).unlink()


def mkdir(rel: str) -> Edit:
    return lambda root: (root / rel).mkdir(parents=True, exist_ok=True)


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_database(root: Path) -> None:
    append(YAML, f"database: zeo://127.0.0.1:{free_port()}\n")(root)


# -- the cases -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: The test id.
        args: The motoko command line (run in the case's workflow directory).
        names: Fragments the error line must hold: the place and the problem.
        fix: Fragments of the hint saying how to fix it.
        edits: What is made wrong, applied to the case's copy in order.
        prepare: A valid command run (exit 0) after the edits and before the
            "before" snapshot, for cases that need a database state first.
        timeout: Seconds the command may take.
    """

    id: str
    args: tuple[str, ...]
    names: tuple[str, ...]
    fix: tuple[str, ...]
    edits: tuple[Edit, ...] = ()
    prepare: tuple[str, ...] = ()
    timeout: float = 60.0


def case(id: str, args: list[str], names: list[str], fix: list[str], *edits: Edit, xfail: str = "", **kw: Any) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(Case(id, tuple(args), tuple(names), tuple(fix), tuple(edits), **kw), id=id, marks=marks)


RUN = ["run", "workflows/pipeline.py"]
RUN_BAD = ["run", BAD_PY]
ONCE = ["launcher", "start", "--once"]
SELECT = ["select", "--study", "mult"]

CONFIG_CASES = [
    case("yaml-syntax", ["info"], ["motoko.yaml:3", "invalid YAML"], ["check indentation"],
         write(YAML, "task_managers:\n  mult: [\n")),
    case("yaml-tab", ["info"], ["motoko.yaml:2", "invalid YAML", "'\\t'"], ["check indentation"],
         write(YAML, "task_managers:\n\tmult:\n")),
    case("yaml-top-level-list", ["select"], ["motoko.yaml:1", "top level must be a mapping"],
         ["task_managers:"], write(YAML, "- mult\n- add\n")),
    case("yaml-empty", ["info"], ["motoko.yaml:1", "no task_managers"], ["task_managers: {"],
         write(YAML, "")),
    case("yaml-not-utf8", ["info"], ["motoko.yaml:2", "not UTF-8"], ["save it as UTF-8"],
         write(YAML, b"task_managers:\n  mult: \xff\n")),
    case("yaml-duplicate-key", ["info"], ["motoko.yaml:8", "'launcher' appears twice"], ["keep one"],
         append(YAML, "launcher: {executor: slurm}\n")),
    case("yaml-unknown-key", RUN, ["motoko.yaml:8", "unknown setting 'lanucher'"],
         ["did you mean 'launcher'?"], append(YAML, "lanucher: {}\n")),
    case("yaml-unknown-study-folder", ONCE, ["motoko.yaml:5", "study 'nrom' has no bd.yaml"],
         ["give its location with `path:`"], replace(YAML, "  norm:\n", "  norm:\n  nrom:\n")),
    case("yaml-study-path-missing", ["info"], ["motoko.yaml:4", "looked in nowhere/norm"],
         ["create the study folder"], replace(YAML, "  norm:\n", "  norm:\n    path: nowhere/norm\n")),
    case("yaml-task-managers-scalar", ["info"], ["motoko.yaml:1", "task_managers must be a mapping"],
         ["task_managers: {mult: , add: }"], write(YAML, "task_managers: 5\n")),
    case("yaml-task-manager-not-mapping", ["info"],
         ["motoko.yaml:4", "task manager 'norm' must be a mapping"], ["write `norm:` alone"],
         replace(YAML, "  norm:\n", "  norm: 3\n")),
    case("yaml-task-manager-unknown-key", ["info"], ["motoko.yaml:4", "unknown setting 'hots'"],
         ["did you mean 'host'?"], replace(YAML, "  norm:\n", "  norm:\n    hots: zeo://x\n")),
    case("yaml-alias-unknown-target", ["cancel", "-y", "state = CREATED"],
         ["motoko.yaml:5", "unknown study 'nrm'"], ["did you mean 'norm'?"],
         replace(YAML, "{post: norm}", "{post: nrm}")),
    case("yaml-alias-shadows-study", ["info"], ["motoko.yaml:5", "alias 'add' is also"],
         ["rename the alias"], replace(YAML, "{post: norm}", "{post: norm, add: norm}")),
    case("yaml-aliases-not-mapping", ["info"], ["motoko.yaml:5", "aliases must map"],
         ["aliases: {post: norm}"], replace(YAML, "{post: norm}", "[post]")),
    case("yaml-orchestrator-not-text", ["run"], ["motoko.yaml:6", "orchestrator must be"],
         ["workflows.orchestrator.main"],
         replace(YAML, "orchestrator: workflows.orchestrator.main", "orchestrator: 3")),
    case("yaml-negative-max-parallel", RUN, ["motoko.yaml:7", "max_parallel must be a positive integer", "-1"],
         ["max_parallel: 2"], replace(YAML, "max_parallel: 2", "max_parallel: -1")),
    case("yaml-unknown-executor", ONCE, ["motoko.yaml:7", "unknown executor 'locl'"],
         ["did you mean 'local'?"], replace(YAML, "executor: local", "executor: locl")),
    case("yaml-unknown-launcher-key", ["info"], ["motoko.yaml:7", "unknown launcher setting 'max_paralel'"],
         ["did you mean 'max_parallel'?"], replace(YAML, "max_parallel:", "max_paralel:")),
    case("yaml-launcher-not-mapping", ["info"], ["motoko.yaml:7", "launcher must be a mapping"],
         ["launcher: {executor: local"],
         replace(YAML, "launcher: {executor: local, max_parallel: 2}", "launcher: [local]")),
    case("yaml-heartbeat-zero", ["info"], ["motoko.yaml:7", "heartbeat must be a positive number"],
         ["number > 0"], replace(YAML, "max_parallel: 2", "heartbeat: 0")),
    case("yaml-slurm-options-text", ["info"], ["motoko.yaml:7", "slurm_options must be a list"],
         ["slurm_options: ['--time"], replace(YAML, "max_parallel: 2", "slurm_options: --time=1")),
    case("yaml-lost-after-negative", ["info"], ["motoko.yaml:8", "lost_after must be a positive", "-1"],
         ["number > 0"], append(YAML, "lost_after: -1\n")),
    case("yaml-poll-factor-below-one", ["info"], ["motoko.yaml:8", "poll factor must be >= 1", "0.5"],
         ["factor: 2"], append(YAML, "poll: {factor: 0.5}\n")),
    case("yaml-poll-unknown-key", ["info"], ["motoko.yaml:8", "unknown poll setting 'intial'"],
         ["did you mean 'initial'?"], append(YAML, "poll: {intial: 1}\n")),
    case("yaml-runs-dir-list", ["info"], ["motoko.yaml:8", "runs_dir must be a directory name"],
         ["runs_dir: runs"], append(YAML, "runs_dir: [a]\n")),
]

ADDRESS_HINT = "write zeo://HOST:PORT (TCP) or zeo://PATH"
ADDRESS_CASES = [
    case("address-nothing-after-scheme", ["info"], ["motoko.yaml:4", "'zeo://'", "nothing after zeo://"],
         [ADDRESS_HINT], replace(YAML, "  norm:\n", "  norm:\n    host: zeo://\n")),
    case("address-other-scheme", ["info"],
         ["motoko.yaml:4", "'tcp://127.0.0.1:8100'", "must start with zeo://"], [ADDRESS_HINT],
         replace(YAML, "  norm:\n", "  norm:\n    host: tcp://127.0.0.1:8100\n")),
    case("address-port-not-number", ["info"], ["motoko.yaml:4", "the port is not a number"],
         [ADDRESS_HINT], replace(YAML, "  norm:\n", "  norm:\n    host: zeo://127.0.0.1:port\n")),
    case("address-port-out-of-range", ["info"], ["motoko.yaml:4", "port 70000 is out of range"],
         ["between 1 and 65535"], replace(YAML, "  norm:\n", "  norm:\n    host: zeo://127.0.0.1:70000\n")),
    case("address-bare-port", ["info"], ["motoko.yaml:8", "'8100'", "must start with zeo://"],
         [ADDRESS_HINT], append(YAML, "database: 8100\n")),
    case("address-empty-port", ["select"], ["motoko.yaml:8", "'zeo://localhost:'", "the port is not a number"],
         [ADDRESS_HINT], append(YAML, "database: 'zeo://localhost:'\n")),
    # ZEO's client waits for a server to come up; motoko gives up after 10 s.
    case("database-unreachable", ["info"],
         ["cannot reach the database server at zeo://127.0.0.1:", "Connection refused"],
         ["motoko server start", "check the address"], unreachable_database, timeout=20),
]

BD_CASES = [
    case("bd-yaml-syntax", ["info"], ["studies/mult/bd.yaml:7", "invalid YAML", "expected ',' or ']'"],
         ["check the indentation"], replace(BD, "3.0]", "3.0")),
    case("bd-empty", ["info"], ["studies/mult/bd.yaml", "the file is empty"], ["study: NAME"], write(BD, "")),
    case("bd-not-utf8", ["info"], ["studies/mult/bd.yaml", "not UTF-8"], ["save it as UTF-8"],
         write(BD, b"study: mult\njob: {a: float}  # \xe9\n")),
    case("bd-missing", ["info"], ["motoko.yaml:2", "study 'mult' has no bd.yaml"], ["create the study folder"],
         delete(BD)),
    case("bd-unknown-key", SELECT, ["studies/mult/bd.yaml:5", "unknown bd.yaml key 'jobspace'"],
         ["did you mean 'job_space'?"], replace(BD, "job_space:", "jobspace:")),
    case("bd-duplicate-key", ["info"], ["studies/mult/bd.yaml:7", "'job' appears twice"], ["keep one"],
         append(BD, "job: {a: int}\n")),
    case("bd-unknown-type", RUN, ["studies/mult/bd.yaml:3", "unknown type 'flaot' for field 'a'"],
         ["did you mean 'float'?"], replace(BD, "a: float", "a: flaot")),
    case("bd-type-as-list", ["info"], ["studies/mult/bd.yaml:3", "type of job field 'a' must be a type name"],
         ["possible types: int, float"], replace(BD, "a: float", "a: [float]")),
    case("bd-field-named-id", ["info"], ["studies/mult/bd.yaml:5", "job field 'id' is built in"],
         ["rename it"], replace(BD, "  x: list\n", "  x: list\n  id: int\n")),
    case("bd-invalid-study-name", ["info"], ["studies/mult/bd.yaml:1", "study name '3mult' is not valid"],
         ["study: mult"], replace(BD, "study: mult", "study: 3mult")),
    case("bd-job-space-wrong-type", ONCE, ["studies/mult/bd.yaml:7", "field 'a' expects a number", "'abc'"],
         ["give 'a' a number"], append(BD, "  a: abc\n")),
    case("bd-exec-file-missing", ["create", "-y"],
         ["studies/mult/bd.yaml", "exec_file 'launch.sh' (the default) not found"],
         ["create it, or set `exec_file:`"], delete("studies/mult/launch.sh")),
    case("bd-exec-file-unknown", ["info"], ["studies/mult/bd.yaml:7", "exec_file 'run.sh'", "not found"],
         ["create it"], append(BD, "exec_file: run.sh\n")),
    case("bd-exec-file-absolute", ["info"], ["studies/mult/bd.yaml:7", "'/bin/sh' is an absolute path"],
         ["relative to the study folder"], append(BD, "exec_file: /bin/sh\n")),
    case("bd-config-file-traversal", ["info"], ["studies/mult/bd.yaml:7", "config_files '../x' contains '..'"],
         ["copy the file into the study folder"], append(BD, "config_files: [../x]\n")),
    case("bd-negative-retries", ["info"], ["studies/mult/bd.yaml:7", "'retries' expects an integer >= 0"],
         ["set retries to 0"], append(BD, "retries: -1\n")),
    case("bd-retry-on-unknown-state", ["create", "-y"],
         ["studies/mult/bd.yaml:7", "unknown state 'CRASHED'"], ["possible: FAILED, LOST"],
         append(BD, "retry_on: [LOST, CRASHED]\n")),
    case("bd-lost-after-zero", ["info"], ["studies/mult/bd.yaml:7", "'lost_after' expects a number of seconds > 0"],
         ["lost_after: 60"], append(BD, "lost_after: 0\n")),
    case("bd-run-params-unknown-field", ["info"], ["studies/mult/bd.yaml:7", "unknown run field 'compiler'"],
         ["declare it under `run:`"], append(BD, "run_params: {compiler: gcc}\n")),
]

CYCLE = STEP + "@step\nasync def a(workflow, b):\n    return 1\n\n\n@step\nasync def b(workflow, a):\n    return 1\n"
WORKFLOW_CASES = [
    case("wf-syntax-error", RUN_BAD, ["workflows/bad.py:4", "syntax error"], ["fix the Python syntax"],
         write(BAD_PY, STEP + "@step\nasync def a(workflow)\n    return 1\n")),
    case("wf-import-error", RUN_BAD, ["workflows/bad.py:3", "No module named 'nonexistent_module'"],
         ["--debug"], write(BAD_PY, STEP + "import nonexistent_module\n")),
    case("wf-cycle", RUN_BAD, ["workflows/bad.py", "the steps form a cycle: a → b → a"],
         ["remove one of these dependencies"], write(BAD_PY, CYCLE)),
    case("wf-cycle-graph", ["graph", BAD_PY], ["workflows/bad.py", "cycle"], ["remove one"], write(BAD_PY, CYCLE)),
    case("wf-unknown-after", RUN_BAD, ["workflows/bad.py", "step 'b' runs after unknown step 'mlt'"],
         ["did you mean 'mult'?"],
         write(BAD_PY, STEP + "@step\nasync def mult(workflow):\n    return 1\n\n\n"
               "@step(after='mlt')\nasync def b(workflow):\n    return 1\n")),
    case("wf-missing-parameter", RUN_BAD, ["workflows/bad.py", "step 'mult' needs parameter 'scale'"],
         ["-p scale=VALUE"], write(BAD_PY, STEP + "@step\nasync def mult(workflow, scale):\n    return 1\n")),
    case("wf-unknown-parameter", [*RUN, "-p", "rescal=3"], ["pipeline.py", "no step takes parameter 'rescal'"],
         ["did you mean 'rescale'?"]),
    case("wf-no-steps-no-main", RUN_BAD, ["workflows/bad.py", "declares no @step function and no main"],
         ["@motoko.step"], write(BAD_PY, "x = 1\n")),
    case("wf-missing-file", ["run", "workflows/nope.py"], ["workflows/nope.py does not exist"],
         ["give the path of a .py file"]),
    case("wf-no-file-no-orchestrator", ["run"], ["give a workflow FILE", "names no orchestrator"],
         ["motoko run --help"], replace(YAML, "orchestrator: workflows.orchestrator.main\n", "")),
    case("wf-orchestrator-missing-module", ["run"], ["workflows/orchestra.py does not exist"],
         ["give the path"], replace(YAML, "workflows.orchestrator.main", "workflows.orchestra.main")),
    case("wf-orchestrator-bad-argument", ["run", "--", "--rescale", "abc"],
         ["--rescale", "invalid float value: 'abc'"], ["populate_arg_parser"]),
    case("wf-sync-step", RUN_BAD, ["workflows/bad.py:3", "step 'a' must be an async function"],
         ["write `async def`"], write(BAD_PY, STEP + "@step\ndef a(workflow):\n    return 1\n")),
    case("wf-orchestrator-unknown-function", ["run"], ["orchestrator", "'mian'"], ["main"],
         replace(YAML, "workflows.orchestrator.main", "workflows.orchestrator.mian")),
]


def step_creating(call: str) -> Edit:
    """A workflow file with one step ``mult`` that awaits ``workflow.mult.<call>``."""
    return write(BAD_PY, STEP + f"@step\nasync def mult(workflow):\n    return await workflow.mult.{call}\n")


PARAMETER_CASES = [
    case("param-wrong-type", RUN_BAD, ["mult.createTask", "field 'a' expects a number", "'abc'"],
         ["give 'a' a number"], step_creating("createTask(a='abc')")),
    case("param-wrong-type-in-sweep", RUN_BAD, ["mult.createTask", "field 'a' expects a number", "'abc'"],
         ["give 'a' a number"], step_creating("createTask(a=[1.0, 2.0, 'abc'])")),
    case("param-unknown-job-field", RUN_BAD, ["mult.createTask", "unknown job field 'b'"], ["possible: a, x"],
         step_creating("createTask(b=1.0)")),
    case("param-unknown-run-field", RUN_BAD, ["mult.createTask", "unknown run field 'compiler'"],
         ["declare it under `run:`"],
         step_creating("createTask(run_params={'compiler': 'gcc'}, a=1.0)")),
    # The three first steps resume (their runs are reused); the fourth refuses rescale.
    case("param-wrong-type-from-command-line", [*RUN, "-p", "rescale=abc"],
         ["mult.createTask", "field 'a' expects a number", "'abc'"], ["give 'a' a number"]),
]

QUERY_CASES = [
    case("query-unknown-field", [*SELECT, "stat = FINISHED"], ["column 1", "unknown field 'stat'"],
         ["did you mean 'state'"]),
    case("query-ambiguous-field", [*SELECT, "a > 1"], ["column 1", "ambiguous field 'a'"],
         ["write runs.a or jobs.a"], replace(BD, "job_space:", "run: {a: float}\njob_space:"),
         prepare=("create", "--keep")),
    case("query-bad-operator", [*SELECT, "a => 1"], ["column 3", "unknown operator '=>'"], ["operators: <"]),
    case("query-trailing-parenthesis", [*SELECT, "a > 1)"], ["column 6", "unexpected ')'"],
         ["parentheses are unbalanced"]),
    case("query-unclosed-parenthesis", [*SELECT, "(a > 1, state = FINISHED"], ["column 1", "unclosed '('"],
         ["add the matching ')'"]),
    case("query-bad-regex", [*SELECT, 'state ~ "[abc"'], ["column 9", "invalid regular expression"],
         ["quote patterns"]),
    case("query-wrong-value-type", [*SELECT, "a > abc"], ["column 5", "field 'a' expects a number, got 'abc'"],
         ["compare it with a number"]),
    case("query-list-field-ordering", [*SELECT, "x > 1"], ["column 1", "field 'x' is a list"],
         ["compare it with a JSON literal"]),
    case("query-missing-value", [*SELECT, "a ="], ["column 4", "expected a value after '='"],
         ["quote values"]),
    case("query-empty-value", [*SELECT, 'state = ""'], ["column 9", "empty value"], ["~ '^$'"]),
    case("query-unknown-field-cancel", ["cancel", "-y", "stat = CREATED"], ["unknown field 'stat'"],
         ["did you mean 'state'"]),
    case("query-unknown-field-clean", ["clean", "--delete", "-y", "state = FINISHED, nope > 1"],
         ["column 19", "unknown field 'nope'"], ["runs.nope addresses a free attribute"]),
]

CLI_CASES = [
    case("cli-unknown-command", ["slect"], ["No such command 'slect'"], ["Did you mean 'select'?"]),
    case("cli-unknown-subcommand", ["server", "restart"], ["No such command 'restart'"],
         ["'start', 'status'", "motoko server --help"]),
    case("cli-unknown-db-subcommand", ["db", "vacuum"], ["No such command 'vacuum'"], ["motoko db --help"]),
    case("cli-unknown-option", ["select", "--studdy", "mult"], ["No such option '--studdy'"],
         ["Did you mean '--study'?"]),
    case("cli-missing-directory", ["-C", "nowhere", "info"], ["'-C'", "'nowhere' does not exist"],
         ["motoko --help"]),
    case("cli-no-workflow-directory", ["-C", "../elsewhere", "info"], ["no motoko.yaml in", "elsewhere"],
         ["-C DIR", "motoko init DIR"], mkdir("../elsewhere")),
    case("cli-param-without-equals", [*RUN, "-p", "rescale"], ["'-p'", "'rescale' is not name=value"],
         ["-p x=1.5"]),
    case("cli-param-invalid-yaml", [*RUN, "-p", "coefficients=[1, 2"],
         ["'-p'", "'coefficients' is not valid YAML at column 6"], ["motoko run --help"]),
    case("cli-param-twice", [*RUN, "-p", "rescale=1", "-p", "rescale=2"], ["parameter 'rescale' given twice"],
         ["give each -p once"]),
    case("cli-format-xml", ["select", "--format", "xml"], ["'--format'", "'xml' is not one of"],
         ["'table', 'json', 'csv'"]),
    case("cli-info-format-xml", ["info", "--format", "xml"], ["'--format'", "'xml'"], ["'json'"]),
    case("cli-fields-unknown", [*SELECT, "--fields", "id,stat"], ["--fields", "unknown column 'stat'"],
         ["did you mean 'state'"]),
    case("cli-launcher-max-parallel-zero", ["launcher", "start", "--max-parallel", "0"],
         ["'--max-parallel'", "0 is not in the range"], ["x>=1"]),
    case("cli-launcher-idle-exit-negative", ["launcher", "start", "--idle-exit", "-1"],
         ["'--idle-exit'", "'-1'"], ["must be greater than 0"]),
    case("cli-run-max-parallel-negative", [*RUN, "-j", "-2"], ["'--max-parallel'", "-2"], ["x>=1"]),
    case("cli-run-unknown-executor", [*RUN, "--executor", "lokal"], ["'--executor'", "'lokal'"],
         ["'local', 'slurm', 'dask'"]),
    case("cli-select-unknown-study", ["select", "--study", "nope"], ["unknown study 'nope'"],
         ["possible: add, mult, norm, post"]),
    case("cli-launcher-unknown-study", [*ONCE, "--study", "nope"], ["unknown study 'nope'"], ["possible: add"]),
    case("cli-cancel-unknown-study", ["cancel", "-y", "--study", "mlt"], ["unknown study 'mlt'"],
         ["did you mean 'mult'?"]),
    case("cli-clean-unknown-study", ["clean", "--delete", "-y", "--study", "nope"], ["unknown study 'nope'"],
         ["possible"]),
    case("cli-listen-malformed", ["server", "start", "--listen", "localhost"], ["cannot listen on 'localhost'"],
         ["HOST:PORT"]),
    case("cli-pack-negative-days", ["db", "pack", "--days", "-1"], ["'--days'", "-1"], ["x>=0"]),
    case("cli-runs-unknown-subcommand", ["runs", "lst"], ["No such command 'lst'"], ["'list', 'ls'"]),
    case("cli-runs-show-unknown-id", ["runs", "show", "mult.999"], ["no run with id 999 in study 'mult'"],
         ["motoko runs list --study mult"]),
    case("cli-runs-wait-unknown-field", ["runs", "wait", "stat = FINISHED"], ["unknown field 'stat'"],
         ["did you mean 'state'"]),
    case("cli-status-unknown-study", ["status", "--study", "nope"], ["unknown study 'nope'"], ["possible: add"]),
    case("cli-export-format-xml", ["export", "--format", "xml"], ["'--format'", "'xml'"], ["'csv', 'json'"]),
    case("cli-import-missing-file", ["import", "nothere.json"], ["cannot read nothere.json"],
         ["motoko export --format motoko"]),
    case("cli-plot-unknown-quantity", ["plot", "energy", "--study", "mult"], ["quantity 'energy'"],
         ["possible"]),
    case("cli-init-over-existing-workflow", ["init", "."], ["already has files", "motoko.yaml"],
         ["choose a new directory"]),
    case("cli-graph-runs-unknown-field", ["graph", "--runs", "--where", "stat = X"], ["unknown field 'stat'"],
         ["did you mean 'state'"]),
    case("cli-graph-runs-missing-file", ["graph", "--runs", "workflows/nope.py"], ["workflows/nope.py"],
         ["give the path"]),
]

# Issue 17: hostile input found by a red team (bounded time and memory: tests/test_hardened_*.py).
ALIAS_BOMB = "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
HARDENED_CASES = [
    case("space-past-max-jobs", RUN_BAD, ["mult.createTask", "200000 jobs", "max_jobs = 100000"],
         ["max_jobs:` in motoko.yaml"], step_creating("createTask(a=[float(i) for i in range(200000)])")),
    case("yaml-max-jobs-zero", ["info"], ["motoko.yaml:8", "max_jobs must be a positive whole number"],
         ["max_jobs: 1000000"], append(YAML, "max_jobs: 0\n")),
    case("yaml-alias-bomb", ["info"], ["motoko.yaml", "more than 100000 values", "aliases"],
         ["write the values out"], append(YAML, f"bomb: {ALIAS_BOMB}\n")),
    case("bd-alias-bomb", ["info"], ["studies/mult/bd.yaml", "more than 100000 values", "aliases"],
         ["write the values out"], append(BD, f"bomb: {ALIAS_BOMB}\n")),
    case("cli-param-alias-bomb", [*RUN, "-p", f"rescale={ALIAS_BOMB}"], ["'rescale'", "more than 100000 values"],
         ["write the values out"]),
    case("param-infinite", RUN_BAD, ["mult.createTask", "field 'a' cannot hold inf"], ["give a finite number"],
         step_creating("createTask(a=float('inf'))")),
    case("param-nul-byte", RUN_BAD, ["mult.createTask", "field 'x' cannot hold a NUL byte"], ["no NUL"],
         step_creating("createTask(a=1.0, x=['a\\x00b'])")),
    case("param-lone-surrogate", RUN_BAD, ["mult.createTask", "field 'x' cannot hold a lone surrogate"],
         ["plain text"], step_creating("createTask(a=1.0, x=['\\ud800'])")),
    case("param-string-too-long", RUN_BAD, ["mult.createTask", "field 'x' cannot hold a string of 200000 bytes"],
         ["store large data in a file"], step_creating("createTask(a=1.0, x=['y' * 200000])")),
    case("bd-field-named-run-id", ["info"], ["studies/mult/bd.yaml:5", "job field name 'run_id' is motoko's own"],
         ["rename it, e.g. 'job_run_id'"], replace(BD, "  x: list\n", "  x: list\n  run_id: int\n")),
    case("bd-field-named-state", ["info"], ["studies/mult/bd.yaml:5", "job field name 'state' is motoko's own"],
         ["rename it"], replace(BD, "  x: list\n", "  x: list\n  state: str\n")),
    case("bd-field-private", ["info"], ["studies/mult/bd.yaml:5", "job field name '_p_oid' is private"],
         ["rename it"], replace(BD, "  x: list\n", "  x: list\n  _p_oid: int\n")),
    case("bd-field-dunder", ["info"], ["studies/mult/bd.yaml:5", "job field name '__class__' is private"],
         ["rename it"], replace(BD, "  x: list\n", "  x: list\n  __class__: str\n")),
    case("bd-field-type-changed", SELECT, ["studies/mult/bd.yaml", "job field 'a' of study 'mult' changed type",
                                           "from float (stored) to str"],
         ["keep `a: float`", "motoko create --yes"], replace(BD, "a: float", "a: str")),
    case("query-nested-1000-deep", [*SELECT, "(" * 1000 + "a > 1" + ")" * 1000],
         ["nested more than 100 levels deep"], ["remove redundant parentheses"]),
    case("bd-raw-nul", ["info"], ["studies/mult/bd.yaml:5", "character U+0000 is not allowed"], ["remove that NUL"],
         replace(BD, "job_space:", "job_space: \x00")),
    case("cli-tail-outside-run-directory", ["runs", "tail", "mult.1", "--file", "../../bd.yaml"],
         ["'../../bd.yaml' is outside the run directory"], ["motoko runs files mult.1"]),
]

CASES = CONFIG_CASES + ADDRESS_CASES + BD_CASES + WORKFLOW_CASES + PARAMETER_CASES + QUERY_CASES + CLI_CASES
CASES += HARDENED_CASES


# -- what "nothing changed" compares -----------------------------------------------


def database_dump(root: Path) -> dict[str, Any]:
    """Every study's schema, jobs, runs, state index and id counters, and the workflow vars.

    Launchers' own bookkeeping (``motoko_launchers``: which launcher is alive)
    is left out: an embedded launcher registers itself as ``motoko run``
    starts, which is not a change to the user's data.

    Read-only: a read-only FileStorage takes no lock and writes nothing (not
    even its index), so it can read the file while the case's server runs.
    """
    storage = FileStorage(str(root / ".motoko" / "data.fs"), read_only=True)
    db = ZODB.DB(storage)
    try:
        conn = db.open()
        top = conn.root()
        dump: dict[str, Any] = {"root": sorted(top), "vars": repr(dict(top.get("motoko_vars", {})))}
        for name, study in top["motoko_studies"].items():
            dump[name] = {
                "schema": study.schema_data,
                "jobs": {jid: job.to_dict() for jid, job in study.jobs.items()},
                "runs": {rid: repr(run.fields()) for rid, run in study.runs.items()},
                "states": {state: list(ids) for state, ids in study.by_state.items()},
                "counters": (study.job_counter.value, study.run_counter.value),
            }
        conn.close()
    finally:
        db.close()
    return dump


def run_files(root: Path) -> dict[str, tuple[int, int] | str]:
    """Every file (size, mtime) and directory under the studies' run directories."""
    out: dict[str, tuple[int, int] | str] = {}
    for path in sorted(root.glob("studies/*/BD-*-runs/**/*")):
        stat = path.stat()
        out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns) if path.is_file() else "dir"
    return out


def snapshot(root: Path) -> dict[str, Any]:
    return {"database": database_dump(root), "run directories": run_files(root)}


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """The paths at which two snapshots differ, with both values, for a readable failure."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted({*before, *after}, key=str):
            if key not in before or key not in after:
                out.append(f"{path}/{key}: {'added' if key not in before else 'removed'}")
            else:
                out += differences(before[key], after[key], f"{path}/{key}")
        return out
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


# -- fixtures ------------------------------------------------------------------------


class Slot:
    """A place where cases run, primed once, with a clean copy of its primed state.

    Every case runs at the path its slot was primed at: the database holds
    absolute paths (each study's folder, each run's directory), so a copy
    elsewhere would make motoko update the stored schemas on its first open,
    a legitimate write that would hide the ones this corpus looks for.

    Stopping a ZEO server takes a second or two, so a case's server is
    stopped in the background while the next cases use the other slots.
    """

    def __init__(self, base: Path, index: int):
        self.work = base / f"wf{index}"
        self.store = base / f"primed{index}"
        self.stopping: threading.Thread | None = None

    def prime(self) -> None:
        self.work.mkdir()
        shutil.copytree(REPO / "studies", self.work / "studies")
        shutil.copytree(REPO / "workflows", self.work / "workflows")
        (self.work / YAML).write_text(CONFIG)
        (self.work / BD).write_text(MULT_BD)
        result = motoko(*RUN, cwd=self.work)
        assert result.returncode == 0, result.stderr
        # Copying .motoko/ while its server runs would not be a clean snapshot.
        assert motoko("server", "stop", cwd=self.work).returncode == 0
        state = snapshot(self.work)
        assert all(state["database"][s]["runs"] for s in ("mult", "add", "norm")), "priming created no runs"
        assert any(k.endswith("run.json") for k in state["run directories"]), "priming staged no run"
        shutil.copytree(self.work, self.store, symlinks=True)

    def restore(self) -> Path:
        """The primed state, afresh (after the previous case's server has stopped)."""
        self.wait()
        shutil.rmtree(self.work)
        shutil.copytree(self.store, self.work, symlinks=True)
        return self.work

    def stop_in_background(self) -> None:
        self.stopping = threading.Thread(target=stop_server, args=(self.work,), kwargs={"grace": 5})
        self.stopping.start()

    def wait(self) -> None:
        if self.stopping is not None:
            self.stopping.join()
            self.stopping = None
        stop_server(self.work, grace=5)  # returns at once when nothing runs


@pytest.fixture(scope="module")
def slots(tmp_path_factory: pytest.TempPathFactory):
    """Three primed slots, used in turn by the cases."""
    base = tmp_path_factory.mktemp("bad_input")
    all_slots = [Slot(base, i) for i in range(3)]
    try:
        with ThreadPoolExecutor(len(all_slots)) as pool:
            for done in [pool.submit(slot.prime) for slot in all_slots]:
                done.result()
        yield itertools.cycle(all_slots)
    finally:
        for slot in all_slots:
            slot.wait()


@pytest.fixture
def workflow_dir(slots: Iterator[Slot]):
    """A primed workflow directory; its server, if the case starts one, is stopped after."""
    slot = next(slots)
    yield slot.restore()
    slot.stop_in_background()


# -- the test ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", CASES)
def test_bad_input(bad: Case, workflow_dir: Path) -> None:
    for edit in bad.edits:
        edit(workflow_dir)
    if bad.prepare:
        prepared = motoko(*bad.prepare, cwd=workflow_dir)
        assert prepared.returncode == 0, prepared.stderr
    before = snapshot(workflow_dir)

    result = motoko(*bad.args, cwd=workflow_dir, timeout=bad.timeout)

    shown = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode == 2, shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("motoko: error: "), shown
    for fragment in bad.names:
        assert fragment in lines[0], f"the place or problem {fragment!r} is not named: {lines[0]}"
    for fragment in bad.fix:
        assert fragment in lines[0], f"the fix {fragment!r} is not hinted: {lines[0]}"
    changed = differences(before, snapshot(workflow_dir))
    assert not changed, "bad input changed the database or the run directories:\n" + "\n".join(changed[:20])


def test_corpus_is_large_and_unique() -> None:
    """Issue 6 asks for at least 40 cases; ids name them in reports."""
    ids = [param.values[0].id for param in CASES]
    assert len(ids) >= 50
    assert len(set(ids)) == len(ids)

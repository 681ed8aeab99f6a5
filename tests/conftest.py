"""Shared fixtures: real workflow directories with real ZEO servers.

Every test that needs a database gets its own workflow directory in a temp
dir, whose server is started on first use (the embedded default) and stopped
when the test ends, so tests never share state.
"""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile motoko (and the benchmarks) once, as an installed package has them.

    Why: on a machine that sets ``PYTHONDONTWRITEBYTECODE`` (CI's does),
    every motoko process a test starts (the CLI, launchers, pilots, the run
    side) compiled the package from source again: ~0.2-0.35 s of CPU each,
    thousands of times per session. Python still reads bytecode that
    exists, and ``compileall`` writes it whatever that variable says. A
    source edited later is recompiled as usual (bytecode records its
    source's size and time); the ``__pycache__`` folders are git-ignored.
    """
    for package in ("motoko", "benchmarks"):
        compileall.compile_dir(REPO / package, quiet=1)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory: pytest.TempPathFactory):
    """At the end of the session (also after Ctrl-C): stop its ZEO servers, and SLURM if it started it."""
    import leftovers

    slurm_before = leftovers.slurm_running()
    yield
    leftovers.stop_servers(tmp_path_factory.getbasetemp())
    if not slurm_before and leftovers.slurm_running() and not os.environ.get("MOTOKO_KEEP_SLURM"):
        leftovers.stop_slurm()


def write_study(root: Path, name: str, job: str, doit: str, *, extra: str = "", launch: str | None = None) -> Path:
    """Create studies/<name> with a bd.yaml, a launch.sh and a doIt.py."""
    folder = root / "studies" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bd.yaml").write_text(f"study: {name}\njob: {job}\n{textwrap.dedent(extra)}")
    (folder / "doIt.py").write_text(textwrap.dedent(doit))
    script = launch or '#!/bin/bash\nset -e\nexec "${MOTOKO_PYTHON:-python3}" doIt.py\n'
    (folder / "launch.sh").write_text(script)
    (folder / "launch.sh").chmod(0o755)
    return folder


def write_config(root: Path, studies: list[str], extra: str = "") -> Path:
    lines = ["task_managers:"] + [f"  {s}:" for s in studies]
    path = root / "motoko.yaml"
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(extra))
    return path


@pytest.fixture
def workdir(tmp_path: Path):
    """An empty workflow directory whose server (if any) is stopped afterwards."""
    root = tmp_path / "wf"
    root.mkdir()
    yield root
    from motoko.study.server import stop_server

    stop_server(root, grace=5)


@pytest.fixture
def address(workdir: Path):
    """The address of ``workdir``'s own database server, started for the test."""
    from motoko.study.server import ensure_server

    return ensure_server(workdir)


@pytest.fixture
def example(tmp_path: Path):
    """A copy of the repository's example workflow (motoko.yaml, studies, workflows)."""
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "motoko.yaml", root)
    shutil.copytree(REPO / "studies", root / "studies")
    shutil.copytree(REPO / "workflows", root / "workflows")
    yield root
    from motoko.study.server import stop_server

    stop_server(root, grace=5)


def error_lines(stderr: str) -> list[str]:
    """stderr's lines without the announcement of a server started on the way (issue 19).

    A command that starts the workflow's server says so on its first line;
    the one-line-error rule is about what follows.
    """
    return [line for line in stderr.strip().splitlines() if not line.startswith("motoko: started the database server ")]


def motoko(*args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `motoko` command line in a subprocess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "motoko.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


@pytest.fixture
def wf(wfdir: Path):
    """A Workflow (run name r1) on the module's own ``wfdir`` fixture."""
    from motoko.flow.workflow import Workflow

    workflow = Workflow(wfdir / "motoko.yaml", run_name="r1")
    yield workflow
    workflow.close()


@pytest.fixture
def launcher(wfdir: Path):
    """A real launcher serving the module's ``wfdir`` from a thread of this process."""
    from motoko.config import load_config
    from motoko.launch.service import EmbeddedLauncher

    embedded = EmbeddedLauncher(load_config(wfdir / "motoko.yaml")).start()
    yield embedded
    embedded.stop()

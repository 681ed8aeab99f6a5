"""Helpers shared by the tests of motoko.views (status, graphs, export, plots, dashboard).

Not a test module: imported by ``tests/test_views_*.py``, ``test_tutorial.py``
and ``test_ui_browser.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Screenshots and plots the tests make, kept for a person to look at.
ARTIFACTS = Path(os.environ.get("MOTOKO_TEST_ARTIFACTS", REPO / "test-artifacts"))
#: Fast safety-net polls and lost-run detection, as in the pipeline tests.
FAST = "\npoll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 5\n"


def artifact(name: str) -> Path:
    """A path under the artifacts directory (created)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def copy_example(root: Path) -> Path:
    """Copy the repository's example workflow into ``root`` with fast polls."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "motoko.yaml", root)
    shutil.copytree(REPO / "studies", root / "studies")
    shutil.copytree(REPO / "workflows", root / "workflows")
    with open(root / "motoko.yaml", "a") as config:
        config.write(FAST)
    return root


def ensure_program(program: str, package: str) -> str:
    """The path of ``program``, installing Debian's ``package`` first if it is missing.

    Tests that need it fail (never skip) when it cannot be had: CI must run them.
    """
    found = shutil.which(program)
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(f"{program} is missing and cannot be installed here (apt-get install {package} as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, check=False)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    found = shutil.which(program)
    if not found:
        pytest.fail(f"apt-get installed {package} but {program} is not on PATH")
    return found

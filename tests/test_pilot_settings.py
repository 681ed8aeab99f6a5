"""Pilot settings, walltimes and missing SLURM: one-line errors, exit 2, nothing submitted."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import error_lines, motoko, write_config, write_study
from test_executor_slurm import slurm  # noqa: F401 (the session's SLURM)

from motoko.config import load_config
from motoko.errors import ConfigError
from motoko.launch.pilots import _partition
from motoko.study.walltime import format_duration, parse_duration


def _workflow(root: Path, pilots: str, bd: str = "") -> str:
    name = f"mtk-pilot-bad-{uuid.uuid4().hex[:8]}"
    write_study(root, "s", "{x: int}", "pass\n", extra=bd)
    settings = pilots if pilots.startswith("name:") else f"name: {name}, {pilots}"
    write_config(root, ["s"], f"launcher:\n  executor: pilot\n  pilots: {{{settings}}}\n")
    return name


def _nothing_submitted(name: str) -> None:
    try:
        out = subprocess.run(["squeue", "--noheader", f"--name={name}"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return  # no SLURM at all: nothing could be submitted
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("pilots", "message"),
    [
        ("max: 0", "pilots max must be an integer from 1 to 100000, got 0"),
        ("cores: two", "pilots cores must be an integer from 1 to 100000, got 'two'"),
        ("time: '1:2:3:4'", "pilots time must be a walltime: '1:2:3:4' is not a SLURM time"),
        ("time: -5", "pilots time must be a walltime: -5 is not a positive number of seconds"),
        ("idle_exit: soon", "pilots idle_exit must be a positive number of seconds, got 'soon'"),
        ("slurm_options: --partition=x", "pilots slurm_options must be a list of sbatch options, got '--partition=x'"),
        ("name: 'a b'", "pilots name must be a SLURM job name"),
        ("maximum: 3", "unknown pilots setting 'maximum'"),
    ],
)
def test_bad_pilot_settings_are_one_line_errors(workdir: Path, pilots: str, message: str):
    name = _workflow(workdir, pilots)
    result = motoko("launcher", "start", "--once", cwd=workdir)
    assert result.returncode == 2
    assert error_lines(result.stderr)[0].startswith("motoko: error: ") and message in result.stderr, result.stderr
    assert "motoko.yaml:" in result.stderr and len(error_lines(result.stderr)) == 1
    _nothing_submitted(name)


def test_unknown_pilots_setting_suggests_the_close_one(workdir: Path):
    _workflow(workdir, "maxx: 3")
    with pytest.raises(ConfigError, match="did you mean 'max'"):
        load_config(workdir)


def test_pilot_time_shorter_than_a_studys_walltime_names_both(workdir: Path):
    name = _workflow(workdir, "time: '00:10:00'", bd="walltime: '01:00:00'\n")
    result = motoko("launcher", "start", "--executor", "pilot", "--once", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "pilots time 00:10:00 (motoko.yaml launcher.pilots.time) is too short for study s's walltime 01:00:00" in result.stderr
    assert len(error_lines(result.stderr)) == 1
    submit = motoko("pilots", "submit", cwd=workdir)
    assert submit.returncode == 2 and "is too short for study s's walltime" in submit.stderr
    _nothing_submitted(name)


def test_pilots_bigger_than_any_node_are_refused_before_anything_is_submitted(workdir: Path, slurm: str):  # noqa: F811
    """SLURM would leave such a pilot PENDING (PartitionConfig) for ever: one line names both sizes."""
    cpus = max(int(c.rstrip("+")) for c in subprocess.run(
        ["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split())
    name = _workflow(workdir, f"cores: {cpus + 1}")
    for command in (["launcher", "start", "--once"], ["pilots", "submit"]):
        result = motoko(*command, cwd=workdir)
        assert result.returncode == 2, (command, result.stderr)
        assert error_lines(result.stderr) == [
            f"motoko: error: pilots cores {cpus + 1} (motoko.yaml launcher.pilots.cores) is more than any node of "
            f"the default partition has ({cpus} CPUs): such a pilot would wait in the queue for ever "
            f"(set launcher.pilots.cores to {cpus} or fewer, or name a partition of bigger nodes)"
        ], result.stderr
    _nothing_submitted(name)


@pytest.mark.parametrize(
    ("options", "partition"),
    [([], None), (["--partition=short"], "short"), (["--qos=x", "--partition", "long"], "long"),
     (["-p", "gpu"], "gpu"), (["-pdebug"], "debug"), (["--partition"], None)],
)
def test_the_pilots_partition_is_read_from_their_sbatch_options(options: list[str], partition: str | None):
    assert _partition(options) == partition


def test_no_slurm_on_the_machine_names_what_is_missing(workdir: Path, tmp_path: Path):
    name = _workflow(workdir, "max: 1")
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare)}
    python = os.path.realpath(os.sys.executable)  # type: ignore[attr-defined]
    for command in (["launcher", "start", "--once"], ["pilots", "submit"], ["pilots", "list"]):
        result = subprocess.run(
            [python, "-m", "motoko.cli.main", *command], cwd=workdir, capture_output=True, text=True,
            env={**os.environ, **env}, timeout=120,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert error_lines(result.stderr) == [
            "motoko: error: no SLURM on this machine: sbatch not found on PATH (pilots are SLURM jobs) "
            "(run where SLURM's client commands are (load its module), or use `executor: local`)"
        ], result.stderr
    _nothing_submitted(name)


def test_bad_walltime_in_bd_yaml(workdir: Path):
    _workflow(workdir, "max: 1", bd="walltime: soon\n")
    result = motoko("launcher", "start", "--once", cwd=workdir)
    assert result.returncode == 2 and "'walltime' expects the expected duration of a run: 'soon' is not a SLURM time" in result.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("10", 600.0), ("02:30", 150.0), ("01:00:00", 3600.0), ("1-00", 86400.0), ("1-02:03:04", 93784.0)],
)
def test_durations_read_like_slurm(text: object, seconds: float):
    assert parse_duration(text) == seconds


def test_durations_print_like_slurm():
    assert format_duration(59.2) == "00:01:00" and format_duration(93784) == "1-02:03:04"
    for bad in (True, 0, "", "a:b", None, [1]):
        with pytest.raises(ValueError):
            parse_duration(bad)

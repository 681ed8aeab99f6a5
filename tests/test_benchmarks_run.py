"""The benchmarks still run: each at a tiny size, as a user runs it, its JSON read back.

Figures are never asserted here (machines are noisy: the benchmarks print
them and the closing notes compare them); what is checked is that every
run was executed once and that the figures issue targets name are there.
A benchmark that breaks would otherwise go unseen until a session relies on
it (a refactor of ``benchmarks.common.cache_bytecode`` did, unseen by CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def _benchmark(name: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_channel_benchmark_runs():
    result = _benchmark(
        "channel", "--runs", "4", "--repeat", "1", "--concurrent", "6", "--seconds", "0.3", "--rounds", "2",
        "--database-concurrent", "3",
    )
    assert result["bytecode"] == "cached (as an installed package)"
    assert result["python_runs"]["ratio_channel_to_bare"] > 0
    assert result["import"]["run_api_above_bare_s"] < result["import"]["database_client_above_bare_s"]
    rate = result["commit_rate"]["channel"]
    assert len(rate["ratios"]) == 2 and len(rate["writer_commits_per_s_alone"]) == 3
    assert rate["run_processes_connected"] == 0
    assert result["commit_rate"]["database"]["run_processes_connected"] >= 3  # each run a client


def test_the_launchers_benchmark_runs():
    result = _benchmark("launchers", "--runs", "40", "--scenarios", "1x8", "8x1", "--repeat", "1")
    (round_,) = result["rounds"]
    for name, scenario in round_.items():
        if isinstance(scenario, dict):
            assert scenario["finished"] == scenario["attempts_total"] == 40, (name, scenario)
            assert scenario["cpu_ms_per_run"] > 0, "the launchers' CPU is counted"
    assert len(result["ratios_8x1_over_1x8"]) == 1 and len(result["cpu_per_run_8x1_over_1x8"]) == 1


@pytest.mark.parametrize(("name", "args"), [("run_files", ("--runs", "30", "--repeat", "1")), ("throughput", ("--runs", "30", "--repeat", "1"))])
def test_the_fan_out_benchmarks_run(name, args):
    result = _benchmark(name, *args)
    text = json.dumps(result)
    assert "xargs" in text and "ratio" in text


def test_the_latency_benchmark_runs():
    result = _benchmark("latency", "--hops", "3", "--pipeline-repeat", "1")
    assert result["chain"]["hops"] == 3 and len(result["chain"]["overhead_s"]) > 0
    assert {"pipeline_wall_s", "commit_to_other_client_s"} <= set(result)


def test_the_database_scale_benchmark_runs():
    result = _benchmark("db_scale", "--sizes", "200", "--chunk", "100")
    (figures,) = result["results"]
    assert figures["n"] == 200 and figures["select_state"]["matches"] > 0

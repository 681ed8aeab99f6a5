"""Retries that fix the cause: bd.yaml's ``retry`` rules, checked on load and applied to the retry."""

from __future__ import annotations

import pytest
from conftest import motoko
from launch_support import create_runs, make_study, run_of

from motoko.errors import ParameterError, UnknownNameError
from motoko.study.retry import format_time, parse_mem, parse_time, scaled_options
from motoko.study.schema import StudySchema, parse_schema

BASE = "study: s\njob: {x: int}\nretries: 2\n"


def test_rules_are_read_and_survive_storage():
    schema = parse_schema(BASE + "retry: {TIMEOUT: {time: x2, max_time: '08:00:00'}, OUT_OF_MEMORY: {mem: x1.5}}\n")
    assert schema.retry_rules == {"TIMEOUT": {"time": "x2", "max_time": "08:00:00"}, "OUT_OF_MEMORY": {"mem": "x1.5"}}
    assert StudySchema.from_dict(schema.to_dict()).retry_rules == schema.retry_rules


@pytest.mark.parametrize(
    ("rule", "error", "message"),
    [
        ("{TIMEOT: {time: x2}}", UnknownNameError, "inline.yaml:4: unknown retry reason 'TIMEOT' (did you mean 'TIMEOUT'?)"),
        ("{TIMEOUT: {tim: x2}}", UnknownNameError, "inline.yaml:4: unknown retry setting 'tim' (did you mean 'time'?)"),
        ("{TIMEOUT: {time: 2}}", ParameterError,
         "inline.yaml:4: 'retry' TIMEOUT time expects a factor like x2, got 2 (write xN with N above 1, e.g. x1.5)"),
        ("{TIMEOUT: {time: x0.5}}", ParameterError, "'retry' TIMEOUT time expects a factor like x2, got 'x0.5'"),
        ("{OUT_OF_MEMORY: {mem: x2, max_mem: lots}}", ParameterError,
         "inline.yaml:4: 'retry' OUT_OF_MEMORY max_mem expects a SLURM mem, got 'lots' "
         "(write it as sbatch takes it, e.g. 16G or 4000M)"),
        ("{TIMEOUT: {time: x2, max_time: soon}}", ParameterError, "'retry' TIMEOUT max_time expects a SLURM time, got 'soon'"),
        ("[TIMEOUT]", ParameterError, "inline.yaml:4: 'retry' expects a mapping of failure reasons, got ['TIMEOUT']"),
        ("{TIMEOUT: x2}", ParameterError, "'retry' TIMEOUT expects a mapping of resources, got 'x2'"),
    ],
)
def test_bad_rules_fail_with_one_line(rule, error, message):
    with pytest.raises(error) as caught:
        parse_schema(BASE + f"retry: {rule}\n", source="inline.yaml")
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_the_cli_refuses_a_bad_rule_and_writes_nothing(workdir):
    _, db = make_study(workdir, "lost_after: 5\n")
    (rid,) = create_runs(db, x=1)
    bd = workdir / "studies" / "s" / "bd.yaml"
    bd.write_text(bd.read_text() + "retry: {TIMEOUT: {time: double}}\n")
    result = motoko("create", "--yes", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("motoko: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "'retry' TIMEOUT time expects a factor like x2, got 'double'" in result.stderr
    assert "Traceback" not in result.stderr
    db.abort()
    assert db.study("s").schema.retry_rules == {} and run_of(db, rid).state == "CREATED"  # nothing written


def test_scaling_takes_the_last_value_and_respects_the_cap():
    assert scaled_options(["--time=00:10:00", "-t", "30"], {"time": "x2"}) == ["--time=01:00:00"]
    assert scaled_options(["--time=1-00:00:00"], {"time": "x3", "max_time": "2-00:00:00"}) == ["--time=2-00:00:00"]
    assert scaled_options(["--mem=4G"], {"mem": "x1.5"}) == ["--mem=6144M"]
    assert scaled_options([], {"mem": "x2", "max_mem": "8G"}) == ["--mem=8192M"]  # unknown: the cap
    assert scaled_options([], {"time": "x2"}) == []  # unknown and no cap: unchanged
    assert scaled_options(["--mem=64G"], {"mem": "x2", "max_mem": "16G"}) == ["--mem=65536M"]  # never lowered
    assert (parse_time("90"), parse_time("1:30"), parse_time("2-3"), parse_mem("512")) == (5400, 90, 183600, 512)
    assert format_time(90061) == "1-01:01:01"


def test_a_run_failed_by_timeout_is_retried_with_more_time_and_keeps_each_attempts_options(workdir):
    extra = "slurm_options: ['--time=00:10:00']\nretries: 2\nretry_on: []\nretry: {TIMEOUT: {time: x2, max_time: '00:30:00'}}\n"
    _, db = make_study(workdir, "", extra=extra)
    timed_out, failed = create_runs(db, x=[1, 2])

    def end(rid: int, failure: str | None) -> None:
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, "LAUNCHED", launcher="l")
        study.transition(run, "FAILED", error="killed", failure=failure)

    for _ in range(3):
        db.transact(lambda: end(timed_out, "TIMEOUT"))
    db.transact(lambda: end(failed, None))
    run = run_of(db, timed_out)
    assert (run.state, run.attempt) == ("FAILED", 3)  # retries: 2, then it stays FAILED
    assert [h["slurm_options"] for h in run.history] == [["--time=00:10:00"], ["--time=00:10:00", "--time=00:20:00"]]
    assert run.slurm_options == ["--time=00:20:00", "--time=00:30:00"]  # doubled, then capped at 30 min
    assert [h["failure"] for h in run.history] == ["TIMEOUT", "TIMEOUT"]
    other = run_of(db, failed)
    assert (other.state, other.attempt) == ("FAILED", 1)  # no rule for a plain failure, FAILED not in retry_on

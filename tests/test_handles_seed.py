"""The compute-SDK verbs handles promised (Inductiva, ChemCloud, Numerous), on real runs.

Downloads of outputs and inputs, the newest file, several logs at once,
summaries, results as values with failures in place, ``save()`` without a
path, ``wait(initial_interval=...)``, ``runs(last=0)`` and ``wf.runs``
across studies. Failure paths: downloading from a run with no directory,
from a run whose directory is on another host, an unknown file.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko import RunList
from motoko.errors import ParameterError, RunFileNotFound
from motoko.flow.results import RunFailure
from motoko.study.database import StudyDB
from motoko.study.records import FAILED
from motoko.study.run_files import is_bookkeeping

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 30
launcher: {executor: local, max_parallel: 2, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

DOIT = """\
import sys
from pathlib import Path

from motoko import current_run

run, job = current_run()
print(f"x={job.x}", flush=True)
print(f"warning x={job.x}", file=sys.stderr, flush=True)
if job.x < 0:
    raise SystemExit("negative x")
Path("results").mkdir()
Path("results/y.txt").write_text(str(2 * job.x))
if job.x == 1.5:
    run.store_file("results/y.txt")  # readable from hosts that cannot see this directory
run.set_output({"y": 2 * job.x})
"""


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float}", DOIT)
    write_study(workdir, "post", "{x: float}", DOIT)
    write_config(workdir, ["calc", "post"], FAST)
    return workdir


def test_download_outputs_and_inputs_of_a_run(wf, wfdir, launcher, tmp_path, monkeypatch):
    run = wf.calc.createTask(x=1.5).result(timeout=60).run
    monkeypatch.chdir(tmp_path)
    out = run.download_outputs()
    assert out == tmp_path / "motoko_output" / "calc.1"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "results/y.txt", "stderr", "stdout"]
    assert (out / "results" / "y.txt").read_text() == "3.0"
    chosen = run.download_outputs(filenames=["stdout"], output_dir=tmp_path / "only")
    assert [p.name for p in chosen.iterdir()] == ["stdout"] and (chosen / "stdout").read_text() == "x=1.5\n"
    inputs = run.download_inputs()
    assert inputs == tmp_path / "motoko_input" / "calc.1"
    assert sorted(p.name for p in inputs.iterdir()) == ["doIt.py", "launch.sh", "run.json"]
    assert (inputs / "doIt.py").read_text() == (wfdir / "studies" / "calc" / "doIt.py").read_text()
    newest = run.last_modified_file()
    assert newest is not None and newest.name in {"stdout", "stderr", "results/y.txt"}
    # motoko's own files (attempt fence, exit status) are not the run's
    assert newest.modified == max(f.modified for f in run.files() if not is_bookkeeping(f.name))


def test_a_link_leading_out_of_the_run_directory_is_never_downloaded(wf, launcher, tmp_path):
    run = wf.calc.createTask(x=1.0).result(timeout=60).run
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's")
    (Path(run.run_path) / "leak").symlink_to(secret)
    out = run.download_outputs(output_dir=tmp_path / "out")
    assert not (out / "leak").exists() and (out / "stdout").is_file()
    with pytest.raises(RunFileNotFound) as leaking:
        run.download_outputs(filenames=["leak"], output_dir=tmp_path / "named")
    assert str(leaking.value).startswith(f"'leak' is outside the run directory {run.run_path} of run calc.1")
    assert not (tmp_path / "named").exists()


def test_download_outputs_of_a_run_list_goes_one_directory_per_run(wf, launcher, tmp_path):
    rl = wf.calc.createTask(x=[1.0, 2.0]).result(timeout=60)
    dirs = rl.download_outputs(filenames=["results/y.txt"], output_dir=tmp_path / "all")
    assert dirs == [tmp_path / "all" / "calc.1", tmp_path / "all" / "calc.2"]
    assert [(d / "results" / "y.txt").read_text() for d in dirs] == ["2.0", "4.0"]
    assert [sorted(p.name for p in d.iterdir()) for d in rl.download_inputs(output_dir=tmp_path / "in")] == [
        ["doIt.py", "launch.sh", "run.json"]] * 2
    run, newest = rl.last_modified_file()  # type: ignore[misc]
    assert newest.modified == max(f.modified for r, _ in rl for f in r.files() if not is_bookkeeping(f.name))


def test_downloading_from_a_run_without_a_directory_writes_nothing(wf, tmp_path):
    run = wf.calc.createTask(x=1.0).run  # no launcher: CREATED, never staged
    with pytest.raises(RunFileNotFound) as none:
        run.download_outputs(output_dir=tmp_path / "out")
    assert str(none.value) == "run calc.1 has no directory to copy from: it is CREATED and was never staged (download once it has started)"
    assert not (tmp_path / "out").exists()
    run.cancel()
    with pytest.raises(RunFileNotFound, match="it ended CANCELLED and was never staged"):
        wf.calc.runs(last=1).download_inputs(output_dir=tmp_path / "in")
    assert not (tmp_path / "in").exists()
    assert wf.calc.runs(last=1).last_modified_file() is None


def test_downloading_from_another_host_or_an_unknown_file_is_a_clear_error(wf, launcher, tmp_path):
    run = wf.calc.createTask(x=1.0).result(timeout=60).run
    with pytest.raises(RunFileNotFound) as unknown:
        run.download_outputs(filenames=["stdot"], output_dir=tmp_path / "out")
    assert str(unknown.value) == f"run calc.1 has no file 'stdot' in {run.run_path} (did you mean 'stdout'?)"
    assert not (tmp_path / "out").exists()
    with StudyDB(wf.address_of("calc")) as other:  # as if it had run on a cluster node
        def move() -> None:
            stored = other.run("calc", 1)
            stored.run_path = "/scratch/node42/BD-calc-runs/run-1"
            stored.machine_name = "node42"

        other.transact(move)
    with pytest.raises(RunFileNotFound) as elsewhere:
        wf.calc.runs[1].download_outputs(output_dir=tmp_path / "out")
    assert str(elsewhere.value) == (
        "the directory /scratch/node42/BD-calc-runs/run-1 of run calc.1 does not exist on this host (it ran on node42) "
        "(look on the machine that ran it, or check whether `motoko clean` removed it)"
    )
    assert not (tmp_path / "out").exists()


def test_files_a_run_stored_are_downloaded_over_the_database_from_another_host(wf, launcher, tmp_path):
    run = wf.calc.createTask(x=1.5).result(timeout=60).run
    assert run.stored_files() == ["results/y.txt"]
    with StudyDB(wf.address_of("calc")) as other:  # its directory is now on a node this host cannot see
        def move() -> None:
            stored = other.run("calc", 1)
            stored.run_path = "/scratch/node42/BD-calc-runs/run-1"
            stored.machine_name = "node42"

        other.transact(move)
    run = wf.calc.runs[1]
    out = run.download_outputs(output_dir=tmp_path / "out")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()] == ["results/y.txt"]
    assert (out / "results" / "y.txt").read_text() == "3.0"
    with pytest.raises(RunFileNotFound) as not_stored:
        run.download_outputs(filenames=["stdout"], output_dir=tmp_path / "other")
    assert str(not_stored.value) == (
        "the directory /scratch/node42/BD-calc-runs/run-1 of run calc.1 does not exist on this host "
        "(it ran on node42); it stored only results/y.txt in the database (possible: results/y.txt)"
    )
    assert not (tmp_path / "other").exists()
    assert run.download_inputs(output_dir=tmp_path / "in") == tmp_path / "in"  # nothing staged was stored
    assert list((tmp_path / "in").iterdir()) == []


def test_store_file_refuses_names_outside_the_run_directory_and_huge_files(wf):
    from motoko.study.downloads import MAX_STORED_BYTES

    run = wf.calc.createTask(x=1.0).run
    with pytest.raises(ParameterError) as escaping:
        run.store_file("../secret")
    assert str(escaping.value) == (
        "store_file takes a name inside the run directory, got '../secret' (e.g. run.store_file('results/y.txt'))")
    with pytest.raises(ParameterError, match=f"a run stores at most {MAX_STORED_BYTES} bytes per file"):
        run.store_file("big.bin", data=b"0" * (MAX_STORED_BYTES + 1))
    assert run.stored_files() == []


def test_tail_of_several_files_at_once(wf, launcher):
    run = wf.calc.createTask(x=2.0).result(timeout=60).run
    assert run.tail(["stdout", "stderr"]) == {"stdout": ["x=2.0"], "stderr": ["warning x=2.0"]}
    follow = wf.calc.createTask(x=4.0).run.tail(["stdout", "stderr"], follow=True)
    assert sorted(follow) == [("stderr", "warning x=4.0"), ("stdout", "x=4.0")]
    with pytest.raises(RunFileNotFound, match="has no file 'nope'"):
        run.tail(["stdout", "nope"])


def test_outputs_and_result_values_put_failures_in_place(wf, launcher):
    rl = wf.calc.createTask(x=[1.0, -1.0, 3.0])
    values = rl.result(timeout=60, values=True)  # waits for every run to end, raises for none
    assert values[0] == {"y": 2.0} and values[2] == {"y": 6.0}
    failure = values[1]
    assert isinstance(failure, RunFailure) and not failure
    assert (failure.study, failure.id, failure.state, failure.exit_code) == ("calc", 2, FAILED, 1)
    assert str(failure).startswith("calc.2 FAILED (exit code 1): exit code 1") and "negative x" in str(failure)
    assert rl.outputs() == values
    queued = wf.post.createTask(x=7.0)
    assert queued.outputs() in ([None], [{"y": 14.0}])  # not ended yet: None
    assert asyncio.run(queued.values(timeout=60)) == [{"y": 14.0}]


def test_summary_and_print_summary(wf, launcher):
    wf.calc.createTask(x=[1.0, -1.0]).result(timeout=60, values=True)
    rl = wf.calc.runs(run_name="")  # newest first
    text = rl.summary()
    lines = text.splitlines()
    assert lines[0] == "calc (r1): 1/2 finished (50%), 1 failed"
    assert lines[1].startswith("  calc.2 FAILED ") and "exit code 1" in lines[1]
    assert lines[2].startswith("  calc.1 FINISHED ") and " s on " in lines[2]
    out = io.StringIO()
    rl.print_summary(file=out)
    assert out.getvalue() == text + "\n"


def test_save_without_a_path_and_wait_with_an_initial_interval(wf, launcher, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rl = wf.calc.createTask(x=[1.0, 2.0])
    path = rl.save()
    assert path == tmp_path / "calc-1-2.runlist.json"
    assert RunList.open(path).result(timeout=60, initial_interval=0.5).ids == [1, 2]
    assert asyncio.run(rl.wait(timeout=60, initial_interval=1)) is rl
    with pytest.raises(ParameterError) as bad:
        rl.result(initial_interval=-1)
    assert str(bad.value) == (
        "initial_interval must be a number of seconds >= 0, got -1 "
        "(it is accepted for ChemCloud compatibility; motoko wakes on commits and needs none)"
    )


def test_runs_last_zero_means_all_and_wf_runs_spans_studies(wf, wfdir):
    wf.calc.createTask(x=[1.0, 2.0])
    wf.post.createTask(x=[1.0])
    wf.calc.createTask(x=[3.0])
    assert wf.calc.runs(last=0).ids == [3, 2, 1]
    found = wf.runs()
    assert [(r.study, r.id) for r in found] == [("calc", 3), ("post", 1), ("calc", 2), ("calc", 1)]
    assert [(r.study, r.id) for r in wf.runs(last=2)] == [("calc", 3), ("post", 1)]
    assert [(r.study, r.id) for r in wf.runs(state="CREATED", run_name="r1", last=0)] == [
        ("calc", 3), ("post", 1), ("calc", 2), ("calc", 1)]
    assert wf.runs(run_name="other") == []
    listed = motoko("runs", "list", "--last", "0", "--format", "json", cwd=wfdir)  # the CLI agrees
    assert [(r["study"], r["id"]) for r in json.loads(listed.stdout)] == [("calc", 3), ("post", 1), ("calc", 2), ("calc", 1)]


def test_run_not_found_is_importable_from_motoko(wf):
    from motoko import RunNotFound

    with pytest.raises(RunNotFound) as missing:
        _ = wf.calc.runs[42]
    assert isinstance(missing.value, KeyError) and "42" in str(missing.value)

"""SLURM's limits: arrays split to MaxArraySize, refusals that pass wait, refusals that do not name the fix.

Against the real single-node SLURM. A refusal that passes cannot be caused
on demand on a shared cluster, so one test puts a real ``sbatch`` wrapper
first on PATH that refuses with SLURM's own words until the test allows it,
then hands over to the real sbatch.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from launch_support import Background, create_runs, make_study, run_of, wait_until
from test_executor_slurm import slurm  # noqa: F401 (the session fixture)

from motoko.errors import SlurmError
from motoko.launch.executors.base import Launch
from motoko.launch.executors.slurm import SlurmExecutor
from motoko.launch.executors.slurm_cli import _FIXES, cluster_limits, parse_limits
from motoko.study.records import FAILED, FINISHED

pytestmark = pytest.mark.slow

CONFIG = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlauncher: {executor: slurm, poll: 0.3, heartbeat: 0.5%s}\n"


def test_the_clusters_limits_are_read_from_scontrol(slurm):  # noqa: F811
    limits = asyncio.run(cluster_limits())
    assert limits == parse_limits(Path(os.environ["SLURM_CONF"]).read_text())  # what the cluster was given
    assert set(limits) == {"MaxArraySize", "MaxJobCount"}


def test_bundles_are_split_to_fit_the_array_size_limit(slurm, tmp_path):  # noqa: F811
    async def main() -> list[str]:
        executor = SlurmExecutor(20, bundle_size=10, max_array_size=4, window=0.5, poll=0.2)
        await executor.start()
        assert executor.bundle_limit == 4  # the lower of ours and the cluster's
        for rid in range(10):
            (tmp_path / str(rid)).mkdir()
            await executor.submit(Launch("s", rid, tmp_path / str(rid), ("true",), dict(os.environ)))
        outcomes = [await asyncio.wait_for(executor.outcomes.get(), 120) for _ in range(10)]
        await executor.close()
        assert all(o.succeeded for o in outcomes), [o.describe() for o in outcomes]
        return [ident for _, ident in executor.submitted]

    idents = asyncio.run(main())
    arrays: dict[str, int] = {}
    for ident in idents:
        arrays[ident.split("_")[0]] = arrays.get(ident.split("_")[0], 0) + 1
    assert sorted(arrays.values()) == [2, 4, 4]


def _refusing_sbatch(folder: Path, allow: Path, calls: Path) -> None:
    folder.mkdir()
    real = shutil.which("sbatch")
    script = folder / "sbatch"
    script.write_text(
        "#!/bin/bash\n"
        f"echo x >> {calls}\n"
        f"if [ ! -e {allow} ]; then\n"
        "  echo 'sbatch: error: Batch job submission failed: Resource temporarily unavailable' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)


def test_a_refusal_that_passes_keeps_the_runs_queued_and_says_so(slurm, workdir, monkeypatch):  # noqa: F811
    allow, calls = workdir / "allow", workdir / "calls"
    _refusing_sbatch(workdir / "bin", allow, calls)
    monkeypatch.setenv("PATH", f"{workdir / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config, db = make_study(workdir, CONFIG % "")
    ids = create_runs(db, x=[1, 2])
    background = Background(config, "slurm", once=True)

    def note() -> str:
        db.abort()
        return " ".join(str(record.note) for record in db.launchers().values())

    wait_until(lambda: calls.exists() and len(calls.read_text().split()) >= 3, 60, "sbatch to be refused three times")
    assert "SLURM refused jobs for now (sbatch: error: Batch job submission failed: Resource temporarily unavailable)" in note()
    assert {run_of(db, r).state for r in ids} == {"LAUNCHED"}  # waiting, not FAILED
    status = subprocess.run(["motoko", "status"], cwd=workdir, capture_output=True, text=True)
    assert "SLURM refused jobs for now" in status.stdout, status.stdout + status.stderr
    allow.touch()
    report = background.join(120)
    assert report.finished == 2 and {run_of(db, r).state for r in ids} == {FINISHED}
    assert "None" in note()  # the note is gone once sbatch accepts again


def test_a_refusal_that_never_passes_fails_the_run_naming_the_fix(slurm, workdir):  # noqa: F811
    config, db = make_study(workdir, CONFIG % "", extra="slurm_options: ['--mem=999999']\n")
    (rid,) = create_runs(db, x=1)
    Background(config, "slurm", once=True).join(60)
    run = run_of(db, rid)
    assert run.state == FAILED
    assert run.error.splitlines()[0] == (
        "could not submit to SLURM: sbatch failed: sbatch: error: Batch job submission failed: Requested node "
        "configuration is not available (ask for no more cores or memory than a node has (nproc, --mem in "
        "slurm_options; `sinfo -o '%c %m'`))"
    )


def test_every_known_permanent_refusal_names_its_setting():
    error = SlurmError(["sbatch"], "sbatch: error: Batch job submission failed: Invalid job array specification",
                       hint=_FIXES["Invalid job array specification"])
    assert str(error) == (
        "sbatch failed: sbatch: error: Batch job submission failed: Invalid job array specification "
        "(the array is larger than the cluster's MaxArraySize: lower bundle_size (motoko.yaml launcher) below it)"
    )

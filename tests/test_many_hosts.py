"""Launchers on several "hosts" (separate checkouts) sharing one ZEO server over TCP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import motoko, write_config, write_study

from motoko.study.database import StudyDB
from motoko.study.server import stop_server


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_hosts_share_one_database_over_tcp(tmp_path: Path):
    host_a = tmp_path / "host-a"
    host_a.mkdir()
    doit = """
    import os
    from motoko import current_run
    run, job = current_run()
    run.y = job.x * 10
    run.where = os.getcwd()
    """
    write_study(host_a, "s", "{x: int}", doit)
    write_config(host_a, ["s"], "poll: {initial: 0.05, factor: 2, maximum: 0.5}\n")
    (host_a / "wf.py").write_text(textwrap.dedent("""
        from motoko import step

        @step
        async def fan(workflow):
            runs = await workflow.s.createTask(x=list(range(12)))
            return sorted(run.y for run, _ in runs)
    """))
    host_b = tmp_path / "host-b"
    shutil.copytree(host_a, host_b)  # the other host's own checkout of the workflow
    port = _port()
    launchers: list[subprocess.Popen[str]] = []
    try:
        started = motoko("server", "start", "--listen", f"127.0.0.1:{port}", "--insecure", cwd=host_a)
        assert started.returncode == 0 and f"zeo://127.0.0.1:{port}" in started.stdout
        address = f"zeo://127.0.0.1:{port}"
        launchers = [
            subprocess.Popen(
                [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--db", address,
                 "--machine-name", name, "--idle-exit", "10", "-j", "1"],
                cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name, cwd in (("host-a", host_a), ("host-b", host_b))
        ]
        # Runs come once both launchers serve, so that both take a share from
        # the start. (One slow to start on a loaded CI machine found all 12
        # runs claimed by the other, alone and claiming deep; the first now
        # gives back its queue when another joins: test_many_launchers.py.)
        db = StudyDB(address)
        deadline = time.monotonic() + 60
        while {r.machine_name for r in db.launchers().values() if r.stopped is None} != {"host-a", "host-b"}:
            assert time.monotonic() < deadline, "both launchers registered"
            assert all(p.poll() is None for p in launchers), [p.communicate()[0] for p in launchers]
            time.sleep(0.05)
            db.abort()
        db.close()
        result = motoko("run", "wf.py", "--no-launcher", cwd=host_a, timeout=120)
        outputs = [p.communicate(timeout=60)[0] for p in launchers]
        assert result.returncode == 0, (result.stderr, outputs)
        assert f"fan: {[x * 10 for x in range(12)]}" in result.stdout
        db = StudyDB(address)
        runs = list(db.study("s").runs.values())
        machines = {run.machine_name for run in runs}
        assert machines == {"host-a", "host-b"}, outputs
        for run in runs:
            home = host_a if run.machine_name == "host-a" else host_b
            assert Path(run.where).is_relative_to(home), "a run executed in the other host's directory"
        db.close()
        bad = motoko("launcher", "start", "--db", "zeo://127.0.0.1:notaport", cwd=host_b)
        assert bad.returncode == 2 and "port is not a number" in bad.stderr
    finally:
        for process in launchers:
            if process.poll() is None:
                process.kill()
                process.communicate()
        stop_server(host_a)


def test_a_study_on_another_server_with_host(example: Path, tmp_path: Path):
    other = tmp_path / "other-server"
    other.mkdir()
    write_study(other, "unused", "{x: int}", "pass\n")
    write_config(other, ["unused"])
    port = _port()
    try:
        assert motoko("server", "start", "--listen", f"127.0.0.1:{port}", "--insecure", cwd=other).returncode == 0
        config = (example / "motoko.yaml").read_text().replace("  norm:\n", f"  norm:\n    host: zeo://127.0.0.1:{port}\n")
        (example / "motoko.yaml").write_text(config)
        result = motoko("run", "workflows/pipeline.py", cwd=example, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "remult: [[18.038928" in result.stdout
        remote = StudyDB(f"zeo://127.0.0.1:{port}")
        assert {run.state for run in remote.study("norm").runs.values()} == {"FINISHED"}
        assert len(remote.study("norm").runs) == 2 and "mult" not in remote.studies()
        remote.close()
        info = motoko("info", "--format", "json", cwd=example).stdout
        assert f"zeo://127.0.0.1:{port}" in info
    finally:
        stop_server(other)

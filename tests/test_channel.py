"""The run channel: real launchers, real ZEO servers, real run processes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from launch_support import Background, create_runs, make_study, run_of, serve

from motoko.config import load_config
from motoko.errors import ChannelError, RunWriteRefused
from motoko.launch import attempts
from motoko.launch.channel import CHANNEL_PREFIX, MAX_TOLD, sweep_stale_channels
from motoko.launch.run_side import CONFIRM_EVERY
from motoko.launch.service import build_launcher
from motoko.study.database import StudyDB
from motoko.study.records import CANCELLED, FAILED, FINISHED, LOST, RUNNING

FAST = "poll: {initial: 0.05, factor: 2, maximum: 0.5}\nlost_after: 2\nlauncher: {poll: 0.5, heartbeat: 0.2, cancel_grace: 1}\n"
HEAVY = ("ZODB", "ZEO", "BTrees", "persistent", "transaction", "pandas", "numpy", "networkx", "asyncio")
#: Light, yet ~5 ms of every Python run's start: the field types (only declared fields need them).
AVOIDED = ("dataclasses", "inspect", "motoko.study.fields")


def serve_once(workdir: Path, **options):
    """Serve the workflow's launcher until its runs ended; return the launcher (closed)."""
    launcher = build_launcher(load_config(workdir), once=True, **options)
    try:
        launcher.serve()
    finally:
        launcher.db.close()
    return launcher


def files(db: StudyDB, rid: int) -> tuple[str, str]:
    run = run_of(db, rid)
    folder = Path(run.run_path)
    return (folder / "stdout").read_text(), (folder / "stderr").read_text()


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def test_a_run_writes_through_its_launcher_and_imports_nothing_heavy(workdir):
    doit = f"""
    import sys
    from motoko import current_run
    run, job = current_run()
    run.start()
    run.y = [2.0 * job.x]
    for step in range(3):
        run.push_quantity(step * job.x, step=step, name="energy")
    run.set_progress(0.5)
    run.set_status("half way")
    run.set_output({{"answer": 42}})
    run.set_metadata({{"solver": "cg"}})
    print(type(run).__name__, run.state, run.y, job["x"], run.get("nothing", "-"), run.should_stop())
    print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=3)
    serve_once(workdir)
    run = run_of(db, rid)
    assert run.state == FINISHED, run.error
    assert run.y == [6.0] and run.progress == 0.5 and run.status == "half way"
    assert run.output == {"answer": 42} and run.get_metadata() == {"solver": "cg"}
    assert list(run.get_quantity("energy")["energy"]) == [0, 3, 6]
    out, err = files(db, rid)
    assert out.splitlines() == ["ChannelRun RUNNING [6.0] 3 - False", "[]"], err


def test_the_channel_is_the_users_alone(workdir):
    doit = """
    import os, stat
    from motoko import current_run
    run, job = current_run()
    path = os.environ["MOTOKO_CHANNEL"]
    for item in (os.path.dirname(path), path):
        info = os.stat(item)
        print(oct(info.st_mode & 0o777), info.st_uid, stat.S_ISSOCK(info.st_mode))
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    launcher = serve_once(workdir)
    out, err = files(db, rid)
    uid = os.getuid()
    assert out.splitlines() == [f"0o700 {uid} False", f"0o600 {uid} True"], err
    assert launcher.channel.path is None  # removed when the launcher stopped


def test_unparseable_and_oversized_messages_get_one_line_errors(workdir):
    doit = """
    import json, os, socket
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(os.environ["MOTOKO_CHANNEL"])
    reader = sock.makefile("rb")
    def say(line):
        sock.sendall(line)
        return json.loads(reader.readline())
    stranger = socket.socket(socket.AF_UNIX)
    stranger.connect(os.environ["MOTOKO_CHANNEL"])
    stranger.sendall(b'{"op": "hello", "study": "s", "run": 999, "attempt": 1}\\n')
    print(json.loads(stranger.makefile("rb").readline())["message"])
    hello = {"op": "hello", "study": "s", "run": int(os.environ["MOTOKO_RUN_ID"]), "attempt": 1, "pid": os.getpid()}
    assert say(json.dumps(hello).encode() + b"\\n")["op"] == "welcome"
    print(say(b"this is not json\\n")["message"])
    print(say(b'{"op": "set", "name": "_p_jar", "value": 1}\\n')["message"])
    print(say(b'{"op": "drop_table"}\\n')["message"])
    sock.sendall(b'{"op": "set", "name": "y", "value": 7}\\n')
    print(say(b'{"op": "flush", "id": 1, "commit": true}\\n'))
    try:
        sock.sendall(b'{"op": "set", "name": "z", "value": "' + b"x" * (2 << 20) + b'"}\\n')
    except OSError:
        pass  # the launcher closed the connection before reading it all
    print(json.loads(reader.readline())["message"])
    print(repr(reader.readline()))
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    launcher = serve_once(workdir)
    out, err = files(db, rid)
    refused, *lines = out.splitlines()
    assert refused == f"launcher {launcher.id} does not execute run s.999 attempt 1"
    assert len(lines) == 6, out + err
    assert lines[0].startswith(f"launcher {launcher.id}: run s.{rid}: unparseable message (Expecting value")
    assert lines[0].endswith("'this is not json'")
    assert lines[1] == f"launcher {launcher.id}: run s.{rid}: run attribute name '_p_jar' is not a public Python name"
    assert lines[2].startswith(f"launcher {launcher.id}: run s.{rid}: unknown message op 'drop_table' (known: call, flush")
    assert lines[3] == "{'op': 'ack', 'id': 1}"
    assert lines[4] == f"launcher {launcher.id}: run s.{rid} sent a message longer than 1048576 bytes; its connection is closed"
    assert lines[5] == "b''"  # and the launcher closed that connection
    run = run_of(db, rid)
    assert run.state == FINISHED and run.y == 7 and run.get("z") is None and run.get("_p_jar") is not None
    assert launcher.channel.stats.errors == 5


def test_a_run_sending_garbage_in_a_loop_is_told_and_logged_a_bounded_number_of_times(workdir, caplog):
    """Every unreadable message gets an answer until MAX_TOLD, then is only counted: a run that
    never reads its answers cannot grow the launcher's buffers, nor flood its log."""
    doit = """
    from motoko import current_run
    run, job = current_run()
    link = run._link
    for _ in range(5000):
        link._sock.sendall(b"not json\\n")
    run.y = 1
    link.flush(commit=True)
    print(len(link.refused), link.refused[0])
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    with caplog.at_level(logging.WARNING, logger="motoko.launch.channel"):
        launcher = serve_once(workdir)
    run = run_of(db, rid)
    assert run.state == FINISHED and run.y == 1, run.error
    told, first = files(db, rid)[0].strip().split(" ", 1)
    assert int(told) == MAX_TOLD and "unparseable message" in first
    assert launcher.channel.stats.errors == 5000
    logged = [r.getMessage() for r in caplog.records if f"run s.{rid}" in r.getMessage()]
    assert len(logged) == MAX_TOLD + 1 and logged[-1].endswith("further errors and refusals are only counted")


def test_values_the_schema_refuses_are_refused_at_the_call(workdir):
    doit = """
    from motoko import current_run
    run, job = current_run()
    for attempt in (lambda: setattr(run, "n", "abc"), lambda: run.set_progress(2.0),
                    lambda: setattr(run, "tags", {1, 2}), lambda: setattr(run, "big", "x" * (2 << 20))):
        try:
            attempt()
        except ValueError as exc:
            print(type(exc).__name__, exc)
    run.n = "4"
    """
    _, db = make_study(workdir, FAST, doit=doit, extra="run: {n: int}\n")
    (rid,) = create_runs(db, x=1)
    serve_once(workdir)
    out, err = files(db, rid)
    assert out.splitlines() == [
        f"ParameterError run s.{rid}: field 'n' expects an integer, got 'abc' (str) (give 'n' an integer)",
        "RunWriteRefused progress must be between 0.0 and 1.0, got 2.0 (pass the finished fraction, e.g. run.set_progress(0.5))",
        f"RunWriteRefused run s.{rid}: tags: a set cannot be sent (use a list) (a run sends numbers, strings, "
        "booleans, None, lists and dicts of them (numpy arrays are fine))",
        f"RunWriteRefused run s.{rid}: big: 2097189 bytes is more than a message may hold (1048576 bytes) "
        "(write large data to a file in the run directory and store its name)",
    ], err
    run = run_of(db, rid)
    assert run.state == FINISHED and run.n == 4 and run.get("tags") is None and run.get("big") is None


def test_a_write_the_database_refuses_is_told_at_commit_and_at_exit(workdir):
    doit = """
    from motoko import current_run
    run, job = current_run()
    run.y = 1
    run.state = "CREATED"   # RUNNING -> CREATED is no transition
    try:
        run.commit()
    except ValueError as exc:
        print(type(exc).__name__, exc)
    run.state = "LAUNCHED"  # told at exit
    run.z = 2
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    serve_once(workdir)
    out, err = files(db, rid)
    assert out.startswith(f"RunWriteRefused run s.{rid}: run.state = 'CREATED' refused: "), out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"motoko: run s.{rid}: 1 write(s) refused: run s.{rid}: run.state = 'LAUNCHED' refused: ")
    run = run_of(db, rid)
    assert run.state == FINISHED and (run.y, run.z) == (1, 2)


def test_a_flooding_run_is_slowed_down_and_loses_nothing(workdir):
    doit = """
    from motoko import current_run
    run, job = current_run()
    for step in range(3000):
        run.push_quantity(step, step=step, name="q")
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    launcher = build_launcher(load_config(workdir), once=True)
    launcher.channel.max_queued = 100
    try:
        launcher.serve()
    finally:
        launcher.db.close()
    run = run_of(db, rid)
    assert run.state == FINISHED, run.error
    assert run.get_quantity("q")["q"].tolist() == list(range(3000))
    stats = launcher.channel.stats
    assert stats.peak_queued == 100 and stats.committed == stats.writes == 3000


def test_a_long_run_keeps_a_bounded_number_of_writes_for_its_launcher(workdir):
    """A run keeps its writes until the launcher confirms them committed (to save them itself
    should the launcher go): a run that writes its progress at every step, and never commits,
    asks for a commit every CONFIRM_EVERY writes rather than keep them all to its end."""
    doit = """
    from motoko import current_run
    run, job = current_run()
    kept = 0
    for step in range(3500):
        run.set_progress(step / 3500)
        kept = max(kept, len(run._link.unconfirmed))
    print(kept, len(run._link.unconfirmed))
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    launcher = serve_once(workdir)
    run = run_of(db, rid)
    assert run.state == FINISHED, run.error
    assert run.progress == 3499 / 3500
    kept, left = (int(n) for n in files(db, rid)[0].split())
    assert kept == CONFIRM_EVERY - 1 and left == 3500 - 3 * CONFIRM_EVERY  # asked as the 1,000th was sent
    assert launcher.channel.stats.committed == launcher.channel.stats.writes == 3500


def test_a_run_that_never_reads_its_answers_is_read_no_further(workdir):
    """Each flush is acknowledged; a run sending them without reading the answers would make the
    launcher keep every answer in memory. Past 64 KiB unread it stops reading that run, whose
    sends then block, and goes on once the run reads."""
    doit = """
    from motoko import current_run
    run, job = current_run()
    sock = run._link._sock
    sock.settimeout(5)
    try:
        sock.sendall(b'{"op": "flush", "id": 0, "commit": false}\\n' * 200_000)  # 8.4 MB
        print("all sent")
    except TimeoutError:
        print("blocked")
    sock.settimeout(1)
    answers = b""
    try:
        while chunk := sock.recv(1 << 20):
            answers += chunk
    except TimeoutError:
        pass
    print(answers.count(b"ack") < 200_000)
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    serve_once(workdir)
    run = run_of(db, rid)
    out, err = files(db, rid)
    assert run.state == FINISHED, run.error
    assert out.split() == ["blocked", "True"], out + err


def test_stop_requests_are_pushed_to_the_run(workdir):
    doit = """
    import signal, time
    from motoko import current_run
    signal.signal(signal.SIGTERM, lambda *_: None)  # answer the stop request, not the signal
    run, job = current_run()
    open("started", "w").close()
    deadline = time.monotonic() + 30
    while not run.should_stop() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("stop seen", run.should_stop())
    """
    cfg, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    background = Background(cfg, once=True)
    run = run_of(db, rid)
    deadline = time.monotonic() + 60
    while run.state != RUNNING or run.run_path is None or not (Path(run.run_path) / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
        run = run_of(db, rid)
    assert run.cancel() is False  # a running run is asked to stop
    background.join(60)
    out, err = files(db, rid)
    assert out == "stop seen True\n", err
    assert run_of(db, rid).state == CANCELLED


def _requeue_and_cancel(db: StudyDB, rid: int) -> None:
    """What another launcher and a user do to a run whose launcher looked dead."""

    def change() -> None:
        study = db.study("s")
        run = study.runs[rid]
        study.transition(run, LOST, error="launcher stopped heart-beating")
        study.requeue(run, "retried")
        study.cancel(run)

    db.transact(change, fresh=True)


def test_a_superseded_attempt_is_refused_and_told_to_stop(workdir):
    doit = """
    import os, time
    from motoko import current_run
    from motoko.errors import RunSuperseded
    run, job = current_run()
    run.y = "before"
    run.commit()
    open("started", "w").close()
    while not os.path.exists("go"):
        time.sleep(0.01)
    run.y = "after"
    try:
        run.commit()
    except RunSuperseded as exc:
        print(exc)
    print(run.should_stop())
    """
    cfg, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    background = Background(cfg, once=True)
    run = run_of(db, rid)
    deadline = time.monotonic() + 60
    while run.run_path is None or not (Path(run.run_path) / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
        run = run_of(db, rid)
    _requeue_and_cancel(db, rid)
    (Path(run.run_path) / "go").touch()
    background.join(60)
    out, err = files(db, rid)
    message = f"run s.{rid} is now attempt 2, this process ran attempt 1: its changes are not saved"
    assert out.splitlines() == [f"{message} (stop this process)", "True"], err
    assert err.strip() == f"motoko: {message}"
    run = run_of(db, rid)
    assert (run.y, run.attempt, run.state) == ("before", 2, CANCELLED)


def test_two_processes_cannot_speak_for_one_run(workdir):
    doit = """
    import subprocess, sys
    from motoko import current_run
    run, job = current_run()
    child = subprocess.run([sys.executable, "-c", "from motoko import current_run; current_run()"],
                           capture_output=True, text=True)
    print(child.stderr.strip().splitlines()[-1])
    run.y = 1
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    launcher = serve_once(workdir)
    out, err = files(db, rid)
    assert out.startswith(
        f"motoko.errors.ChannelError: run s.{rid} already has a process speaking for it on launcher "
        f"{launcher.id}'s channel (pid "
    ), out + err
    assert out.strip().endswith("was refused (one process speaks for a run; open other processes' results as files)")
    assert run_of(db, rid).y == 1


def test_a_run_outlives_its_killed_launcher_and_saves_its_writes_itself(workdir):
    """Kill -9 of the launcher mid-run: the run keeps working, is told to stop, and its later
    writes, which no launcher will commit, are saved through its own connection at exit
    (fenced by its attempt), so whoever adopts the run finds its results.
    """
    doit = """
    import os, time
    from motoko import current_run
    run, job = current_run()
    run.y = 1
    run.commit()
    open("started", "w").close()
    while not os.path.exists("go"):
        time.sleep(0.01)
    run.z = 2
    kept = 0
    for step in range(2500):  # past CONFIRM_EVERY: saved as it goes, not all kept to the end
        run.push_quantity(float(step), step=step, name="q")
        kept = max(kept, len(run._link.unconfirmed))
    print("should stop:", run.should_stop(), kept)
    """
    cfg, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    log = (workdir / "launcher.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "motoko.cli.main", "launcher", "start", "--once"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    pid = None
    try:
        run = run_of(db, rid)
        deadline = time.monotonic() + 60
        while run.run_path is None or not (Path(run.run_path) / "started").exists():
            assert time.monotonic() < deadline and launcher.poll() is None, (workdir / "launcher.log").read_text()
            time.sleep(0.05)
            run = run_of(db, rid)
        pid = int(run.executor_id)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        (Path(run.run_path) / "go").touch()
        def status() -> int | None:  # recorded by the run host once the run ended
            return attempts.recorded_status(Path(run.run_path), rid, run.attempt, run.launcher)

        while status() is None:
            assert time.monotonic() < deadline + 30, "the run did not end"
            time.sleep(0.05)
        out, err = files(db, rid)
        told, kept = out.rsplit(" ", 1)
        assert told == "should stop: True" and int(kept) <= CONFIRM_EVERY, out
        assert status() == 0 and "not saved" not in err, err
        run = run_of(db, rid)
        assert run.y == 1 and run.get("z") == 2 and run.list_quantities() == ["q"]
        assert run.get_quantity("q")["q"].tolist() == [float(step) for step in range(2500)]
        stale = list(Path(tempfile.gettempdir()).glob(f"{CHANNEL_PREFIX}{launcher.pid}-*"))
        assert len(stale) == 1, "a launcher killed -9 cannot remove its channel directory"
        serve(cfg, once=True)  # the next launcher removes it as it starts its own channel
        assert not stale[0].exists()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # it ended by itself (or is an unreaped zombie)
        log.close()


def test_without_a_reachable_channel_the_run_uses_the_database(workdir):
    _, db = make_study(workdir, FAST)
    (rid,) = create_runs(db, x=5)
    db.transact(lambda: db.study("s").transition(db.study("s").runs[rid], "LAUNCHED"))
    env = {**os.environ, "MOTOKO_DB": str(db.address), "MOTOKO_STUDY": "s", "MOTOKO_RUN_ID": str(rid),
           "MOTOKO_ATTEMPT": "1", "MOTOKO_CHANNEL": str(workdir / "no-launcher.sock")}
    code = "from motoko import current_run\nrun, job = current_run()\nrun.y = job.x\nprint(type(run).__name__)\n"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "RunHandle\n", "")
    assert run_of(db, rid).y == 5


def test_a_launcher_that_dies_before_answering_leaves_the_run_on_the_database(workdir):
    """A launcher killed between accepting a run's hello and answering it: the run falls back, not fails."""
    _, db = make_study(workdir, FAST)
    (rid,) = create_runs(db, x=7)
    db.transact(lambda: db.study("s").transition(db.study("s").runs[rid], "LAUNCHED"))
    path = workdir / "dying-launcher.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    env = {**os.environ, "MOTOKO_DB": str(db.address), "MOTOKO_STUDY": "s", "MOTOKO_RUN_ID": str(rid),
           "MOTOKO_ATTEMPT": "1", "MOTOKO_CHANNEL": str(path)}
    code = "from motoko import current_run\nrun, job = current_run()\nrun.y = job.x\nprint(type(run).__name__)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        listener.settimeout(60)
        conn, _ = listener.accept()
        conn.recv(4096)  # the hello arrives; the launcher dies without a word
        conn.close()
        listener.close()
        out, err = proc.communicate(timeout=60)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out, err) == (0, "RunHandle\n", "")
    db.abort()
    assert run_of(db, rid).y == 7


def test_the_run_side_api_imports_nothing_heavy():
    code = (
        "import sys\nfrom motoko import current_run, getRunFromScript\nimport motoko.launch.runtime\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {AVOIDED!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")


def test_channel_error_messages_say_what_and_how():
    assert str(ChannelError("run s.1 already has a process", hint="one process speaks for a run")) == (
        "run s.1 already has a process (one process speaks for a run)"
    )
    error = RunWriteRefused("progress must be between 0.0 and 1.0, got 2", hint="pass the finished fraction")
    assert isinstance(error, ValueError) and str(error).endswith("(pass the finished fraction)")
    assert isinstance(ChannelError("x"), ConnectionError)


@pytest.mark.parametrize("state", [FAILED])
def test_a_run_may_still_fail_itself_through_the_channel(workdir, state):
    doit = """
    from motoko import current_run
    run, job = current_run()
    run.fail("bad input")
    """
    _, db = make_study(workdir, FAST, doit=doit)
    (rid,) = create_runs(db, x=1)
    serve_once(workdir)
    run = run_of(db, rid)
    assert (run.state, run.error, run.exit_code) == (state, "bad input", 0)
    assert files(db, rid) == ("", "")


def test_only_channel_directories_of_gone_launchers_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "30"])
    try:
        def channel(pid: object, listening: bool = False) -> tuple[Path, socket.socket | None]:
            directory = tmp_path / f"{CHANNEL_PREFIX}{pid}-x{len(list(tmp_path.iterdir()))}"
            directory.mkdir(mode=0o700)
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(directory / "runs.sock"))  # the socket file stays when closed: refused
            if listening:
                server.listen()
                return directory, server
            server.close()
            return directory, None

        gone, _ = channel(dead.pid)
        running, _ = channel(alive.pid)
        elsewhere, server = channel(dead.pid, listening=True)  # e.g. a reused pid in another namespace
        older = tmp_path / f"{CHANNEL_PREFIX}abcd1234"  # named before launchers put their pid in it
        older.mkdir()
        assert sweep_stale_channels(str(tmp_path)) == 1
        assert not gone.exists() and running.exists() and elsewhere.exists() and older.exists()
        assert server is not None
        server.close()
        assert sweep_stale_channels(str(tmp_path)) == 1 and not elsewhere.exists()
    finally:
        alive.kill()
        alive.wait()


def test_a_run_waiting_at_exit_for_its_writes_commit_ends_the_launchers_hold(workdir, monkeypatch):
    """A launcher with claimed runs to start holds outcomes back to settle many per commit.

    Each Python run waits at exit until its last writes are committed. The
    hold ignored that: every run's exit waited the hold out (0.3 s), and
    Python runs through the channel ran at 0.13 of bare ones. With a hold
    of 10 minutes, the runs below end only if a run waiting ends the hold.
    """
    import motoko.launch.launcher as launcher_module

    monkeypatch.setattr(launcher_module, "HOLD_WINDOW", 600.0)
    doit = """
    from motoko import current_run
    run, job = current_run()
    run.push_quantity(2.0 * job.x, step=0, name="double")
    """
    _, db = make_study(workdir, FAST, doit=doit)
    ids = create_runs(db, x=list(range(8)))  # a queue deeper than the 2 slots: the launcher holds
    report = Background(load_config(workdir), once=True, max_parallel=2).join(60)
    assert (report.executed, report.finished) == (8, 8)
    for rid in ids:
        run = run_of(db, rid)
        assert run.state == FINISHED and list(run.get_quantity("double")["double"]) == [2.0 * run.job["x"]]

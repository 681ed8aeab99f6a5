"""Issue 17, the database server: only our own server is ever signalled; TCP is never open.

Each test feeds the hostile condition a red team found (a reused pid in a stale
pid file, a loopback TCP listener without TLS, a host name that only looks
like loopback) through the real command line, and checks that nothing else is
hurt and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.study.server import (
    STATE_DIR,
    default_address,
    is_loopback,
    read_settings,
    server_status,
    stop_server,
)

DOIT = "from motoko import current_run\nrun, job = current_run()\n"


@pytest.fixture
def bystander():
    """An unrelated process of the same user (what a reused pid points at)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _workflow(root: Path) -> None:
    write_study(root, "s", "{x: int}", DOIT)
    write_config(root, ["s"])


def test_a_stale_pid_file_naming_another_process_never_gets_it_killed(workdir, bystander):
    """A pid file left by a killed server whose pid now belongs to someone else (item 1)."""
    _workflow(workdir)
    state = workdir / STATE_DIR
    state.mkdir(mode=0o700)
    (state / "zeo.pid").write_text(f"{bystander.pid}\n")
    assert not server_status(workdir).running
    # `motoko info` starts the server (cleaning the stale pid file): the bystander lives.
    done = motoko("info", cwd=workdir)
    assert done.returncode == 0, done.stderr
    time.sleep(0.3)
    assert bystander.poll() is None, "motoko info signalled an unrelated process"
    assert server_status(workdir).running
    assert stop_server(workdir) is True
    # The pid file names the bystander again: `motoko server stop` leaves it alone.
    (state / "zeo.pid").write_text(f"{bystander.pid}\n")
    done = motoko("server", "stop", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "server was not running"
    time.sleep(0.3)
    assert bystander.poll() is None, "motoko server stop signalled an unrelated process"
    assert not (state / "zeo.pid").exists(), "the stale pid file is removed"


def test_stale_records_of_workflows_and_launchers_never_get_another_process_signalled(workdir, bystander):
    """Records of a detached workflow and a launcher daemon whose pids were reused (item 1)."""
    _workflow(workdir)
    long_ago = time.time() - 3600  # the recorded process started then; the bystander did not
    workflows = workdir / STATE_DIR / "workflows"
    workflows.mkdir(parents=True)
    record = {"pid": bystander.pid, "file": "w.py", "log": str(workflows / "w.log"), "started": long_ago, "exit_code": None}
    (workflows / "w.json").write_text(json.dumps(record))
    launchers = workdir / STATE_DIR / "launchers"
    launchers.mkdir()
    daemon = {"pid": bystander.pid, "study": None, "executor": "local", "started": long_ago, "log": ""}
    (launchers / f"{bystander.pid}.json").write_text(json.dumps(daemon))
    done = motoko("run", "stop", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "no detached workflow is running" in done.stdout
    done = motoko("launcher", "stop", cwd=workdir)
    assert done.returncode == 0, done.stderr
    time.sleep(0.3)
    assert bystander.poll() is None, "a reused pid was signalled"


def test_a_recorded_process_is_recognised_by_its_start_time(bystander):
    from motoko.launch.processes import is_recorded_process, started_at

    start = started_at(bystander.pid)
    assert start is not None and abs(start - time.time()) < 60
    assert is_recorded_process(bystander.pid, time.time())
    assert not is_recorded_process(bystander.pid, time.time() - 3600)
    assert not is_recorded_process(2**22 + 7, time.time())  # no such pid


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_any_tcp_listener_without_certificates_gets_the_users_own_tls(workdir, host):
    """A loopback TCP server is open to every local user: it is never plain unless --insecure (item 2).

    Without certificate files the user's own CA and certificates are made
    (issue 16), so the listener requires client certificates all the same.
    """
    _workflow(workdir)
    port = _free_port()
    done = motoko("server", "start", "--listen", f"{host}:{port}", cwd=workdir)
    try:
        assert done.returncode == 0, done.stderr
        assert "(TLS, client certificates required)" in done.stdout
        settings = read_settings(workdir)
        assert settings["listen"] == f"{host}:{port}" and settings["tls"] and settings["client_tls"]
        # a client without the certificate is refused
        import socket
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            context.wrap_socket(raw) as tls,
        ):
            tls.sendall(b"x" * 64)
            tls.recv(1)
            tls.sendall(b"x" * 64)
            tls.recv(1)
    finally:
        motoko("server", "stop", cwd=workdir)


def test_insecure_loopback_is_allowed_explicitly(workdir):
    _workflow(workdir)
    port = _free_port()
    done = motoko("server", "start", "--listen", f"127.0.0.1:{port}", "--insecure", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert default_address(workdir).port == port
    assert motoko("info", cwd=workdir).returncode == 0


def test_a_listen_that_cannot_start_is_not_recorded(workdir):
    """A --listen the server cannot bind leaves the workflow's address as it was (item 2)."""
    _workflow(workdir)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: nothing answers, nobody else may bind
        port = taken.getsockname()[1]
        done = motoko("server", "start", "--listen", f"127.0.0.1:{port}", "--insecure", cwd=workdir, timeout=60)
    assert done.returncode == 2, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "did not start" in done.stderr
    assert not (workdir / STATE_DIR / "server.json").exists()
    assert default_address(workdir).path is not None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.3.4.5", True), ("localhost", True), ("::1", True), ("[::1]", True),
     ("LOCALHOST", True), ("localhost.evil.com", False), ("127.0.0.1.evil.com", False), ("0.0.0.0", False),
     ("::", False), ("10.0.0.1", False), ("evil.com", False), ("", False), ("::ffff:127.0.0.1", True)],
)
def test_loopback_is_parsed_not_matched_by_prefix(host, loopback):
    assert is_loopback(host) is loopback

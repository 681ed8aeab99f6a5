"""TCP without set-up: `motoko server start --listen` makes the user's own CA and certificates."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.errors import ConfigError, ServerError
from motoko.study.database import StudyDB
from motoko.study.server import stop_server


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private MOTOKO_HOME for this test (also seen by its subprocesses)."""
    path = tmp_path / "home"
    monkeypatch.setenv("MOTOKO_HOME", str(path))
    for name in ("MOTOKO_TLS_CA", "MOTOKO_TLS_CERT", "MOTOKO_TLS_KEY", "MOTOKO_DB"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_listen_makes_private_certificates_that_every_process_of_the_user_finds(workdir: Path, home: Path, tmp_path: Path):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    port = _port()
    try:
        started = motoko("server", "start", "--listen", f"127.0.0.1:{port}", cwd=workdir)
        assert started.returncode == 0, started.stderr
        assert "TLS, client certificates required" in started.stdout
        tls = home / "tls"
        assert stat.S_IMODE(tls.stat().st_mode) == 0o700 and stat.S_IMODE(home.stat().st_mode) == 0o700
        for name in ("ca.pem", "ca.key", "client.pem", "client.key", "server-127.0.0.1.pem", "server-127.0.0.1.key"):
            assert stat.S_IMODE((tls / name).stat().st_mode) == 0o600, name
        # Idempotent: a second start keeps the same files and settings.
        before = (tls / "client.pem").read_bytes()
        again = motoko("server", "start", "--listen", f"127.0.0.1:{port}", cwd=workdir)
        assert again.returncode == 0, again.stderr
        assert (tls / "client.pem").read_bytes() == before
        # A process elsewhere (another checkout, a pilot) finds the certificates by itself.
        db = StudyDB(f"zeo://127.0.0.1:{port}")
        assert db.address.tls is not None and db.address.tls.cert == str(tls / "client.pem")
        assert db.studies() == [] and db.conn.root()["motoko_version"] >= 2
        db.close()
        # Another user (no certificates of this CA) is refused, and told why.
        os.environ["MOTOKO_HOME"] = str(tmp_path / "stranger")
        try:
            with pytest.raises(ServerError, match="requires TLS with a client certificate"):
                StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=1)
        finally:
            os.environ["MOTOKO_HOME"] = str(home)
    finally:
        stop_server(workdir)


def test_unreadable_or_partial_certificates_are_one_line_errors(workdir: Path, home: Path):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    tls = home / "tls"
    tls.mkdir(parents=True)
    (tls / "client.pem").write_text("x")
    with pytest.raises(ConfigError, match=r"the user's TLS ca file .*ca.pem does not exist"):
        StudyDB(f"zeo://127.0.0.1:{_port()}", wait_timeout=1)
    (tls / "ca.key").write_text("not a key")
    result = motoko("server", "start", "--listen", f"127.0.0.1:{_port()}", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.startswith("motoko: error: cannot read the TLS key") and result.stderr.count("\n") == 1
    assert not (workdir / ".motoko" / "server.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_certificate_file(tmp_path: Path):
    from motoko.study.tls import TLSFiles

    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "c.key").chmod(0)
    with pytest.raises(ConfigError, match="key file .* is not readable"):
        TLSFiles(str(tmp_path / "ca.pem"), str(tmp_path / "c.pem"), str(tmp_path / "c.key")).check()

"""ZEO over TCP with TLS client certificates: real certificates, real refusals."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study

from motoko.errors import ServerError
from motoko.study.database import StudyDB
from motoko.study.server import default_address, stop_server


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(directory: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def _signed(directory: Path, ca: str, name: str, san: str | None = None) -> None:
    # ZEO verifies with VERIFY_X509_STRICT: certificates need proper extensions.
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    usage = "serverAuth" if san else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
        "subjectKeyIdentifier=hash",
        "authorityKeyIdentifier=keyid,issuer",
    ]
    if san:
        lines.append(f"subjectAltName={san}")
    (directory / f"{name}.ext").write_text("\n".join(lines) + "\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=directory)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    _ca(directory, "ca")
    _ca(directory, "rogue-ca")
    _signed(directory, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    _signed(directory, "ca", "client")
    _signed(directory, "rogue-ca", "intruder")
    return directory


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_server(workdir: Path, certs: Path):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    port = _port()
    result = motoko(
        "server", "start", "--listen", f"127.0.0.1:{port}",
        "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"), "--tls-ca", str(certs / "ca.pem"),
        "--client-cert", str(certs / "client.pem"), "--client-key", str(certs / "client.key"),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "TLS, client certificates required" in result.stdout
    yield workdir, port
    stop_server(workdir)


def _env(monkeypatch: pytest.MonkeyPatch, certs: Path, ca: str, cert: str) -> None:
    monkeypatch.setenv("MOTOKO_TLS_CA", str(certs / f"{ca}.pem"))
    monkeypatch.setenv("MOTOKO_TLS_CERT", str(certs / f"{cert}.pem"))
    monkeypatch.setenv("MOTOKO_TLS_KEY", str(certs / f"{cert}.key"))


def test_client_with_a_valid_certificate_reads_and_writes(tls_server, certs, monkeypatch):
    workdir, port = tls_server
    _env(monkeypatch, certs, "ca", "client")
    db = StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=5)
    db.transact(lambda: db.conn.root().__setitem__("probe", 42))
    db.close()
    # the workflow's own processes use the recorded client certificate
    monkeypatch.delenv("MOTOKO_TLS_CA"), monkeypatch.delenv("MOTOKO_TLS_CERT"), monkeypatch.delenv("MOTOKO_TLS_KEY")
    own = StudyDB(default_address(workdir), wait_timeout=5)
    assert own.conn.root()["probe"] == 42
    own.close()
    info = motoko("info", cwd=workdir)
    assert info.returncode == 0 and f"zeo://127.0.0.1:{port}" in info.stdout


def test_client_without_certificate_is_refused_with_a_reason(tls_server, monkeypatch, tmp_path):
    _, port = tls_server
    for var in ("MOTOKO_TLS_CA", "MOTOKO_TLS_CERT", "MOTOKO_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MOTOKO_HOME", str(tmp_path / "no-certificates"))  # not the user's own either
    with pytest.raises(ServerError, match="requires TLS with a client certificate"):
        StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=1)


def test_client_with_an_untrusted_certificate_is_refused_with_a_reason(tls_server, certs, monkeypatch):
    _, port = tls_server
    _env(monkeypatch, certs, "ca", "intruder")
    with pytest.raises(ServerError, match="refused our client certificate"):
        StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=1)


def test_client_that_does_not_trust_the_server_says_so(tls_server, certs, monkeypatch):
    _, port = tls_server
    _env(monkeypatch, certs, "rogue-ca", "intruder")
    with pytest.raises(ServerError, match="server's certificate was rejected"):
        StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=1)


def test_wrong_host_name_is_refused(tls_server, certs, monkeypatch):
    _, port = tls_server
    _env(monkeypatch, certs, "ca", "client")
    from motoko.study.tls import TLSFiles, client_context

    files = TLSFiles(str(certs / "ca.pem"), str(certs / "client.pem"), str(certs / "client.key"))
    with pytest.raises(ServerError, match="certificate was rejected"):
        StudyDB(f"zeo://127.0.0.1:{port}", wait_timeout=1, ssl=client_context(files), ssl_server_hostname="elsewhere.example")


def test_partial_tls_options_are_refused(workdir):
    write_study(workdir, "s", "{x: int}", "pass\n")
    write_config(workdir, ["s"])
    partial = motoko("server", "start", "--listen", f"0.0.0.0:{_port()}", "--tls-cert", __file__, cwd=workdir)
    assert partial.returncode == 2 and "needs all of --tls-cert, --tls-key and --tls-ca" in partial.stderr
    assert not (workdir / ".motoko" / "server.json").exists()


def test_incomplete_tls_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MOTOKO_TLS_CA", "/x.pem")
    monkeypatch.delenv("MOTOKO_TLS_CERT", raising=False)
    monkeypatch.delenv("MOTOKO_TLS_KEY", raising=False)
    from motoko.errors import ConfigError
    from motoko.study.server import parse_address

    with pytest.raises(ConfigError, match="MOTOKO_TLS_CERT, MOTOKO_TLS_KEY not set"):
        parse_address("zeo://127.0.0.1:8100")

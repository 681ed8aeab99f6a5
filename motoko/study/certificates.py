"""Certificates made for the user: TCP with TLS and client certificates, no set-up.

``motoko server start --listen HOST:PORT`` without certificate files creates,
once per user, a private certificate authority and a client certificate, and
per host a server certificate, in ``~/.motoko/tls`` (``$MOTOKO_HOME/tls``
when set), a directory only the user can read (0700, keys 0600). The server
accepts only clients holding a certificate of that CA, so only processes of
the same user (who can read the directory: on a cluster, the shared home)
get in. Clients find the files there by themselves (see
:func:`client_files`): pilots and launchers on other nodes need no
configuration.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import getpass
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from motoko.errors import ConfigError
from motoko.study.tls import TLSFiles

#: Years the certificates stay valid (they never leave the user's directory).
VALID_YEARS = 10


def user_dir() -> Path:
    """The user's private TLS directory (created 0700)."""
    base = Path(os.environ.get("MOTOKO_HOME") or Path.home() / ".motoko")
    path = base / "tls"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(base, 0o700)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the private TLS directory {path}: {exc.strerror}",
            hint="set MOTOKO_HOME to a directory of yours, or give certificate files (--tls-cert ...)",
        ) from None
    return path


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise creation between processes (two servers starting at once)."""
    with open(directory / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(host: str) -> tuple[TLSFiles, TLSFiles]:
    """The (server, client) files for a server listening on ``host``, made when missing.

    Idempotent: existing files are kept, so clients already holding the
    client certificate keep working.

    Raises:
        ConfigError: when the directory or a file cannot be written or read.
    """
    directory = user_dir()
    with _locked(directory):
        ca_key = _key(directory / "ca.key")
        ca_cert = directory / "ca.pem"
        if not ca_cert.is_file():
            _write(ca_cert, _ca_certificate(ca_key))
        authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        name = "server-" + "".join(c if c.isalnum() or c in ".-" else "_" for c in host.strip("[]"))
        server = _issued(directory, name, authority, ca_key, _server_names(host))
        client = _issued(directory, "client", authority, ca_key, None)
    return TLSFiles(str(ca_cert), str(server[0]), str(server[1])), TLSFiles(str(ca_cert), str(client[0]), str(client[1]))


def client_files() -> TLSFiles | None:
    """The user's client certificate, if one was ever made (None otherwise).

    Raises:
        ConfigError: when some of the files exist but not all, or cannot be read.
    """
    base = Path(os.environ.get("MOTOKO_HOME") or Path.home() / ".motoko") / "tls"
    files = TLSFiles(str(base / "ca.pem"), str(base / "client.pem"), str(base / "client.key"))
    present = [Path(p).is_file() for p in (files.ca, files.cert, files.key)]
    if not any(present):
        return None
    files.check("the user's TLS")
    return files


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.is_file():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the TLS key {path}: {exc}", hint="remove it to have it made anew") from None
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    _write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key


def _builder(subject: str, issuer: x509.Name, public: object) -> x509.CertificateBuilder:
    start = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + _dt.timedelta(days=365 * VALID_YEARS))
    )


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"motoko CA of {_user()}")])
    public = key.public_key()
    cert = (
        _builder(f"motoko CA of {_user()}", name, public)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _issued(
    directory: Path, name: str, authority: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName] | None
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = _key(key_path)
    public = key.public_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(f"motoko {name} of {_user()}", authority.subject, public)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write(cert_path, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _server_names(host: str) -> list[x509.GeneralName]:
    """Every name a client may use to reach a server listening on ``host``."""
    texts = {"localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()}
    bare = host.strip("[]")
    if bare not in ("0.0.0.0", "::"):
        texts.add(bare)
    with contextlib.suppress(OSError):
        texts.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    names: list[x509.GeneralName] = []
    for text in sorted(texts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            names.append(x509.DNSName(text))
    return names


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


"""TLS for ZEO over TCP: certificates, contexts and a clear refusal message.

A server bound to anything but loopback must use TLS with client
certificates (ZEO's ``<ssl>`` with ``authenticate``): only holders of a
certificate signed by the given CA get in. Clients find their files in
``MOTOKO_TLS_CA``, ``MOTOKO_TLS_CERT`` and ``MOTOKO_TLS_KEY`` (launchers pass
their environment on to runs), or in the workflow's ``.motoko/server.json``.

ZEO tells a refused client nothing (it times out); :func:`probe` performs the
TLS handshake itself so that the error can say *why*: no certificate, an
untrusted CA, a wrong host name, or plain TCP to a TLS server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from motoko.errors import ConfigError

ENV = {"ca": "MOTOKO_TLS_CA", "cert": "MOTOKO_TLS_CERT", "key": "MOTOKO_TLS_KEY"}


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a CA certificate and of this side's certificate and key."""

    ca: str
    cert: str
    key: str

    def check(self, what: str = "TLS") -> None:
        """Raise ConfigError naming any file that does not exist or cannot be read."""
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if not Path(path).is_file():
                raise ConfigError(f"{what} {name} file {path} does not exist", hint="give existing PEM files")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{what} {name} file {path} is not readable", hint="check its owner and permissions")

    def to_dict(self) -> dict[str, str]:
        """Plain data for server.json."""
        return {"ca": self.ca, "cert": self.cert, "key": self.key}


def from_env() -> TLSFiles | None:
    """Client TLS files from the environment, or None when none is set.

    Raises:
        ConfigError: when only some of the three variables are set.
    """
    values = {name: os.environ.get(var) for name, var in ENV.items()}
    if not any(values.values()):
        return None
    missing = [ENV[name] for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"incomplete TLS settings: {', '.join(missing)} not set", hint="set all of " + ", ".join(ENV.values()))
    return TLSFiles(values["ca"] or "", values["cert"] or "", values["key"] or "")


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """A client context that verifies the server against the CA and presents our certificate."""
    files.check("client TLS")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    context.load_cert_chain(files.cert, files.key)
    return context


def server_block(files: TLSFiles) -> str:
    """The ``<ssl>`` section of zeo.conf (client certificates required)."""
    files.check("server TLS")
    return f"  <ssl>\n    certificate {files.cert}\n    key {files.key}\n    authenticate {files.ca}\n  </ssl>\n"


def probe(host: str, port: int, context: ssl.SSLContext | None, server_hostname: str | None, timeout: float = 3.0) -> str | None:
    """Try the TLS handshake a ZEO client would make; return why it fails, or None.

    Without a context, checks whether the server speaks TLS (then plain TCP
    cannot work and the reason says so).
    """
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    with raw:
        if context is None:
            return _plain_to_tls(raw)
        try:
            with context.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
                # With TLS 1.3 the server judges our certificate after the
                # handshake: a ZEO server that accepts us speaks first, one
                # that refuses us sends an alert or hangs up.
                tls.settimeout(timeout)
                try:
                    if not tls.recv(1):
                        return "the server refused our client certificate (it closed the connection)"
                except TimeoutError:
                    pass
        except ssl.SSLCertVerificationError as exc:
            return f"the server's certificate was rejected: {exc.verify_message}"
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if "CERTIFICATE_REQUIRED" in reason or "UNKNOWN_CA" in reason or "BAD_CERTIFICATE" in reason:
                return f"the server refused our client certificate ({reason})"
            return f"TLS handshake failed ({reason})"
        except OSError as exc:
            return f"the connection failed during the TLS handshake ({exc})"
    return None


def _plain_to_tls(raw: socket.socket) -> str | None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(raw) as tls, contextlib.suppress(TimeoutError, ssl.SSLError):
            tls.settimeout(0.3)
            tls.recv(1)
    except ssl.SSLError as exc:
        if "CERTIFICATE_REQUIRED" in (exc.reason or ""):
            return "the server requires TLS with a client certificate"
        return None
    except OSError:
        return None
    return "the server requires TLS with a client certificate"

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
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from motoko.errors import ConfigError
from motoko.study.tls import TLSFiles


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
    # cryptography takes a while to import: only a server start that makes
    # certificates pays for it, not every process that connects.
    from motoko.study import authority

    directory = user_dir()
    with _locked(directory):
        return authority.make(directory, host)


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

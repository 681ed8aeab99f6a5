"""ZEO server addresses and life cycle.

Addresses are written ``zeo://PATH`` (a unix socket; relative paths are taken
from the workflow directory) or ``zeo://HOST:PORT`` (TCP).

By default every workflow directory has its own server on a unix socket under
``.motoko/``, started detached the first time anything needs the database
(:func:`ensure_server`), so that a fresh checkout needs no set-up step. The
directory and the database files are private to the user (0700 / 0600).
Stale pid and socket files left by a killed server are detected and removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motoko.errors import AddressError, ConfigError, ServerError
from motoko.study import certificates
from motoko.study.tls import TLSFiles, from_env, probe, server_block

log = logging.getLogger(__name__)

STATE_DIR = ".motoko"
_TCP = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(?P<port>\d+)$")
# Unix socket paths are limited to 108 bytes by the kernel (sun_path).
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Address:
    """Where a ZEO server listens.

    Attributes:
        path: The unix socket path, for ``zeo://PATH`` addresses.
        host: The host, for ``zeo://HOST:PORT`` addresses.
        port: The TCP port, for ``zeo://HOST:PORT`` addresses.
    """

    path: str | None = None
    host: str | None = None
    port: int | None = None
    tls: TLSFiles | None = field(default=None, compare=False)

    @property
    def is_tcp(self) -> bool:
        """True for a TCP address."""
        return self.host is not None

    def zeo(self) -> str | tuple[str, int]:
        """Return the address in the form ZEO's client and server take."""
        if self.host is not None and self.port is not None:
            return (self.host.strip("[]"), self.port)
        assert self.path is not None
        return self.path

    def __str__(self) -> str:
        if self.host is not None:
            return f"zeo://{self.host}:{self.port}"
        return f"zeo://{self.path}"


def parse_address(text: str, base: Path | None = None) -> Address:
    """Parse ``zeo://PATH`` or ``zeo://HOST:PORT``.

    Args:
        text: The address.
        base: Directory that relative socket paths are relative to.

    Raises:
        AddressError: for anything else, saying which forms are accepted.
    """
    raw = str(text).strip()
    hint = "write zeo://HOST:PORT (TCP) or zeo://PATH (a unix socket), e.g. zeo://127.0.0.1:8100"
    if not raw.startswith("zeo://"):
        raise AddressError(f"malformed database address {raw!r}: it must start with zeo://", hint=hint)
    rest = raw[len("zeo://") :]
    if not rest or rest.isspace():
        raise AddressError(f"malformed database address {raw!r}: nothing after zeo://", hint=hint)
    match = _TCP.match(rest)
    if match:
        port = int(match.group("port"))
        if not 0 < port < 65536:
            raise AddressError(f"malformed database address {raw!r}: port {port} is out of range", hint="use a port between 1 and 65535")
        return Address(host=match.group("host"), port=port, tls=from_env())
    if ":" in rest and not rest.startswith(("/", ".")):
        raise AddressError(f"malformed database address {raw!r}: the port is not a number", hint=hint)
    path = Path(rest)
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Address(path=str(path))


def with_user_tls(address: Address) -> Address:
    """``address`` with the user's client certificate when its server requires TLS.

    Only for a TCP address given without certificates (see
    :mod:`motoko.study.certificates`): the server is asked, with one
    handshake, whether it requires TLS, so that a plain server keeps working
    for a user who has certificates.
    """
    if address.tls is not None or address.host is None or address.port is None:
        return address
    files = certificates.client_files()
    if files is None or probe(address.host.strip("[]"), address.port, None, None) is None:
        return address
    return dataclasses.replace(address, tls=files)


#: Environment variable: seconds every process of a workflow waits for a lost server.
SERVER_WAIT_ENV = "MOTOKO_SERVER_WAIT"


def server_wait(default: float) -> float:
    """Seconds to wait for a lost server before giving up (``MOTOKO_SERVER_WAIT`` or ``default``).

    Raises:
        ConfigError: for a value that is not a positive number.
    """
    text = os.environ.get(SERVER_WAIT_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ConfigError(
            f"{SERVER_WAIT_ENV}={text!r} is not a positive number of seconds",
            hint=f"set it to e.g. 120, or unset it (default {default:g} s)",
        )
    return value


# -- the per-workflow server --------------------------------------------------


def state_dir(workflow_dir: Path) -> Path:
    """Return (creating it, private) the workflow's ``.motoko`` directory."""
    path = Path(workflow_dir) / STATE_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path


def socket_path(workflow_dir: Path) -> Path:
    """Return the unix socket path of a workflow's own server.

    ``.motoko/zeo.sock`` when short enough; otherwise a path under a private
    directory in the temp dir, derived from the workflow directory so that
    every process finds the same one.
    """
    preferred = Path(workflow_dir).resolve() / STATE_DIR / "zeo.sock"
    if len(str(preferred)) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:16]
    private = Path(tempfile.gettempdir()) / f"motoko-{os.getuid()}"
    private.mkdir(mode=0o700, exist_ok=True)
    return private / f"{digest}.sock"


def default_address(workflow_dir: Path) -> Address:
    """Return the address of a workflow's own server (see :func:`configure_server`)."""
    settings = read_settings(workflow_dir)
    listen = settings.get("listen")
    if listen:
        host, _, port = str(listen).rpartition(":")
        client = settings.get("client_tls")
        tls = TLSFiles(**client) if client else from_env()
        return Address(host=host, port=int(port), tls=tls)
    return Address(path=str(socket_path(workflow_dir)))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only.

    Parsed, never matched by prefix: ``127.0.0.1.evil.com`` and
    ``localhost.evil.com`` are names anyone may point anywhere. ``localhost``
    itself (any case, with or without the final dot) counts as loopback.
    """
    name = host.strip().strip("[]")
    if name.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def read_settings(workflow_dir: Path) -> dict[str, Any]:
    """The server settings recorded by ``motoko server start --listen``."""
    try:
        data = json.loads((Path(workflow_dir) / STATE_DIR / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def configure_server(
    workflow_dir: Path,
    listen: str | None,
    tls: TLSFiles | None = None,
    client_tls: TLSFiles | None = None,
    insecure: bool = False,
) -> None:
    """Record how the workflow's server listens; applied at its next start.

    ``listen`` is ``HOST:PORT`` (None: the private unix socket). Any TCP
    listener requires TLS with client certificates unless ``insecure`` is
    given explicitly: on loopback too, since every local user can connect to
    it (a unix socket under ``.motoko/`` is the user's alone). Without
    certificate files the user's own are made (see
    :mod:`motoko.study.certificates`). Nothing is recorded when the address
    is refused.

    Raises:
        ConfigError: for a malformed address, missing certificate files, or a
            non-loopback address without TLS.
        ServerError: if the server runs with other settings (stop it first).
    """
    if listen is not None:
        match = _TCP.match(listen)
        if not match:
            raise ConfigError(f"cannot listen on {listen!r}", hint="write HOST:PORT, e.g. 127.0.0.1:8100")
        if tls is None and not insecure:
            # No files given: the user's own CA and certificates (made once).
            tls, auto_client = certificates.ensure(match.group("host"))
            client_tls = client_tls or auto_client
    for files in (tls, client_tls):
        if files is not None:
            files.check()
    settings = {
        "listen": listen,
        "tls": tls.to_dict() if tls else None,
        "client_tls": client_tls.to_dict() if client_tls else None,
    }
    current = read_settings(workflow_dir)
    if current != settings and server_status(workflow_dir).running:
        raise ServerError(
            f"the server already runs at {default_address(workflow_dir)} with other settings",
            hint="stop it first with `motoko server stop`",
        )
    record_settings(workflow_dir, settings)


def record_settings(workflow_dir: Path, settings: dict[str, Any]) -> None:
    """Write the server settings (see :func:`read_settings`); empty settings remove them."""
    path = state_dir(workflow_dir) / "server.json"
    if not settings:
        path.unlink(missing_ok=True)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(settings, indent=1))
    os.chmod(path, 0o600)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (a zombie child is reaped, then False)."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def reachable(address: Address, timeout: float = 0.5) -> bool:
    """True if something accepts connections at ``address``."""
    family = socket.AF_INET6 if address.host and ":" in address.host.strip("[]") else socket.AF_INET
    sock = socket.socket(socket.AF_UNIX if not address.is_tcp else family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address.zeo())
    except OSError:
        return False
    finally:
        sock.close()
    return True


@contextlib.contextmanager
def _lock(directory: Path) -> Iterator[None]:
    """Serialise server start/stop between processes of the same workflow."""
    with open(directory / "server.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _config(directory: Path, listen: str, ssl_block: str = "") -> str:
    return f"""<zeo>
  address {listen}
  pid-filename {directory / "zeo.pid"}
  invalidation-queue-size 10000
{ssl_block}</zeo>
<filestorage 1>
  path {directory / "data.fs"}
</filestorage>
<eventlog>
  level INFO
  <logfile>
    path {directory / "zeo.log"}
  </logfile>
</eventlog>
"""


@dataclass(frozen=True)
class ServerStatus:
    """What :func:`server_status` found."""

    address: Address
    running: bool
    pid: int | None
    data_file: Path
    size: int


def server_status(workflow_dir: Path) -> ServerStatus:
    """Describe a workflow's own server (running or not, pid, data size)."""
    directory = Path(workflow_dir) / STATE_DIR
    address = default_address(workflow_dir)
    pid = _read_pid(directory / "zeo.pid")
    running = pid is not None and pid_alive(pid) and is_our_server(pid, directory) and reachable(address)
    data = directory / "data.fs"
    return ServerStatus(address, running, pid if running else None, data, data.stat().st_size if data.exists() else 0)


def ensure_server(workflow_dir: Path, *, timeout: float = 15.0) -> Address:
    """Start the workflow's own server unless it is running; return its address.

    Idempotent: calling it while the server runs only returns the address.
    Safe to call from several processes at once (a file lock serialises them).

    Raises:
        ServerError: when the server does not come up within ``timeout``,
            quoting the end of its log.
    """
    workflow_dir = Path(workflow_dir).resolve()
    address = default_address(workflow_dir)
    if reachable(address):
        return address
    directory = state_dir(workflow_dir)
    with _lock(directory):
        if reachable(address):
            return address
        _clean_stale(directory, address)
        settings = read_settings(workflow_dir)
        ssl_block = server_block(TLSFiles(**settings["tls"])) if settings.get("tls") else ""
        server = _spawn(directory, address, ssl_block)
        _wait_up(directory, address, timeout, server)
    return address


def is_our_server(pid: int, directory: Path) -> bool:
    """Whether ``pid`` is the ZEO server started with this directory's ``zeo.conf``.

    A pid file outlives its server and the kernel reuses pids, so a pid alone
    proves nothing: only a process whose command line is ``ZEO.runzeo -C
    <this directory>/zeo.conf`` is ever signalled. Without ``/proc`` nothing
    can be proven and nothing is signalled.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    conf = os.fsencode(Path(directory).resolve() / "zeo.conf")
    return b"ZEO.runzeo" in argv and conf in argv


def _clean_stale(directory: Path, address: Address) -> None:
    pid_file = directory / "zeo.pid"
    pid = _read_pid(pid_file)
    if pid is not None and pid_alive(pid) and not is_our_server(pid, directory):
        log.info("pid file names process %s, which is not this workflow's server: left alone", pid)
    elif pid is not None and pid_alive(pid):
        # A live server that does not answer: it is starting or wedged. Stop it
        # rather than start a second one on the same data file.
        log.warning("server pid %s does not answer at %s; stopping it", pid, address)
        _terminate(pid, 5.0)
    stale_files = [pid_file, directory / "data.fs.lock"]
    if address.path:
        stale_files.append(Path(address.path))
    for stale in stale_files:
        if stale.name and stale.exists():
            log.info("removing stale %s", stale)
            with contextlib.suppress(OSError):
                stale.unlink()


def _spawn(directory: Path, address: Address, ssl_block: str = "") -> subprocess.Popen[bytes]:
    listen = address.path if address.path else f"{address.host}:{address.port}"
    conf = directory / "zeo.conf"
    conf.write_text(_config(directory, str(listen), ssl_block))
    os.chmod(conf, 0o600)
    env = dict(os.environ)
    # The server resolves run conflicts with motoko's own classes.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    old_umask = os.umask(0o077)  # data.fs, its index and the socket: owner only
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(directory / "zeo.stderr", "ab"),  # noqa: SIM115 (child owns it)
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.umask(old_umask)


def _wait_up(directory: Path, address: Address, timeout: float, server: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if reachable(address):
            return
        if server is not None and server.poll() is not None:
            break  # it exited (e.g. the address is taken): waiting longer cannot help
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    tail = ""
    for name in ("zeo.stderr", "zeo.log"):
        with contextlib.suppress(OSError):
            lines = (directory / name).read_text(errors="replace").strip().splitlines()
            if lines:
                tail = lines[-1]
    code = server.poll() if server is not None else None
    why = f"exited with code {code}" if code is not None else f"did not answer within {timeout:g} s"
    raise ServerError(
        f"the database server did not start at {address}: it {why}",
        hint=f"see {directory / 'zeo.log'}" + (f"; last line: {tail}" if tail else ""),
    )


def _terminate(pid: int, grace: float) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def stop_server(workflow_dir: Path, *, grace: float = 10.0) -> bool:
    """Stop a workflow's own server; return False if it was not running.

    Idempotent: stopping a stopped server does nothing and returns False.
    """
    directory = Path(workflow_dir).resolve() / STATE_DIR
    if not directory.exists():
        return False
    with _lock(directory):
        pid = _read_pid(directory / "zeo.pid")
        if pid is None or not pid_alive(pid) or not is_our_server(pid, directory):
            _clean_stale(directory, default_address(workflow_dir))
            return False
        _terminate(pid, grace)
        _clean_stale(directory, default_address(workflow_dir))
        return True

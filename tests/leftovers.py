"""What a test session must not leave running: its ZEO servers, and SLURM if it started it.

Not a test module: ``tests/conftest.py``'s session fixture calls these when the
session ends, normally or after Ctrl-C (pytest tears session fixtures down
in both cases). Each test stops what it starts; this is the net under that.

* ZEO servers: every server process whose configuration lies under this
  session's temporary directory (``.../.motoko/zeo.conf``) is stopped through
  :func:`motoko.study.server.stop_server`, which signals only the pid its own
  pid file names. Servers of other sessions and of real workflows are not
  touched.
* SLURM: stopped with ``tests/engines/stop-slurm.sh`` only when it was not
  running as the session began (a cluster someone else started is theirs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(os.environ.get("MOTOKO_SLURM_DIR", "/tmp/motoko-slurm"))
#: Module names of the server processes motoko starts (and the one it used to).
SERVER_MODULES = (b"motoko.study.zeo_main", b"ZEO.runzeo")


def _pid_in(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def slurm_running() -> bool:
    """True while the private SLURM's controller (start-slurm.sh's) runs."""
    pid = _pid_in(SLURM_DIR / "run" / "slurmctld.pid")
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_slurm() -> None:
    """Stop the private SLURM (idempotent; only the daemons of its pid files)."""
    subprocess.run(["bash", str(REPO / "tests" / "engines" / "stop-slurm.sh")], capture_output=True, timeout=120, check=False)


def server_directories(under: Path) -> list[Path]:
    """Workflow directories under ``under`` whose ZEO server process runs now."""
    found = []
    root = str(under.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not any(module in argv for module in SERVER_MODULES) or b"-C" not in argv:
            continue
        index = argv.index(b"-C") + 1
        conf = Path(os.fsdecode(argv[index])) if index < len(argv) else None
        if conf is not None and str(conf).startswith(root + os.sep) and conf.parent.name == ".motoko":
            found.append(conf.parent.parent)
    return sorted(set(found))


def stop_servers(under: Path) -> list[Path]:
    """Stop every ZEO server of a workflow directory under ``under``; return their directories."""
    from motoko.study.server import stop_server

    stopped = []
    for directory in server_directories(under):
        with contextlib.suppress(Exception):
            if stop_server(directory, grace=5):
                stopped.append(directory)
    return stopped

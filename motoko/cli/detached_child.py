"""Entry point of a detached workflow process (``motoko run --detach``).

It lives apart from :mod:`motoko.cli.detach` because it runs the whole CLI
(:func:`motoko.cli.main.main`), which itself imports the ``run`` command that
starts detached processes: keeping the child's entry in its own module keeps
the imports pointing one way.

Usage (by :func:`motoko.cli.detach.start` only)::

    python -m motoko.cli.detached_child RECORD.json run ARGS...
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from motoko.cli.main import main


def run_detached(argv: list[str]) -> int:
    """Run ``motoko ARGV[1:]`` and record its exit status in the record ``ARGV[0]``.

    Returns:
        The exit status the CLI ended with (0, 1, 2 or 130); an exception that
        escapes the CLI is recorded as 1 and re-raised, so the log shows it.
    """
    record_path = Path(argv[0])
    code = 0
    try:
        main(argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        code = 1
        raise
    finally:
        # The record is the only way `motoko run status` learns how it ended.
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(record_path.read_text())
            record["exit_code"] = code
            record_path.write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(run_detached(sys.argv[1:]))

"""A RunList saved to a file: ``rl.save(path)`` and ``RunList.open(path)``.

The file is small JSON naming the workflow's motoko.yaml, the run name, the
study and the run ids, so any process that can reach the workflow's database
can reattach later. It carries a kind marker and a format version, checked on
open, so a wrong file is refused with a message instead of half-read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from motoko.errors import HandleError

#: Marks a JSON file written by ``RunList.save``, with its format version.
SAVED_KIND = "motoko.RunList"
SAVED_VERSION = 1


def write_saved(path: str | Path, *, workflow: str, run_name: str | None, study: str, ids: Sequence[int]) -> Path:
    """Write a saved RunList, replacing ``path`` atomically; return the path."""
    target = Path(path)
    data = {
        "kind": SAVED_KIND,
        "version": SAVED_VERSION,
        "workflow": workflow,
        "run_name": run_name,
        "study": study,
        "ids": list(ids),
    }
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, target)
    return target


def read_saved(path: Path) -> dict[str, Any]:
    """The validated content of a file written by :func:`write_saved`.

    Raises:
        HandleError: the file is missing, unreadable, not JSON, not a saved
            RunList, of another format version, or missing a key.
    """
    hint = "give a file written by rl.save(path)"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HandleError(f"no saved RunList at {path}", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HandleError(f"cannot read {path}: {exc}", hint=hint) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", None)
        raise HandleError(
            "not a saved RunList: the file is not JSON", where=f"{path}:{line}" if line else str(path), hint=hint
        ) from None
    if not isinstance(data, dict) or data.get("kind") != SAVED_KIND:
        raise HandleError(f"not a saved RunList (no \"kind\": {SAVED_KIND!r})", where=str(path), hint=hint)
    if data.get("version") != SAVED_VERSION:
        raise HandleError(
            f"saved RunList format version {data.get('version')!r}; this motoko reads version {SAVED_VERSION}",
            where=str(path),
            hint="open it with the motoko release that saved it",
        )
    ids = data.get("ids")
    valid = (
        isinstance(data.get("workflow"), str)
        and isinstance(data.get("study"), str)
        and isinstance(ids, list)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
        and (data.get("run_name") is None or isinstance(data.get("run_name"), str))
    )
    if not valid:
        raise HandleError(
            "a saved RunList needs \"workflow\" and \"study\" (text), \"ids\" (integers) and \"run_name\"",
            where=str(path),
            hint=hint,
        )
    return data

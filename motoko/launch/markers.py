"""Template markers and the values placed at them: what every file kind shares.

A ``__BLACKDYNAMITE__name__`` marker in a study file is replaced by a safe form
of the run's value ``name`` (see :func:`motoko.launch.staging.render`). This
module holds what the shell, Python and plain renderings have in common: the
marker syntax, the one text form of a value, the :class:`Spot` a lexer reports
for each marker, and :class:`UnsafeValueError`, raised when a value cannot be
placed without changing the file's meaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from motoko.errors import (
    UnsafeValueError,  # noqa: F401 (defined there, importable from here)
)

__all__ = [
    "MARKER_PREFIX",
    "MARKER_RE",
    "Refuse",
    "Spot",
    "UnsafeValueError",
    "as_text",
    "is_plain",
    "line_of",
]

MARKER_PREFIX = "__BLACKDYNAMITE__"

MARKER_RE = re.compile(r"__BLACKDYNAMITE__([A-Za-z_][A-Za-z0-9_]*?)__")
_PLAIN_RE = re.compile(r"[A-Za-z0-9_.+\-:/@%, =]*")


def line_of(text: str, pos: int) -> int:
    """Return the 1-based line number of offset ``pos`` in ``text``."""
    return text.count("\n", 0, pos) + 1


# --------------------------------------------------------------------------- values


def as_text(value: Any) -> str:
    """Return the one text form of a value used by shell and plain substitution.

    bool is lowercase like JSON (``true``), None is empty, lists and dicts are
    JSON: the same forms ``MOTOKO_PARAM_*`` variables carry, so a script sees
    one spelling whichever way it reads a value.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, str):
        return str.__str__(value)
    return str(value)


def is_plain(text: str) -> bool:
    """Tell whether ``text`` means the same in any string, comment or config file."""
    return _PLAIN_RE.fullmatch(text) is not None


# --------------------------------------------------------------------------- spots


@dataclass(frozen=True)
class Spot:
    """A marker found in a file and the context it sits in.

    ``context`` is a shell frame kind, a python place ("name", "string",
    "comment"), "plain" for other files, or "refuse" with ``why`` set.
    ``unescaped`` lists the characters bash unescapes (after a backslash) in
    the backtick substitution around a shell marker, if any.
    """

    start: int
    end: int
    name: str
    context: str
    unescaped: str = ""
    why: str = ""
    in_heredoc: bool = False


Refuse = Callable[[str, str], UnsafeValueError]
"""Builds the UnsafeValueError for one marker from ``(why, hint)``; renderers raise it."""

"""Rendering markers in shell files: each value quoted for the context it sits in.

:class:`~motoko.launch.shell_lexer.ShellLexer` finds each marker's context;
:func:`shell_replacement` quotes the value so that bash reads back exactly
the value, as one literal word, and :func:`check_heredoc` refuses a value
that would end a here-document early.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from motoko.launch.markers import Refuse, Spot, UnsafeValueError, as_text, line_of
from motoko.launch.shell_lexer import Heredoc

__all__ = ["check_heredoc", "shell_replacement"]

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _sq_word(text: str) -> str:
    """Quote ``text`` as one single-quoted shell word: bash reads back exactly ``text``.

    Always quoted (unlike ``shlex.quote``), so that a value can never become
    an assignment (``A=b``), a reserved word (``if``) or an alias.
    """
    return "'" + text.replace("'", "'\\''") + "'"


def _escape(text: str, chars: str) -> str:
    """Backslash-escape each of ``chars`` in ``text``."""
    return "".join("\\" + c if c in chars else c for c in text)


def shell_replacement(spot: Spot, value: Any, refuse: Refuse, script: str) -> str:
    """Return the replacement of a marker in a shell file, for its lexical context."""
    text = as_text(value)
    if "\0" in text:
        raise refuse("contains a NUL byte, which a shell cannot hold", "remove the NUL byte")
    context = spot.context
    if context in ("code", "cmdsub", "backtick"):
        out = _sq_word(text)
    elif context == "dq":
        out = _escape(text, '\\$`"')
    elif context == "heredoc":
        out = _escape(text, "\\$`")
    elif context == "sq":
        out = text.replace("'", "'\\''")
    elif context == "ansi":
        out = _escape(text, "\\'")
    elif context == "heredoc_lit":
        out = text  # literal body; check_heredoc refuses a line equal to the delimiter
    elif context == "comment":
        out = json.dumps(text).replace("`", "\\u0060")  # no newline can end the comment
    elif context in ("arith", "subscript"):
        out = _shell_integer(text, refuse)
    else:
        raise refuse(
            f"cannot be placed safely inside {_CONTEXT_NAMES.get(context, context)}",
            "assign the marker to a variable first (v=__BLACKDYNAMITE__"
            + spot.name
            + "__) and use the variable there",
        )
    # Bash unescapes \\ \$ \` (and \" within double quotes) in `...` before
    # parsing it; escaping them also hides a " from brace expansion of the
    # enclosing "...`...`" word, which misreads it.
    out = _escape(out, spot.unescaped)
    if spot.in_heredoc and _joins_lines(script, spot, out):
        raise refuse(
            "ends a line with a backslash, which bash removes inside a here-document",
            "use a quoted here-document delimiter (<<'EOF'), or read $MOTOKO_PARAM_" + spot.name,
        )
    return out


_CONTEXT_NAMES = {"param": "${...}"}
_CONTINUATION_RE = re.compile(r"(?<!\\)(?:\\\\)*\\\n")


def _joins_lines(script: str, spot: Spot, out: str) -> bool:
    """Tell whether ``out`` at ``spot`` would make a backslash-newline line continuation.

    Bash joins such lines of an unquoted here-document body before parsing
    anything in it, even inside quotes of a ``$(...)``; the backslashes right
    around the marker count too. A marker right before a continuation is
    refused as well: the value's own trailing backslashes would change it.
    """
    before = spot.start
    while before > 0 and script[before - 1] == "\\":
        before -= 1
    after = spot.end
    while after < len(script) and script[after] == "\\":
        after += 1
    prefix, suffix = script[before : spot.start], script[spot.end : after + 1]
    # A backslash run right after the marker changes parity with the value's end.
    return any(
        _CONTINUATION_RE.search(prefix + middle + suffix) is not None
        for middle in (out, script[spot.start : spot.end])
    )


def _shell_integer(text: str, refuse: Refuse) -> str:
    """Return an integer value for bash arithmetic, which would evaluate anything else."""
    if _INT_RE.fullmatch(text) is None:
        raise refuse(
            "is not an integer and bash evaluates $((...)), ((...)) and array subscripts "
            "as arithmetic (names in them are dereferenced and evaluated)",
            "only integers are accepted there; compare strings outside arithmetic",
        )
    return f"({text})" if text.startswith("-") else text


def check_heredoc(
    heredoc: Heredoc,
    text: str,
    replacements: Sequence[tuple[int, int, str]],
    spots: Sequence[Spot],
    values: Mapping[str, Any],
    source: str,
) -> None:
    """Refuse a value that would end a here-document early, whatever its quoting.

    Renders the body alone and checks each of its lines against the
    delimiter: this is how bash finds the end, before it parses quotes or
    ``$(...)`` in the body.
    """
    pieces: list[str] = []
    owners: list[tuple[int, int, int]] = []  # rendered span of each replacement, its index
    last, length = heredoc.start, 0
    for index, (start, end, new) in enumerate(replacements):
        if not heredoc.start <= start < heredoc.end:
            continue
        pieces.append(text[last:start])
        length += start - last
        owners.append((length, length + len(new), index))
        pieces.append(new)
        length += len(new)
        last = end
    if not owners:
        return
    pieces.append(text[last : heredoc.end])
    line_start = 0
    for line in "".join(pieces).split("\n")[:-1]:
        line_end = line_start + len(line)
        if heredoc.ended_by(line):
            index = next(i for a, b, i in owners if a <= line_end and b >= line_start)
            spot = spots[index]
            raise UnsafeValueError(
                spot.name,
                values[spot.name],
                source,
                line_of(text, spot.start),
                f"would end the here-document <<{heredoc.delim} early: a line would "
                "equal its delimiter",
                "use another delimiter, or read the value from $MOTOKO_PARAM_" + spot.name,
            )
        line_start = line_end + 1
